"""Disk cache of corrupted images, so sweeps over attribution methods or models corrupt each image once."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from ..corruption import apply_corruption, backend_version, is_clean
from ..io.entries import DamagedEntry, discard_entry, read_entry, write_entry


class CachedCorruption:
    """A drop-in for apply_corruption that stores results by (image content, corruption, severity, seed, backend).

    `backend`: "numpy" (imagecorruptions; its version is in the key) or the torch backend's identity on a device
    (`torch_backend_id`): entries of one backend are never served to the other. With torch the corruption runs in
    the evaluation step; DataLoader workers `lookup` entries and the step `store`s the new ones.

    Safe to share between DataLoader workers, parallel jobs and processes racing on one entry: entries are written
    atomically (temporary file, fsync, rename). Each carries a sha256 of its pixels; a damaged, truncated or
    empty entry is deleted with a log line and recomputed, never used.
    """

    def __init__(self, root: str | os.PathLike, backend: str = "numpy") -> None:
        self.root = Path(root)
        # numpy's key is the reference's version alone, so entries written before the torch backend stay valid
        self.backend = backend_version() if backend == "numpy" else f"{backend}|{backend_version()}"

    def path(self, image: np.ndarray, name: str, severity: int, seed: int) -> Path:
        digest = hashlib.sha256()
        digest.update(str(image.shape).encode())
        digest.update(np.ascontiguousarray(image).tobytes())
        digest.update(f"|{name}|{severity}|{seed}|{self.backend}".encode())
        key = digest.hexdigest()
        return self.root / name / str(severity) / key[:2] / f"{key}.npz"

    def lookup(self, image: np.ndarray, name: str, severity: int, seed: int) -> np.ndarray | None:
        """The stored corrupted image, or None (a damaged entry is deleted with a log line)."""
        path = self.path(image, name, severity, seed)
        try:
            cached = read_entry(path).get("image")
            if cached is None or cached.shape != image.shape or cached.dtype != np.uint8:
                raise DamagedEntry("not an image of the input's shape")
            return cached
        except FileNotFoundError:
            return None
        except DamagedEntry as exc:
            discard_entry(path, exc, "corruption-cache entry")
            return None

    def store(self, image: np.ndarray, name: str, severity: int, seed: int, out: np.ndarray) -> None:
        """Store `out`, the corruption of `image` (atomically; a racing writer stores the same pixels)."""
        write_entry(self.path(image, name, severity, seed), {"image": np.ascontiguousarray(out)})

    def __call__(self, image: np.ndarray, name: str, severity: int, seed: int) -> np.ndarray:
        if is_clean(name, severity):
            return image
        cached = self.lookup(image, name, severity, seed)
        if cached is not None:
            return cached
        out = apply_corruption(image, name, severity, seed)
        self.store(image, name, severity, seed, out)
        return out


def torch_backend_id(device_type: str) -> str:
    """The corruption cache's backend for the torch backend on a device type: float results of the filters may
    differ in the last bits between torch versions and devices, so each has its own entries."""
    import torch

    return f"torch=={torch.__version__}|{device_type}"
