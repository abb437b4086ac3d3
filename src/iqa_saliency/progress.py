"""Progress of long work outside Lightning's loops (quality scoring, a sweep's cells), shown like Lightning's bar:
count, rate and time left on stderr; silent when stderr is not a terminal or progress is switched off
(`trainer.enable_progress_bar=false`, set by the entry points through `set_enabled`)."""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tqdm.auto import tqdm

_ENABLED = True


def set_enabled(enabled: bool) -> None:
    """Switch progress output on or off for this process (the entry points follow trainer.enable_progress_bar)."""
    global _ENABLED
    _ENABLED = bool(enabled)


def enabled() -> bool:
    """Whether progress is shown: switched on and stderr is a terminal."""
    return _ENABLED and sys.stderr.isatty()


@contextmanager
def progress_bar(total: int, desc: str, unit: str = "img") -> Iterator[Any]:
    """A bar to `.update(n)` (a no-op one when progress is not shown)."""
    bar = tqdm(total=total, desc=desc, unit=unit, disable=not enabled(), dynamic_ncols=True, leave=False)
    try:
        yield bar
    finally:
        bar.close()


def format_eta(done: int, total: int, seconds: float, unit: str = "cell") -> str:
    """'3/6 cells, 42.1 s/cell, about 2 min left' from the items done so far and the seconds they took."""
    text = f"{done}/{total} {unit}s"
    if done <= 0 or seconds <= 0:
        return text
    per = seconds / done
    left = per * max(0, total - done)
    rate = f"{per:.1f} s/{unit}" if per >= 1 else f"{1 / per:.1f} {unit}s/s"
    return f"{text}, {rate}, about {_duration(left)} left" if total > done else f"{text}, {rate}"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{math.ceil(seconds)} s"
    if seconds < 5400:
        return f"{math.ceil(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"
