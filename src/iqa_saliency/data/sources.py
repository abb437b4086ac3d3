"""Image sources: records (id, label, path) and a loader, for the bundled samples and image folders."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import DatasetError
from .images import DECODE_MODES, check_choice, open_image, to_rgb

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".gif")
NO_LABEL = -1


@dataclass(frozen=True)
class ImageRecord:
    """One image of a source: a stable id, its label index (-1 if none) and where it lives."""

    image_id: str
    label: int = NO_LABEL
    path: str | None = None


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
        """A cheap token that changes when the record's image does (caches check it); "" when unknown."""
        return ""

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
    """A folder of images: class-per-subfolder (labels from folder names) or flat (no labels)."""

    def __init__(self, root: str | os.PathLike, extensions: Sequence[str] = IMAGE_EXTENSIONS,
                 decode: str = "oriented") -> None:
        self.decode = check_choice("dataset.decode", decode, DECODE_MODES)
        if root is None or str(root) in ("", "???"):
            raise DatasetError("dataset=folder needs a folder. Set dataset.root=PATH.")
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise DatasetError(f"Dataset root '{self.root}' does not exist. Set dataset.root to an image folder.")
        exts = tuple(e.lower() for e in extensions)
        subdirs = sorted(d for d in self.root.iterdir() if d.is_dir() and not d.name.startswith("."))
        class_dirs = [d for d in subdirs if any(_walk_images(d, exts))]
        if class_dirs:
            self.class_names = [d.name for d in class_dirs]
            self.records = [
                ImageRecord(p.relative_to(self.root).as_posix(), label, str(p))
                for label, d in enumerate(class_dirs)
                for p in _walk_images(d, exts)
            ]
        else:
            self.class_names = None
            self.records = [
                ImageRecord(p.name, NO_LABEL, str(p))
                for p in sorted(self.root.iterdir())
                if p.is_file() and p.suffix.lower() in exts
            ]
        if not self.records:
            raise DatasetError(
                f"No images ({', '.join(exts)}) found under '{self.root}'. Point dataset.root at a folder of images."
            )

    def load(self, record: ImageRecord) -> Image.Image:
        return open_image(record.path, decode=self.decode)

    def load_reduced(self, record: ImageRecord, min_side: int | None) -> Image.Image:
        return open_image(record.path, min_side, decode=self.decode)

    def stamp(self, record: ImageRecord) -> str:
        st = os.stat(record.path)
        return f"{st.st_size}:{st.st_mtime_ns}"


def _walk_images(folder: Path, exts: tuple[str, ...]) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in exts)
