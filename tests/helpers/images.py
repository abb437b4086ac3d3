"""Small generated images for the tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def make_image(path: Path, size: tuple[int, int] = (96, 80), seed: int = 0, mode: str = "RGB") -> Path:
    """A smooth random RGB picture (width, height) saved at `path`."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([(xx * (3 + c) + yy * (5 - c) + rng.integers(0, 255)) % 256 for c in range(3)], axis=-1)
    noise = rng.integers(0, 40, size=(h, w, 3))
    array = np.clip(base + noise, 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).convert(mode).save(path)
    return path
