"""On-disk cache of the clean pass (the prepared image and its model outputs), so a sweep decodes, resizes and
evaluates each clean image once per image and model."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..io.atomic import atomic_write_text, strict_json
from ..io.entries import DamagedEntry, discard_entry, read_entry, write_entry

CLEAN_FIELDS = ("q_global", "q_local", "probs", "logits", "attribution")
# Bumped when the entry layout changes, so a folder shared between versions never mixes layouts.
ENTRY_FORMAT = 5  # 3: a sha256 member checks every entry; 4: entries named by image id and file content; 5: logits


def cache_key(parts: dict[str, Any]) -> str:
    """A short digest of everything that determines the clean outputs."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


class CleanCache:
    """One folder per (models, attribution, preprocessing) key; one .npz per (image id, file content) holding the
    model outputs, the prepared uint8 image (H, W, 3) and the source's stamp of the file it came from (the sha256
    of its bytes, data.sources.content_stamp).

    An entry whose stamp differs from the file's current one is not used. Entries are
    written atomically (temporary file, fsync, rename), so parallel jobs of a sweep and processes racing on one
    entry share the folder safely: a reader sees a whole entry or none. Each entry carries a sha256 of its
    arrays; a damaged, truncated or empty one is deleted with a log line and recomputed, never used.
    """

    def __init__(self, root: str | os.PathLike, key_parts: dict[str, Any]) -> None:
        key_parts = {**key_parts, "entry_format": ENTRY_FORMAT}
        self.key = cache_key(key_parts)
        self.dir = Path(root) / self.key
        self.dir.mkdir(parents=True, exist_ok=True)
        key_file = self.dir / "key.json"
        if not key_file.exists():
            atomic_write_text(key_file, strict_json(key_parts, indent=2, sort_keys=True, default=str) + "\n")
        self.hits = 0
        self.misses = 0

    def _path(self, image_id: str, stamp: str) -> Path:
        # the source's stamp is the file's content digest: one entry per (image id, content), so datasets whose
        # files share names (and sizes and times) never read each other's entries
        digest = hashlib.sha256(f"{image_id}\0{stamp}".encode()).hexdigest()[:24]
        stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in image_id)[-60:]
        return self.dir / f"{stem}-{digest}.npz"

    def read(self, image_id: str, stamp: str = "") -> dict[str, np.ndarray] | None:
        """One image's cached outputs and prepared "image", or None if absent, damaged (then deleted, so it is
        recomputed and rewritten) or made from a file with another stamp; not counted (DataLoader workers call
        this)."""
        path = self._path(image_id, stamp)
        try:
            data = read_entry(path)
            if any(k not in data for k in (*CLEAN_FIELDS, "image", "stamp")):
                raise DamagedEntry("fields missing")
        except FileNotFoundError:
            return None
        except DamagedEntry as exc:
            discard_entry(path, exc, "clean-cache entry")
            return None
        if str(data["stamp"]) != stamp:
            return None
        return {k: data[k] for k in (*CLEAN_FIELDS, "image")}

    def count(self, hits: int, looked_up: int) -> None:
        """Count a group of look-ups: `hits` of `looked_up` images served from the cache, the rest computed."""
        self.hits += hits
        self.misses += looked_up - hits

    def put(self, image_id: str, arrays: dict[str, np.ndarray], image: np.ndarray, stamp: str = "") -> None:
        """Store one image's clean outputs with its prepared uint8 (H, W, 3) image and its source stamp."""
        data = {k: np.asarray(arrays[k]) for k in CLEAN_FIELDS}
        data["image"] = np.ascontiguousarray(image, dtype=np.uint8)
        data["stamp"] = np.array(stamp)
        write_entry(self._path(image_id, stamp), data)

    def stats(self) -> dict[str, Any]:
        return {"dir": str(self.dir), "hits": self.hits, "misses": self.misses}


def stack_clean_entries(entries: list[dict[str, np.ndarray] | None]) -> dict[str, torch.Tensor]:
    """Stack one image group's cache look-ups: {"found": bool (B,), field: (B, ...) with zeros where not found}.

    An entry whose arrays do not match the others' shapes (a damaged or foreign file) counts as not found.
    """
    shapes = next(({k: e[k].shape for k in CLEAN_FIELDS} for e in entries if e is not None), None)
    found = [e is not None and all(e[k].shape == shapes[k] for k in CLEAN_FIELDS) for e in entries]
    out = {"found": torch.tensor(found, dtype=torch.bool)}
    if shapes is not None:
        for key in CLEAN_FIELDS:
            stacked = np.zeros((len(entries), *shapes[key]), dtype=np.float32)
            for i, entry in enumerate(entries):
                if found[i]:
                    stacked[i] = entry[key]
            out[key] = torch.from_numpy(stacked)
    return out
