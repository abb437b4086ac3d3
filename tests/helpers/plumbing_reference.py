"""The data path restated from its documentation, in PIL and numpy, for the plumbing tests: how a class folder is
listed, how an image is resized, cropped (or padded) and corrupted, and what the models of
helpers/plumbing_models.py compute on it. Nothing here imports ``iqa_saliency``.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import imagecorruptions
import numpy as np
from PIL import Image

from helpers import reference as ref
from helpers.plumbing_models import GAIN, GRID, LOCAL_SCALE, QUALITY_BASE, QUALITY_SCALE, RULES

EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".gif"}
MIN_SIDE = 32  # corruptions and PaQ-2-PiQ need 32 px (docs/durability.md: "Unusable files are skipped")


@dataclass(frozen=True)
class Listed:
    image_id: str  # <class folder>/<file>, as a posix path
    folder_label: int  # index of its class folder in sorted order
    path: Path


def list_class_folders(root: Path) -> tuple[list[str], list[Listed]]:
    """A class-per-subfolder dataset: folders sorted by name, each one's image files sorted by name."""
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    listed = [Listed(f"{c}/{f.name}", i, f) for i, c in enumerate(classes)
              for f in sorted((root / c).iterdir(), key=lambda p: p.name) if f.suffix.lower() in EXTENSIONS]
    return classes, listed


def canonical(name: str) -> str:
    """Class names match whatever their case and their separators ('_', '-', ' ')."""
    return name.lower().replace("_", " ").replace("-", " ").strip()


def resize_shorter(image: Image.Image, size: int) -> Image.Image:
    """torchvision's resize of a PIL image to a shorter side of `size`: the longer side is truncated
    (int(size * long / short)), PIL's antialiased bilinear filter; an image already that size is left alone."""
    w, h = image.size
    if min(w, h) == size:
        return image
    if w <= h:
        new = (size, int(size * h / w))
    else:
        new = (int(size * w / h), size)
    return image.resize(new, Image.BILINEAR)


def centre_crop(array: np.ndarray, crop: int) -> np.ndarray:
    """torchvision's CenterCrop of an HxWx3 array: zero padding first where a side is short ((c - s) // 2 before,
    the rest after), then the window at round((s - c) / 2)."""
    h, w = array.shape[:2]
    if h < crop or w < crop:
        top, left = max(crop - h, 0) // 2, max(crop - w, 0) // 2
        padded = np.zeros((max(h, crop), max(w, crop), 3), array.dtype)
        padded[top:top + h, left:left + w] = array
        array, (h, w) = padded, padded.shape[:2]
    top, left = int(round((h - crop) / 2.0)), int(round((w - crop) / 2.0))
    return array[top:top + crop, left:left + crop]


def decode(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


def prepare(image: Image.Image, resize: int | None, crop: int | None, small: str = "upscale") -> np.ndarray:
    """ImageNet-C's preparation: shorter side to `resize`, then the centre crop; a side still below the crop is
    upscaled to it first (small=upscale) or padded (small=pad). Raises ValueError under 32 px."""
    if resize is not None:
        image = resize_shorter(image, resize)
    if crop is not None and min(image.size) < crop and small == "upscale":
        image = resize_shorter(image, crop)
    array = np.asarray(image, dtype=np.uint8)
    if crop is not None:
        array = centre_crop(array, crop)
    if min(array.shape[:2]) < MIN_SIDE:
        raise ValueError("below the 32 px minimum")
    return array


def corrupt(array: np.ndarray, name: str, severity: int, run_seed: int, image_id: str) -> np.ndarray:
    """imagecorruptions itself, numpy's generator seeded per (run seed, image id, corruption, severity)."""
    if name == "none" or severity == 0:
        return array
    if min(array.shape[:2]) < MIN_SIDE:
        raise ValueError("below the 32 px minimum")
    np.random.seed(ref.corruption_seed(run_seed, image_id, name, severity))
    return np.uint8(imagecorruptions.corrupt(array.copy(), severity=severity, corruption_name=name))


def as_unit(array: np.ndarray) -> np.ndarray:
    return array.astype(np.float64) / 255.0


def _bounds(region, h: int, w: int) -> tuple[int, int, int, int]:
    top, bottom, left, right = region
    return int(top * h), int(bottom * h), int(left * w), int(right * w)


def region_logits(x: np.ndarray) -> np.ndarray:
    """The RegionClassifier on an HxWx3 [0, 1] image: GAIN * (mean of w_c · pixel over R_c + b_c) per class."""
    h, w = x.shape[:2]
    out = []
    for _, weights, region, bias in RULES:
        r0, r1, c0, c1 = _bounds(region, h, w)
        out.append(GAIN * (float((x[r0:r1, c0:c1] @ np.asarray(weights)).mean()) + bias))
    return np.asarray(out)


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


def region_saliency(h: int, w: int, target: int) -> np.ndarray:
    """|∂ logit_target / ∂x| summed over channels: GAIN · Σ|w| / |R| on the class's region, 0 elsewhere."""
    _, weights, region, _ = RULES[target]
    r0, r1, c0, c1 = _bounds(region, h, w)
    out = np.zeros((h, w))
    out[r0:r1, c0:c1] = GAIN * np.abs(weights).sum() / ((r1 - r0) * (c1 - c0))
    return out


def region_quality(x: np.ndarray) -> tuple[float, np.ndarray]:
    """The RegionQuality on an HxWx3 [0, 1] image: (40 + 50 · mean green of the top half, 100 · 20x20 block means
    of the channel mean)."""
    h = x.shape[0]
    return (QUALITY_BASE + QUALITY_SCALE * float(x[: h // 2, :, 1].mean()),
            LOCAL_SCALE * ref.adaptive_avg_pool(x.mean(axis=2), GRID))


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def number(text: str) -> float | None:
    """A CSV cell as a number; blank is None."""
    return None if text in ("", "None") else float(text)


def close(a: float | None, b: float | None, rel: float = 1e-6, abs_: float = 1e-9) -> bool:
    if a is None or b is None or (isinstance(b, float) and math.isnan(b)):
        return (a is None or math.isnan(a)) and (b is None or math.isnan(b))
    return math.isclose(a, b, rel_tol=rel, abs_tol=abs_)
