"""Image sources: records (id, label, path) and a loader, for the bundled samples and image folders."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import DatasetError
from .images import DECODE_MODES, check_choice, open_image, to_rgb
from .walk import FolderWalker, Listing

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".gif")
NO_LABEL = -1


def text_id(name: str) -> str:
    """A file name as valid Unicode text, the form image ids and class names take in every output: bytes that
    are not UTF-8 (which Python keeps as surrogate escapes) become `\\xNN`; the file is still read by its path."""
    try:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that is no escaped byte
        return name.encode("utf-8", "backslashreplace").decode("utf-8")


@dataclass(frozen=True)
class ImageRecord:
    """One image of a source: a stable id, its label index (-1 if none) and where it lives."""

    image_id: str
    label: int = NO_LABEL
    path: str | None = None


def content_stamp(path: str, memo: dict[str, str]) -> str:
    """The identity of a file's image for cache entries: the sha256 of its bytes, read once per path per
    source (`memo`), so files that share a name, size and modification time (cp -p, rsync -a) never share an entry.

    An entry that cannot be read (a link loop, a broken link, no permission) is stamped from its lstat instead."""
    if path not in memo:
        try:
            with open(path, "rb") as fh:
                memo[path] = "sha256:" + hashlib.file_digest(fh, "sha256").hexdigest()
        except OSError:
            try:
                st = os.lstat(path)
                memo[path] = f"unreadable:{st.st_size}:{st.st_mtime_ns}"
            except OSError:
                memo[path] = "missing"
    return memo[path]


class ImageSource:
    """A list of image records plus a loader; subclasses fill `records` and `class_names`."""

    records: list[ImageRecord]
    class_names: list[str] | None = None
    # True when labels index ImageNet-1k classes rather than the source's own class_names.
    imagenet_labels: bool = False

    def load(self, record: ImageRecord) -> Image.Image:
        """Return the record's image as an RGB PIL image."""
        raise NotImplementedError

    def load_reduced(self, record: ImageRecord, min_side: int | None) -> Image.Image:
        """The image, possibly decoded at a reduced size whose shorter side stays >= `min_side` (huge files)."""
        return self.load(record)

    def stamp(self, record: ImageRecord) -> str:
        """A cheap token that changes when the record's file does (resume compares it); "" when unknown."""
        return ""

    def content_id(self, record: ImageRecord) -> str:
        """What the record's image holds, for cache entries (default: the stamp, for sources whose stamp already
        names the content); files: the sha256 of their bytes."""
        return self.stamp(record)

    def __len__(self) -> int:
        return len(self.records)


# name -> (skimage.data loader, ImageNet class index or None). Labels only where one clearly applies.
SAMPLE_IMAGES: dict[str, tuple[str, int | None]] = {
    "astronaut": ("astronaut", None),
    "camera": ("camera", None),
    "chelsea": ("chelsea", 281),  # tabby cat
    "clock": ("clock", 409),  # analog clock
    "coffee": ("coffee", 967),  # espresso
    "hubble": ("hubble_deep_field", None),
    "motorcycle": ("stereo_motorcycle", None),
    "rocket": ("rocket", None),
}


class SampleImages(ImageSource):
    """Real photos bundled with scikit-image, readable offline."""

    imagenet_labels = True

    def __init__(self, names: Sequence[str] | None = None) -> None:
        names = list(names) if names else list(SAMPLE_IMAGES)
        unknown = [n for n in names if n not in SAMPLE_IMAGES]
        if unknown:
            raise DatasetError(
                f"Unknown sample image(s) {unknown}. Use names from: {', '.join(SAMPLE_IMAGES)}."
            )
        self.records = [
            ImageRecord(n, NO_LABEL if SAMPLE_IMAGES[n][1] is None else SAMPLE_IMAGES[n][1]) for n in names
        ]

    def load(self, record: ImageRecord) -> Image.Image:
        import skimage.data

        array = getattr(skimage.data, SAMPLE_IMAGES[record.image_id][0])()
        if isinstance(array, tuple):  # stereo_motorcycle returns (left, right, disparity)
            array = array[0]
        return to_rgb(Image.fromarray(np.asarray(array)))

    def stamp(self, record: ImageRecord) -> str:
        import skimage

        return f"skimage {skimage.__version__}"  # the bundled files change only with the package


class ImageFolder(ImageSource):
    """A folder of images: class-per-subfolder (labels from folder names) or flat (no labels).

    Images at the top level make it flat (subfolders are then ignored, with a log line); otherwise each subfolder
    with images is a class. Symbolic links are followed once; a loop, a link leaving the root, a broken link or
    a file reached twice becomes an unusable record (listed in skipped.csv with the reason, see data.walk).
    """

    def __init__(self, root: str | os.PathLike, extensions: Sequence[str] = IMAGE_EXTENSIONS,
                 decode: str = "oriented") -> None:
        self.decode = check_choice("dataset.decode", decode, DECODE_MODES)
        if root is None or str(root) in ("", "???"):
            raise DatasetError("dataset=folder needs a folder. Set dataset.root=PATH.")
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise DatasetError(f"Dataset root '{self.root}' does not exist. Set dataset.root to an image folder.")
        exts = tuple(e.lower() for e in extensions)
        walker = FolderWalker(self.root, exts)
        top = Listing()
        subdirs = []
        for path in sorted(self.root.iterdir()):
            if path.name.startswith("."):
                continue
            if _is_dir(path):
                reason = walker.enter_dir(path)
                if reason:
                    top.unusable[path] = reason
                else:
                    subdirs.append(path)
            else:
                walker.add_file(path, top)
        listings = {d: walker.walk(d) for d in subdirs}
        class_dirs = [d for d in subdirs if listings[d].images]
        if class_dirs and not top.images:
            self.class_names = [text_id(d.name) for d in class_dirs]
            self.records = [ImageRecord(text_id(p.relative_to(self.root).as_posix()), label, str(p))
                            for label, d in enumerate(class_dirs) for p in listings[d].images]
            for listing in listings.values():
                top.unusable.update(listing.unusable)
        else:
            if class_dirs:
                log.warning("%s has images at its top level and in subfolders (%s): it is read as a flat folder, "
                            "the subfolders are ignored. To use the subfolders as classes, move the top-level "
                            "images into them.", self.root, ", ".join(d.name for d in class_dirs[:5]))
            self.class_names = None
            self.records = [ImageRecord(text_id(p.name), NO_LABEL, str(p)) for p in top.images]
        # entries that cannot be used are records too, so they reach skipped.csv with their reason
        unusable = [(text_id(p.relative_to(self.root).as_posix()), p, reason)
                    for p, reason in sorted(top.unusable.items())]
        self.unusable = {image_id: reason for image_id, _, reason in unusable}
        for image_id, _, reason in unusable:
            log.warning("%s/%s: %s; listed in skipped.csv.", self.root, image_id, reason)
        self.records += [ImageRecord(image_id, NO_LABEL, str(path)) for image_id, path, _ in unusable]
        if not any(r.image_id not in self.unusable for r in self.records):
            raise DatasetError(
                f"No images ({', '.join(exts)}) found under '{self.root}'. Point dataset.root at a folder of images."
            )

    def load(self, record: ImageRecord) -> Image.Image:
        return self.load_reduced(record, None)

    def load_reduced(self, record: ImageRecord, min_side: int | None) -> Image.Image:
        unusable = getattr(self, "unusable", {})
        if record.image_id in unusable:
            raise ValueError(unusable[record.image_id])
        return open_image(record.path, min_side, decode=self.decode)

    def stamp(self, record: ImageRecord) -> str:
        try:
            st = os.stat(record.path)
        except OSError:  # a link loop or a broken link (an unusable record)
            st = os.lstat(record.path)
        return f"{st.st_size}:{st.st_mtime_ns}"

    def content_id(self, record: ImageRecord) -> str:
        return content_stamp(str(record.path), self.__dict__.setdefault("_digests", {}))


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:  # a link loop
        return False
