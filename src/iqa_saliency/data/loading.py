"""DataLoader plumbing: how many workers, and which images each process evaluates."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

from torch.utils.data import Sampler

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
