"""RunWriter: one run folder, rows streamed to per-process part files, maps and images in writer threads."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .atomic import atomic_write, atomic_write_text, format_value, strict_json
from .csv_safe import SafeDictWriter, SafeWriter, restore
from .maps import maps_on_disk
from .schema import INCOMPLETE, PER_IMAGE, PER_IMAGE_COLUMNS, SKIPPED, SKIPPED_COLUMNS, SUMMARY

log = logging.getLogger(__name__)

# Writes queued at once (about 0.2 MB of maps each at 224 px); the writer threads keep far ahead of this.
MAX_QUEUED_WRITES = 64


class RunWriter:
    """Writes one run folder; each process streams its rows to its own part file."""

    def __init__(self, run_dir: str | os.PathLike, rank: int = 0, columns: list[str] | None = None,
                 background_writes: int = 0) -> None:
        self.run_dir = Path(run_dir)
        self.rank = rank
        self.columns = columns or list(PER_IMAGE_COLUMNS)
        self.background_writes = background_writes
        self.finished: set[int] = set()  # images an earlier attempt finished (resume): not written again
        self.identity: dict[str, Any] = {}  # recorded in the INCOMPLETE marker, compared on resume (io.resume)
        self._pool: ThreadPoolExecutor | None = None
        self._pending: deque[Future] = deque()
        self._since_commit: list[Future] = []  # writes of the rows not yet committed
        self._commits: deque[tuple[list[Future], list[dict[str, Any]]]] = deque()

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_pool": None, "_pending": deque(), "_since_commit": [], "_commits": deque()}

    def submit(self, fn: Callable[..., None], *args: Any) -> None:
        """Run a per-image write now, or in a writer thread so the models keep working meanwhile."""
        if not self.background_writes:
            fn(*args)
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.background_writes, thread_name_prefix="run-writer")
        future = self._pool.submit(fn, *args)
        self._pending.append(future)
        self._since_commit.append(future)
        while self._pending and self._pending[0].done():
            self._pending.popleft().result()  # a failed write stops the run here, not only at wait()
        if len(self._pending) > MAX_QUEUED_WRITES:  # bound the memory held by queued arrays
            self._pending.popleft().result()
        self._commit_written()

    def commit_rows(self, rows: Iterable[dict[str, Any]]) -> None:
        """Append finished rows once every file submitted for them (maps, images, cache entries) is on disk:
        a row on disk always has all its outputs, so a resumed folder is complete whenever the run was killed."""
        rows = list(rows)
        if not self.background_writes:
            self.append_rows(rows)
            return
        self._commits.append((self._since_commit, rows))
        self._since_commit = []
        self._commit_written()

    def _commit_written(self, block: bool = False) -> None:
        """Append, in order, the rows whose writes have all finished (all of them when `block`); rows whose
        writes failed are left out (they are redone on resume) and the first error is raised."""
        first_error: BaseException | None = None
        while self._commits and (block or all(f.done() for f in self._commits[0][0])):
            futures, rows = self._commits.popleft()
            errors = [e for e in (f.exception() for f in futures) if e is not None]
            if not errors:
                self.append_rows(rows)
            elif not block:
                raise errors[0]
            else:
                first_error = first_error or errors[0]
        if first_error is not None:
            raise first_error

    def wait(self) -> None:
        """Block until every queued write is on disk and its rows are committed; re-raise the first error."""
        pending, self._pending = self._pending, deque()
        errors = [f.exception() for f in pending]
        try:
            self._commit_written(block=True)
        finally:
            self._since_commit = []
        for error in errors:
            if error is not None:
                raise error

    def close(self) -> None:
        """Stop the writer threads once their queued writes are done (a later submit starts new ones)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def part_path(self, name: str, rank: int | None = None) -> Path:
        return self.run_dir / f".{name}.part{self.rank if rank is None else rank}"

    def _append(self, name: str, columns: list[str], rows: Iterable[dict[str, Any]]) -> None:
        rows = list(rows)
        if not rows:
            return
        path = self.part_path(name)
        new = not path.exists()
        with open(path, "a", newline="") as fh:
            writer = SafeWriter(fh)  # no cell a spreadsheet would run as a formula (io.csv_safe)
            if new:
                writer.writerow(columns)
            for row in rows:
                writer.writerow([format_value(row.get(c)) for c in columns])
            fh.flush()
            os.fsync(fh.fileno())

    def append_rows(self, rows: Iterable[dict[str, Any]]) -> None:
        """Stream finished per-image rows to disk."""
        self._append(PER_IMAGE, self.columns, rows)

    def append_skipped(self, rows: Iterable[dict[str, Any]]) -> None:
        """Stream images that could not be used, with the reason."""
        self._append(SKIPPED, SKIPPED_COLUMNS, rows)

    def save_maps(self, relpath: str, **arrays: np.ndarray) -> None:
        """One .npz of float32 maps, written atomically."""
        data = {k: np.asarray(v, dtype=np.float32) for k, v in arrays.items()}
        self.submit(atomic_write, self.run_dir / relpath, lambda fh: np.savez(fh, **data))

    def save_png(self, relpath: str, image: np.ndarray) -> None:
        """A lossless PNG of an HxWx3 uint8 image, written atomically."""
        self.submit(atomic_write, self.run_dir / relpath, lambda fh: Image.fromarray(image).save(fh, format="PNG"))

    def parts(self, name: str) -> list[Path]:
        """Every process's part file of `name` (also those of an earlier, interrupted run)."""
        return sorted(self.run_dir.glob(f".{name}.part*"))

    def read_rows(self, name: str) -> dict[int, dict[str, str]]:
        """Complete rows of `name` by image index, from its merged file and all parts (partial lines ignored)."""
        columns = self.columns if name == PER_IMAGE else SKIPPED_COLUMNS
        rows: dict[int, dict[str, str]] = {}
        for path in [self.run_dir / name, *self.parts(name)]:
            if path.exists():
                for row in _complete_rows(path, columns):
                    rows[int(row["index"])] = row  # an image counts once, whichever process saw it
        return rows

    def repair_part(self) -> None:
        """Cut this process's part files back to their last complete line (a kill can leave half a row)."""
        for name in (PER_IMAGE, SKIPPED):
            path = self.part_path(name)
            if path.exists():
                data = path.read_bytes()
                end = data.rfind(b"\n") + 1
                if end != len(data):
                    with open(path, "r+b") as fh:
                        fh.truncate(end)

    def done_rows(self) -> dict[int, str]:
        """Images already finished by an earlier attempt, index -> image id: rows whose maps are on disk (rows
        are committed only after all their files), and skipped images."""
        done = {}
        for i, row in self.read_rows(PER_IMAGE).items():
            if not row.get("maps") or maps_on_disk(self.run_dir, row["maps"]):
                done[i] = row["image"]
            elif (self.run_dir / row["maps"]).is_file():
                log.warning("The maps of %s (%s) are damaged: the image is computed again.", row["image"], row["maps"])
        return {**{i: row["image"] for i, row in self.read_rows(SKIPPED).items()}, **done}

    def done_indices(self) -> set[int]:
        return set(self.done_rows())

    def merge(self, world_size: int = 1) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
        """Merge every process's parts into per_image.csv and skipped.csv, sorted by image index."""
        merged = []
        for name, columns in ((PER_IMAGE, self.columns), (SKIPPED, SKIPPED_COLUMNS)):
            rows = self.read_rows(name)
            ordered = [rows[i] for i in sorted(rows)]
            if ordered or name == PER_IMAGE:
                buf = io.StringIO()
                writer = SafeDictWriter(buf, fieldnames=columns, lineterminator="\n")
                writer.writeheader()
                writer.writerows(ordered)
                atomic_write_text(self.run_dir / name, buf.getvalue())
            merged.append(ordered)
        return merged[0], merged[1]

    def remove_parts(self, world_size: int = 1) -> None:
        """Remove the part files and the dataset record of a run whose merged files are written."""
        for name in (PER_IMAGE, SKIPPED):
            for part in self.parts(name):
                part.unlink(missing_ok=True)
        (self.run_dir / ".dataset.json").unlink(missing_ok=True)

    def write_status(self, status: str, **info: Any) -> None:
        """The INCOMPLETE marker: why this folder does not (yet) hold a complete run."""
        extra = {"identity": self.identity} if self.identity else {}
        text = strict_json({"status": status, **info, **extra}, indent=2)
        atomic_write_text(self.run_dir / INCOMPLETE, text + "\n")

    def read_status(self) -> dict[str, Any] | None:
        path = self.run_dir / INCOMPLETE
        return json.loads(path.read_text()) if path.exists() else None

    def write_summary(self, summary: dict[str, Any]) -> None:
        """summary.json, written last: its presence marks a complete run."""
        text = strict_json(summary, indent=2)
        atomic_write_text(self.run_dir / SUMMARY, text + "\n")
        (self.run_dir / INCOMPLETE).unlink(missing_ok=True)


def _complete_rows(path: Path, columns: list[str]) -> list[dict[str, str]]:
    """Rows of a CSV file that have every column; a last line without its newline is ignored."""
    with open(path, newline="") as fh:
        text = fh.read()
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header != columns:
        return []
    return [dict(zip(columns, map(restore, r), strict=True)) for r in reader if len(r) == len(columns)]
