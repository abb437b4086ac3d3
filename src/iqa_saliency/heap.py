"""The process's C heap (glibc malloc) as large CPU tensors use it: keep freed pages for reuse, return them on cue."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

# glibc mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# Blocks up to this size come from the heap rather than a fresh mmap (glibc's largest allowed value on 64-bit).
MMAP_THRESHOLD_BYTES = 32 * 2**20
# Free memory at the heap's top that is kept instead of handed back after every free.
TRIM_THRESHOLD_BYTES = 2**30


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    return libc if libc is not None and hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def reuse_freed_heap() -> bool:
    """Let freed tensor memory be reused without new page faults; True where glibc took the settings.

    By default glibc maps each large block afresh and returns the pages when it is freed, so every batch's
    activations fault in again: on this project's 2-core CPU that cost about a quarter of the models' time.
    """
    libc = _libc()
    if libc is None:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))


def release_free_heap() -> None:
    """Give the C heap's free pages back to the OS (glibc only; a no-op elsewhere).

    Without it glibc keeps the pages of freed per-image arrays (~0.2 MB each) mapped in the process.
    """
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
