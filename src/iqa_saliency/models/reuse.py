"""Models reused across the cells of one process (a sweep's cells under Hydra's basic launcher): each model built,
its weights loaded, its BatchNorm folded and checked on a probe once, as long as everything that determines it
stays the same.

The entry point keys each model by its whole configuration, the local weights files it names (size and time of
change) and the settings that change the loaded module in place (device, precision, memory format, folding). A new
key releases the entry before the next model is loaded, so a cell with another model never gets a cached one and a
sweep never holds two. Models nobody registered here (the Python API's, the benchmark's) are folded afresh each run.
"""

from __future__ import annotations

import gc
import json
import weakref
from collections import Counter
from collections.abc import Callable, Hashable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from torch import nn

from .folding import fold_batchnorm

T = TypeVar("T")


def files_named(config: Any) -> dict[str, list[int]]:
    """The local files a configuration names (any string value that is a file), with their size and mtime: a
    weights file changed between two cells changes the key."""
    found: dict[str, list[int]] = {}

    def walk(node: Any) -> None:
        if isinstance(node, Mapping):
            for value in node.values():
                walk(value)
        elif isinstance(node, (list, tuple)):
            for value in node:
                walk(value)
        elif isinstance(node, str) and node and len(node) < 4096:
            path = Path(node).expanduser()
            try:
                if path.is_file():
                    stat = path.stat()
                    found[str(path.resolve())] = [stat.st_size, stat.st_mtime_ns]
            except (OSError, ValueError):
                return

    walk(config)
    return found


def model_key(config: Any, **settings: Any) -> str:
    """A cache key: the configuration, the files it names and `settings`, as canonical JSON."""
    return json.dumps({"config": config, "files": files_named(config), **settings}, sort_keys=True, default=repr)


class ModelReuse:
    """One entry per role (e.g. quality, classifier): the object loaded under a key, returned while the key stays
    the same; `builds` counts the loads per role."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[Hashable, Any]] = {}
        self.builds: Counter[str] = Counter()

    def get(self, role: str, key: Hashable, load: Callable[[], T]) -> T:
        """The object held for `role` when it was loaded under `key`, else `load()` (the old entry released first)."""
        entry = self._entries.get(role)
        if entry is not None and entry[0] == key:
            return entry[1]
        if self._entries.pop(role, None) is not None:
            entry = None  # nothing here holds the old models while the new ones load
            gc.unfreeze()  # the old models may sit in reference cycles among objects frozen after a cell
            gc.collect()
        value = load()
        self._entries[role] = (key, value)
        self.builds[role] += 1
        return value

    def clear(self) -> None:
        """Release every entry."""
        self._entries.clear()


# Models whose folded copy is kept (registered by the holder of a ModelReuse entry); the copies live as long as the
# model they were folded from. A model that folding left as it was is recorded as None (the value must not refer to
# its key, or the weak entry would never go).
_reusable: weakref.WeakSet[nn.Module] = weakref.WeakSet()
_folded: weakref.WeakKeyDictionary[nn.Module, nn.Module | None] = weakref.WeakKeyDictionary()


def keep_folded(model: nn.Module) -> nn.Module:
    """Register `model` as reused: `fold_once` then folds it (and checks the fold on the probe) once."""
    _reusable.add(model)
    return model


def is_reused(model: nn.Module) -> bool:
    """Whether `model` was registered with `keep_folded` (held by a reuse entry)."""
    return model in _reusable


def fold_once(model: nn.Module) -> nn.Module:
    """`fold_batchnorm(model)`, computed once for a model registered with `keep_folded`."""
    if model not in _reusable:
        return fold_batchnorm(model)
    if model not in _folded:
        result = fold_batchnorm(model)
        _folded[model] = None if result is model else result
    result = _folded[model]
    return model if result is None else result
