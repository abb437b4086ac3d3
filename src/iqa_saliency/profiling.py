"""Wall-time stages of an evaluation process, off by default (IQA_PROFILE=<file.json> turns them on).

`benchmarks.profile` runs a sweep with it on and splits the sweep's wall time by stage. When off, `stage` and
`add` cost one attribute read. When on, the totals are written to the file at exit, keyed by cell and stage.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import time
from collections import defaultdict
from collections.abc import Iterator

ENV = "IQA_PROFILE"
# the launching process's time.time() when it started this one (process start + imports are measured from it)
ENV_LAUNCHED = "IQA_PROFILE_LAUNCHED"
OUTSIDE = "(sweep)"  # stages outside any cell: start-up, the sweep report


class _Profile:
    def __init__(self) -> None:
        self.path = os.environ.get(ENV) or None
        self.cell = OUTSIDE
        self.seconds: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.marks: dict[str, float] = {}
        if self.path:
            atexit.register(self.dump)

    def dump(self) -> None:
        data = {"seconds": {c: dict(s) for c, s in self.seconds.items()}, "marks": self.marks}
        tmp = f"{self.path}.tmp"
        with open(tmp, "w") as fh:
            json.dump(data, fh, indent=1)
        os.replace(tmp, self.path)


_profile = _Profile()


def enabled() -> bool:
    """Whether this process records stages (IQA_PROFILE set when it started)."""
    return _profile.path is not None


def set_cell(name: str) -> None:
    """Stages from now on belong to this cell (OUTSIDE between cells)."""
    _profile.cell = name


def add(name: str, seconds: float) -> None:
    """Add seconds to a stage of the current cell (no-op when off)."""
    if _profile.path is not None:
        _profile.seconds[_profile.cell][name] += seconds


def mark(name: str) -> None:
    """Record the wall-clock time of an event (first occurrence kept), e.g. entering the entry point."""
    if _profile.path is not None:
        _profile.marks.setdefault(name, time.time())


@contextlib.contextmanager
def stage(name: str) -> Iterator[None]:
    """Time the block into a stage of the current cell (nothing when off)."""
    if _profile.path is None:
        yield
        return
    started = time.perf_counter()
    try:
        yield
    finally:
        add(name, time.perf_counter() - started)
