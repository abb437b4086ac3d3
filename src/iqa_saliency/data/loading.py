"""DataLoader plumbing: how many workers, which images each process evaluates, and workers kept across cells."""

from __future__ import annotations

import atexit
import os
import pickle
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..errors import ConfigError


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


class ShardSampler(Sampler[int]):
    """Every `world_size`-th index from `rank`: each image on exactly one process, no padding.

    `length` is a dataset size, or the dataset indices still to do (a resumed run skips finished ones).
    """

    def __init__(self, length: int | Sequence[int], rank: int = 0, world_size: int = 1) -> None:
        todo = range(length) if isinstance(length, int) else list(length)
        self.indices = list(todo[rank::world_size])

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        # Lightning refuses a zero-length loader on any rank; a rank left without images (fewer images to do
        # than processes) claims one batch and yields none, so the ranks still meet at every collective.
        return max(1, len(self.indices))


def fixed_batches(length: int, batch_size: int) -> list[list[int]]:
    """The dataset's indices cut into consecutive batches of `batch_size`: the same batches whatever is left to do
    and however many processes share them, because a model's float results depend on the batch it ran in."""
    return [list(range(start, min(start + batch_size, length))) for start in range(0, length, batch_size)]


class BatchShards(Sampler[list[int]]):
    """Every `world_size`-th batch from `rank` (a batch sampler): each image in exactly one process, in the batch
    `fixed_batches` puts it in, so 1 or N processes and an interrupted-then-resumed run compute the same numbers."""

    def __init__(self, batches: Sequence[Sequence[int]], rank: int = 0, world_size: int = 1) -> None:
        self.batches = [list(b) for b in batches][rank::world_size]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return max(1, len(self.batches))  # a rank without batches claims one and yields none (see ShardSampler)


# A dataset pickled larger than this (e.g. a source holding decoded images in memory) is not sent to kept workers:
# its cell starts workers of its own, as every cell did before.
MAX_SENT_DATASET = 1 << 20


class CellBatch(NamedTuple):
    """One batch for kept workers: the indices of a cell's dataset, with that dataset pickled (`key` names it)."""

    key: int
    dataset: bytes
    indices: list[int]


class _CellDatasets(Dataset):
    """The kept loader's dataset, in each worker: unpickles a cell's dataset once, at its first batch there."""

    def __init__(self) -> None:
        self.length = 0  # the current cell's (the main process sets it; len() is asked there only)
        self._key: int | None = None
        self._dataset: Dataset | None = None

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Any:
        raise TypeError("kept workers are sent whole batches (CellBatch)")

    def __getitems__(self, batch: CellBatch) -> list[Any]:
        if batch.key != self._key:
            self._dataset, self._key = pickle.loads(batch.dataset), batch.key
        return [self._dataset[i] for i in batch.indices]


class _CellBatches(Sampler[CellBatch]):
    """The kept loader's batch sampler: the current cell's batches (set per cell in the main process)."""

    def __init__(self) -> None:
        self.batches: list[CellBatch] = []

    def __iter__(self) -> Iterator[CellBatch]:
        return iter(self.batches)

    def __len__(self) -> int:
        return max(1, len(self.batches))  # as BatchShards: a rank without batches claims one and yields none


class _KeptLoader:
    """What a cell's test loop iterates: the kept DataLoader's next epoch, its workers reused.

    Not a DataLoader, so Lightning's loop end does not shut the workers down (it does so for any DataLoader's
    iterator). Lazy: Lightning calls iter() once just to check it is iterable, which must not start an epoch. Each
    epoch draws the base seed from torch's global generator that a new DataLoader's iterator draws, so what runs
    after it sees that generator as before."""

    def __init__(self, loader: DataLoader, batch_sampler: Sampler[list[int]]) -> None:
        self.loader = loader
        self.batch_sampler = batch_sampler  # the cell's own batches, read as a DataLoader's (the progress lines)

    def __iter__(self) -> Iterator[Any]:
        if self.loader._iterator is not None:  # a new iterator would draw this; a reset one does not
            torch.empty((), dtype=torch.int64).random_(generator=self.loader.generator)
        yield from self.loader

    def __len__(self) -> int:
        return len(self.loader)


class WorkerPool:
    """DataLoader worker processes kept across the cells of one process (a sweep's), instead of started per cell.

    A cell whose loader settings (workers, collate function, pinned memory) match the kept loader's sends its
    dataset to the same workers (pickled once per cell, unpickled once per worker); they compute its batches exactly
    as a cell's own workers would (items depend only on the dataset and the index: seeds are per image). Other
    settings replace the kept workers. `close` shuts them down; an error in a cell must call it (a loader stopped
    mid-epoch is not reused)."""

    def __init__(self) -> None:
        self._loader: DataLoader | None = None
        self._settings: tuple[Any, ...] | None = None
        self._cells = 0

    def loader(self, dataset: Dataset, batch_sampler: Sampler[list[int]], num_workers: int,
               collate_fn: Callable[[list[Any]], Any], pin_memory: bool = False) -> Iterable[Any] | None:
        """An iterable over `dataset`'s batches from the kept workers, or None where they cannot serve it (no
        workers asked for, or a dataset that does not pickle small): the caller then builds its own DataLoader."""
        if num_workers <= 0:
            return None
        try:
            payload = pickle.dumps(dataset, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # noqa: BLE001  (e.g. the API's local functions: the cell's own workers inherit them)
            return None
        if len(payload) > MAX_SENT_DATASET:
            return None
        settings = (num_workers, collate_fn, pin_memory)
        if settings != self._settings:
            self.close()
            self._loader = DataLoader(_CellDatasets(), batch_sampler=_CellBatches(), num_workers=num_workers,
                                      collate_fn=collate_fn, pin_memory=pin_memory, persistent_workers=True)
            self._settings = settings
        self._cells += 1
        self._loader.dataset.length = len(dataset)
        self._loader.batch_sampler.batches = [CellBatch(self._cells, payload, list(b)) for b in batch_sampler]
        return _KeptLoader(self._loader, batch_sampler)

    def close(self) -> None:
        """Shut the kept workers down (a later cell starts new ones)."""
        loader, self._loader, self._settings = self._loader, None, None
        if loader is not None and loader._iterator is not None:
            iterator, loader._iterator = loader._iterator, None
            iterator._shutdown_workers()


_kept: WorkerPool | None = None


def keep_workers() -> WorkerPool:
    """The process's kept workers (made on the first call; shut down at exit at the latest)."""
    global _kept
    if _kept is None:
        _kept = WorkerPool()
        atexit.register(release_workers)
    return _kept


def kept_workers() -> WorkerPool | None:
    """The process's kept workers, if keep_workers made them."""
    return _kept


def release_workers() -> None:
    """Shut the process's kept workers down (the end of a sweep); the next keep_workers starts afresh."""
    global _kept
    pool, _kept = _kept, None
    if pool is not None:
        pool.close()
