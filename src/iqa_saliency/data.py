"""Image sources (bundled samples, folders) and the dataset that yields clean + corrupted pairs."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps
from torch.utils.data import Dataset
from torchvision.transforms import functional as TF

from .clean_cache import stack_clean_entries
from .corruption import MIN_SIDE, apply_corruption, image_seed
from .errors import ConfigError, DatasetError, reraise_interrupt

log = logging.getLogger(__name__)

# Above LARGE_PIXELS a JPEG is decoded at a reduced scale (draft) before resizing, so memory stays bounded;
# a non-JPEG must be decoded in full, so above MAX_PIXELS it is skipped rather than risk exhausting memory.
LARGE_PIXELS = 40_000_000
MAX_PIXELS = 200_000_000
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

    def __init__(self, root: str | os.PathLike, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> None:
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
        return open_image(record.path)

    def load_reduced(self, record: ImageRecord, min_side: int | None) -> Image.Image:
        return open_image(record.path, min_side)

    def stamp(self, record: ImageRecord) -> str:
        st = os.stat(record.path)
        return f"{st.st_size}:{st.st_mtime_ns}"


def resolve_num_workers(value: int | str | None, processes: int = 1) -> int:
    """DataLoader workers: a count as given, or "auto": this machine's usable cores shared by its `processes`
    (DDP ranks), at most 16 each."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return max(1, min(16, cores // max(1, processes)))
    try:
        workers = int(value or 0)
    except (TypeError, ValueError):
        workers = -1
    if workers < 0 or (isinstance(value, float) and value != workers):
        raise ConfigError(f"dataset.num_workers={value!r} is not valid. Use a number of workers (0 or more) or auto.")
    return workers


def open_image(path: str | os.PathLike, min_side: int | None = None) -> Image.Image:
    """Decode an image file as RGB, EXIF orientation applied; raise ValueError/OSError if it is unusable.

    A truncated file is an error (never a partly grey image). A file over LARGE_PIXELS is decoded at
    the smallest JPEG draft scale whose shorter side stays >= `min_side`; over MAX_PIXELS a non-JPEG is refused.
    """
    if ImageFile.LOAD_TRUNCATED_IMAGES:  # some library switched it on process-wide; we do not accept that
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is on; truncated files would load silently")
    if os.path.getsize(path) == 0:
        raise ValueError("empty file (0 bytes)")
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # the size is checked below, against our own limits
    try:
        im = Image.open(path)
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    with im:
        w, h = im.size
        if w * h > LARGE_PIXELS:
            if im.format == "JPEG" and min_side:
                scale = max(1, min(w, h) // min_side)
                im.draft(None, (max(1, w // scale), max(1, h // scale)))
                log.warning("%s is %dx%d; decoded at %dx%d (JPEG draft) before resizing", path, w, h, *im.size)
            elif w * h > MAX_PIXELS:
                raise ValueError(f"{w}x{h} image is over the {MAX_PIXELS:,} pixel limit for a non-JPEG file")
        im.load()
        return to_rgb(ImageOps.exif_transpose(im))


def _walk_images(folder: Path, exts: tuple[str, ...]) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in exts)


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode (L, LA, P, RGBA, I;16, CMYK, ...) to 8-bit RGB."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        # 16-bit modes span 0-65535 whatever the content; 32-bit I/F have no fixed range (values > 255 -> 16-bit)
        peak = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        array = np.clip(array, 0, peak)
        return Image.fromarray(np.round(array / peak * 255).astype(np.uint8)).convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def prepare_image(image: Image.Image, resize: int | None, crop: int | None) -> Image.Image:
    """Resize the shorter side to `resize`, then centre-crop `crop` x `crop`, as ImageNet-C does."""
    if resize is not None and min(image.size) != resize:
        image = TF.resize(image, resize, interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    if crop is not None:
        if min(image.size) < crop:
            # Padding would add black borders the models would see; upscaling keeps the content.
            image = TF.resize(image, crop, interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
        if image.size != (crop, crop):
            image = TF.center_crop(image, [crop, crop])
    return image


class CorruptedPairs(Dataset):
    """Yields each image clean and corrupted (uint8 CHW tensors), or the reason it is unusable."""

    def __init__(
        self,
        source: ImageSource,
        corruption: str,
        severity: int,
        seed: int,
        resize: int | None = 256,
        crop: int | None = 224,
        labels: Sequence[int] | None = None,
        corrupt_fn: Callable[[np.ndarray, str, int, int], np.ndarray] = apply_corruption,
        cached_clean: Callable[[str, str], dict[str, np.ndarray] | None] | None = None,
    ) -> None:
        self.source = source
        self.corruption = corruption
        self.severity = severity
        self.seed = seed
        self.resize = resize
        self.crop = crop
        self.labels = list(labels) if labels is not None else [r.label for r in source.records]
        self.corrupt_fn = corrupt_fn
        # (image id, source stamp) -> the clean pass's cached outputs and prepared image, or None; read here, in
        # the workers, so a cached image is neither decoded nor resized again
        self.cached_clean = cached_clean

    def __len__(self) -> int:
        return len(self.source.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.source.records[index]
        item: dict[str, Any] = {"index": index, "image_id": record.image_id, "label": self.labels[index]}
        try:
            cached = None
            if self.cached_clean is not None:
                item["stamp"] = self.source.stamp(record)
                cached = self.cached_clean(record.image_id, item["stamp"])
            clean = cached.pop("image") if cached is not None else None
            if clean is None or not self._is_prepared(clean):
                clean, cached = self._prepare(record), None
            seed = image_seed(self.seed, record.image_id, self.corruption, self.severity)
            corrupted = self.corrupt_fn(clean, self.corruption, self.severity, seed)
        except Exception as exc:  # an unusable file must not stop the run: it is reported and skipped
            reraise_interrupt(exc)
            item["error"] = f"{type(exc).__name__}: {exc}".strip()
            return item
        item["clean"] = torch.from_numpy(np.ascontiguousarray(clean)).permute(2, 0, 1)
        item["corrupted"] = torch.from_numpy(np.ascontiguousarray(corrupted)).permute(2, 0, 1)
        if self.cached_clean is not None:
            item["cached_clean"] = cached
        return item

    def _prepare(self, record: ImageRecord) -> np.ndarray:
        """Decode, resize and crop one image into a uint8 (H, W, 3) array."""
        image = prepare_image(self.source.load_reduced(record, self.resize), self.resize, self.crop)
        if min(image.size) < MIN_SIDE:
            # Neither corruptions nor PaQ-2-PiQ (stride 32) work below this; upscaling is the user's call.
            raise ValueError(f"image is {image.size[0]}x{image.size[1]} after resize/crop, below the {MIN_SIDE}"
                             " px minimum (set dataset.resize or dataset.crop to upscale small images)")
        return np.array(image, dtype=np.uint8)

    def _is_prepared(self, image: np.ndarray) -> bool:
        """Whether a cached image has the shape this dataset's preparation gives (a damaged entry does not)."""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < MIN_SIDE:
            return False
        return self.crop is None or image.shape[:2] == (self.crop, self.crop)


IMAGE_FIELDS = ("clean", "corrupted", "cached_clean")


def collate_pairs(items: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Stack the usable items per image size into groups and set unusable ones aside.

    Stacking happens in the DataLoader worker, so a batch crosses to the main process as a few large tensors
    rather than two or more per image (each shared tensor costs the receiver a socket round trip and a mapping).
    A group: {"items": per-image metadata, "clean"/"corrupted": uint8 (B, 3, H, W), and, when the dataset
    looks up the clean-pass cache, "cached_clean" (see stack_clean_entries)}.
    """
    by_size: dict[tuple[int, ...], list[dict[str, Any]]] = {}
    for it in items:
        if "error" not in it:
            by_size.setdefault(tuple(it["clean"].shape), []).append(it)
    groups = []
    for members in by_size.values():
        group: dict[str, Any] = {
            "items": [{k: v for k, v in it.items() if k not in IMAGE_FIELDS} for it in members],
            "clean": torch.stack([it["clean"] for it in members]),
            "corrupted": torch.stack([it["corrupted"] for it in members]),
        }
        if "cached_clean" in members[0]:
            group["cached_clean"] = stack_clean_entries([it["cached_clean"] for it in members])
        groups.append(group)
    return {"groups": groups, "skipped": [it for it in items if "error" in it]}
