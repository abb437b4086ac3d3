"""Checksummed .npz entries (cache entries): written atomically and durably, verified on every read.

An entry carries a `sha256` member: the digest of every other member's name, dtype, shape and bytes. A reader
that finds a missing, truncated, unreadable or altered entry gets `DamagedEntry`, never the damaged arrays.
"""

from __future__ import annotations

import hashlib
import logging
import os
import zipfile
from pathlib import Path

import numpy as np

from .atomic import atomic_write

log = logging.getLogger(__name__)

DIGEST = "sha256"


class DamagedEntry(ValueError):
    """A cache entry that cannot be trusted (truncated, damaged, unreadable or of another layout)."""


def digest_arrays(arrays: dict[str, np.ndarray]) -> str:
    """sha256 over each array's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def write_entry(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """Write `arrays` with their digest as one .npz, atomically (temporary file, fsync, rename, folder fsync)."""
    data = {k: np.asarray(v) for k, v in arrays.items()}
    if DIGEST in data:
        raise ValueError(f"'{DIGEST}' is reserved for the entry's checksum")
    data[DIGEST] = np.array(digest_arrays(data))
    atomic_write(path, lambda fh: np.savez(fh, **data))


def read_entry(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The arrays of an entry, verified against its digest; DamagedEntry when the file cannot be trusted."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zipfile.LargeZipFile) as exc:
        raise DamagedEntry(f"unreadable ({type(exc).__name__}: {exc})") from exc
    stored = arrays.pop(DIGEST, None)
    if stored is None:
        raise DamagedEntry("no checksum")
    if str(stored) != digest_arrays(arrays):
        raise DamagedEntry("checksum mismatch")
    return arrays


def discard_entry(path: str | os.PathLike, reason: object, what: str = "cache entry") -> None:
    """Delete a damaged entry with one log line, so it is recomputed and rewritten."""
    log.warning("Damaged %s %s (%s): deleted; it is recomputed.", what, path, reason)
    Path(path).unlink(missing_ok=True)
