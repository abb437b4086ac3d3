"""Disk cache of corrupted images, so sweeps over attribution methods or models corrupt each image once."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from ..corruption import apply_corruption, backend_version, is_clean
from ..io.atomic import atomic_write


class CachedCorruption:
    """A drop-in for apply_corruption that stores results by (image content, corruption, severity, seed, backend).

    Safe to share between DataLoader workers and parallel jobs: entries are written atomically.
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.backend = backend_version()

    def path(self, image: np.ndarray, name: str, severity: int, seed: int) -> Path:
        digest = hashlib.sha256()
        digest.update(str(image.shape).encode())
        digest.update(np.ascontiguousarray(image).tobytes())
        digest.update(f"|{name}|{severity}|{seed}|{self.backend}".encode())
        key = digest.hexdigest()
        return self.root / name / str(severity) / key[:2] / f"{key}.npy"

    def __call__(self, image: np.ndarray, name: str, severity: int, seed: int) -> np.ndarray:
        if is_clean(name, severity):
            return image
        path = self.path(image, name, severity, seed)
        if path.exists():
            try:
                cached = np.load(path, allow_pickle=False)
                if cached.shape == image.shape and cached.dtype == np.uint8:
                    return cached
            except (OSError, ValueError):
                pass  # unreadable entry: recompute and overwrite
        out = apply_corruption(image, name, severity, seed)
        atomic_write(path, lambda fh: np.save(fh, out, allow_pickle=False), durable=False)
        return out
