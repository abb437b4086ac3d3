"""A cell's progress counted in images, in place of Lightning's batch bar: count, rate and time left on a terminal;
off a terminal (Slurm logs, CI, nohup) one log line every `interval` seconds instead."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from pytorch_lightning.callbacks.progress import ProgressBar
from tqdm.auto import tqdm

from ..progress import format_eta

log = logging.getLogger("evaluate")


class ImageProgressBar(ProgressBar):
    """Lightning's progress bar for trainer.test, counted in images of this process's batches."""

    def __init__(self, label: str, interval: float = 30.0) -> None:
        super().__init__()
        self.label, self.interval = label, float(interval)
        self._enabled = True
        self._bar: Any = None
        self._sizes: list[int] = []
        self._done = self._total = 0
        self._start = self._last = 0.0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    def on_test_start(self, trainer: Any, pl_module: Any) -> None:
        if not (self._enabled and trainer.is_global_zero):
            return
        self._sizes = _batch_sizes(trainer)
        self._total, self._done = sum(self._sizes), 0
        self._start = self._last = time.monotonic()
        share = " (this process's share)" if trainer.world_size > 1 else ""
        if sys.stderr.isatty():
            self._bar = tqdm(total=self._total, desc=self.label, unit="img", dynamic_ncols=True, leave=False)
        else:
            log.info("%s: %d images to compute%s; progress every %g s", self.label, self._total, share, self.interval)

    def on_test_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int,
                          dataloader_idx: int = 0) -> None:
        if not (self._enabled and trainer.is_global_zero):
            return
        images = self._sizes[batch_idx] if batch_idx < len(self._sizes) else 0
        self._done += images
        now = time.monotonic()
        if self._bar is not None:
            self._bar.update(images)
        elif now - self._last >= self.interval:
            self._last = now
            log.info("%s: %s", self.label, format_eta(self._done, self._total, now - self._start, unit="image"))

    def on_test_end(self, trainer: Any, pl_module: Any) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _batch_sizes(trainer: Any) -> list[int]:
    """The number of images in each of this process's test batches, in order (from the fixed batch sampler)."""
    loaders = trainer.test_dataloaders
    loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
    sampler = getattr(loader, "batch_sampler", None)
    batches = getattr(sampler, "batches", None)
    if batches is not None:
        return [len(b) for b in batches]
    size = getattr(loader, "batch_size", None) or 1
    n = len(loader.dataset) if hasattr(loader, "dataset") else 0
    return [min(size, n - i) for i in range(0, n, size)]
