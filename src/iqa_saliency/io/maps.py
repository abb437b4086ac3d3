"""Where a run's maps go: one .npz per image (maps_format=npz) or one chunked zarr store per process (zarr).

A per_image.csv row's `maps` column names them: `maps/000012_cat.npz`, or `maps/rank0.zarr#12` (the store and
the image's index in it). `read_maps` reads either.

zarr: each process (DDP rank) writes its own store, `maps/rank<r>.zarr`: one array `maps`, (images, values)
float32, each image's maps flattened one after the other (the group's `layout` attribute names them with their
shapes), chunked by the run's fixed batches (data.loading.fixed_batches). A batch is one chunk, one file, written
whole (an image of the batch that was skipped holds NaN): no two writes share a chunk and none reads one back.
zarr writes a chunk to a temporary file and renames it; a row is committed only after its chunk's write returned
(io.run_writer), so a run killed at any point resumes with every committed row's maps on disk.

Files: a 50,000-image x 75-cell grid is 3.75 M .npz files; as zarr it is one file per batch, 469 k at batch size
8 and 59 k at 64.
"""

from __future__ import annotations

import threading
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError

MAPS_FORMATS = ("npz", "zarr")
STORE_SUFFIX = ".zarr"


def check_maps_format(maps_format: str, crop: int | None) -> None:
    """ConfigError for an unknown format, zarr without the package, or zarr with maps of several sizes."""
    if maps_format not in MAPS_FORMATS:
        raise ConfigError(f"maps_format={maps_format!r} is not valid. Use maps_format=npz or zarr.")
    if maps_format != "zarr":
        return
    try:
        import zarr  # noqa: F401
    except ImportError:
        raise ConfigError("maps_format=zarr needs the zarr package: pip install 'iqa-saliency[zarr]' "
                          "(or pip install 'zarr>=3,<4'), or use maps_format=npz.") from None
    if crop is None:
        raise ConfigError("maps_format=zarr stores maps of one size: set dataset.crop, or use maps_format=npz.")


def store_name(rank: int) -> str:
    return f"maps/rank{rank}{STORE_SUFFIX}"


def split_ref(ref: str) -> tuple[str, int | None]:
    """A `maps` column value as (relative path, index in the store or None for an .npz)."""
    path, sep, index = ref.rpartition("#")
    if sep and path.endswith(STORE_SUFFIX) and index.isdigit():
        return path, int(index)
    return ref, None


def maps_on_disk(run_dir: str | Path, ref: str) -> bool:
    """Whether the maps a row names exist and are intact: an .npz must pass its zip CRC-32 of every array (a file
    damaged after it was written reads as missing, so its image is computed again); a zarr row is committed only
    after its chunk is written."""
    path, index = split_ref(ref)
    target = Path(run_dir) / path
    if index is not None:
        return target.is_dir()
    try:
        with zipfile.ZipFile(target) as archive:
            return archive.testzip() is None
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error):
        return False


def read_maps(run_dir: str | Path, ref: str) -> dict[str, np.ndarray]:
    """The maps a per_image.csv row names, as {kind: (h, w) float32}, from an .npz or a zarr store."""
    path, index = split_ref(ref)
    if index is None:
        with np.load(Path(run_dir) / path) as npz:
            return {k: npz[k] for k in npz.files}
    import zarr

    group = zarr.open_group(str(Path(run_dir) / path), mode="r")
    return _unflatten(np.asarray(group["maps"][index]), group.attrs["layout"])


def _unflatten(values: np.ndarray, layout: list) -> dict[str, np.ndarray]:
    out, at = {}, 0
    for name, shape in layout:
        size = int(np.prod(shape))
        out[name] = values[at: at + size].reshape(shape)
        at += size
    return out


class ZarrMaps:
    """The zarr store of one process: created at the first write, one chunk (one file) per fixed batch."""

    def __init__(self, run_dir: str | Path, rank: int, length: int, batch_size: int) -> None:
        self.run_dir = Path(run_dir)
        self.rank = rank
        self.length = length
        self.batch_size = batch_size
        self._lock = threading.Lock()
        self._array: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_lock": None, "_array": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return store_name(self.rank)

    def ref(self, index: int) -> str:
        return f"{self.name}#{index}"

    def _open(self, layout: list) -> Any:
        import zarr

        with self._lock:
            if self._array is None:
                path = self.run_dir / self.name
                for partial in path.rglob("*.partial") if path.exists() else ():  # a write killed mid-way
                    partial.unlink(missing_ok=True)
                group = zarr.open_group(str(path), mode="a")
                if "maps" not in group:
                    width = sum(int(np.prod(shape)) for _, shape in layout)
                    group.create_array("maps", shape=(self.length, width), chunks=(self.batch_size, width),
                                       dtype="float32", fill_value=np.nan)
                    group.attrs["layout"] = layout
                elif group.attrs["layout"] != layout:
                    raise ValueError(f"{path} holds maps {group.attrs['layout']}, not {layout}")
                self._array = group["maps"]
            return self._array

    def write(self, indices: Sequence[int], maps: dict[str, np.ndarray]) -> None:
        """Write the maps {kind: (n, h, w)} of images `indices` (one fixed batch's); run in a writer thread."""
        layout = [[name, list(values.shape[1:])] for name, values in maps.items()]
        array = self._open(layout)
        indices = [int(i) for i in indices]
        flat = np.concatenate([np.asarray(v, dtype=np.float32).reshape(len(indices), -1) for v in maps.values()],
                              axis=1)
        start = indices[0] // self.batch_size * self.batch_size
        stop = min(start + self.batch_size, self.length)
        if all(start <= i < stop for i in indices):  # the whole chunk at once: never read back or shared
            block = np.full((stop - start, flat.shape[1]), np.nan, dtype=np.float32)
            block[np.asarray(indices) - start] = flat
            array[start:stop] = block
        else:
            array.oindex[indices, :] = flat
