"""The run folder: per-image rows streamed as batches finish, atomic final files, summary.json last."""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import tempfile
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .errors import RunFolderError, UserError

log = logging.getLogger(__name__)

PER_IMAGE_COLUMNS = [
    "index", "image", "label", "label_name", "corruption", "severity",
    "mos", "mos_normalized", "quality_category", "mos_clean", "mos_drop",
    "pred", "pred_name", "pred_prob", "clean_pred", "clean_pred_prob", "flipped",
    "correct_top1", "correct_top5",
    "sim_cc", "sim_sim", "sim_kld", "sim_spearman", "sim_cc_local", "sim_cc_qattr", "attr_stability_cc", "maps",
]
SKIPPED_COLUMNS = ["index", "image", "reason"]
PER_IMAGE = "per_image.csv"
SKIPPED = "skipped.csv"
SUMMARY = "summary.json"
INCOMPLETE = "INCOMPLETE"  # JSON status of a run that has not finished (running, interrupted, failed)
_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: str | os.PathLike, write: Callable[[io.BufferedWriter], None], durable: bool = True) -> None:
    """Write through a temporary file in the same folder, then rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            if durable:  # survive a power cut too; the rename alone already protects against a crash
                os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; final files get the usual mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda fh: fh.write(text.encode()))


def format_value(value: Any) -> str:
    """CSV cell text: floats by repr (exact, deterministic), NaN/None as empty."""
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return "" if math.isnan(value) else repr(float(value))
    if isinstance(value, np.integer):
        return str(int(value))
    return str(value)


def check_writable(folder: str | os.PathLike) -> None:
    """Raise UserError unless files can be created in `folder`."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise UserError(
            f"Cannot write to the output folder '{folder}' ({exc.strerror or exc}). "
            "Choose a writable folder with hydra.run.dir=PATH."
        ) from exc


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
        self._pool: ThreadPoolExecutor | None = None
        self._pending: deque[Future] = deque()

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_pool": None, "_pending": deque()}

    def submit(self, fn: Callable[..., None], *args: Any) -> None:
        """Run a per-image write now, or in a writer thread so the models keep working meanwhile."""
        if not self.background_writes:
            fn(*args)
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.background_writes, thread_name_prefix="run-writer")
        self._pending.append(self._pool.submit(fn, *args))
        while self._pending and self._pending[0].done():
            self._pending.popleft().result()  # a failed write stops the run here, not only at wait()
        if len(self._pending) > MAX_QUEUED_WRITES:  # bound the memory held by queued arrays
            self._pending.popleft().result()

    def wait(self) -> None:
        """Block until every queued write is on disk; re-raise the first error."""
        pending, self._pending = self._pending, deque()
        errors = [f.exception() for f in pending]
        for error in errors:
            if error is not None:
                raise error

    def part_path(self, name: str, rank: int | None = None) -> Path:
        return self.run_dir / f".{name}.part{self.rank if rank is None else rank}"

    def _append(self, name: str, columns: list[str], rows: Iterable[dict[str, Any]]) -> None:
        rows = list(rows)
        if not rows:
            return
        path = self.part_path(name)
        new = not path.exists()
        with open(path, "a", newline="") as fh:
            writer = csv.writer(fh)
            if new:
                writer.writerow(columns)
            for row in rows:
                writer.writerow([format_value(row.get(c)) for c in columns])
            fh.flush()

    def append_rows(self, rows: Iterable[dict[str, Any]]) -> None:
        """Stream finished per-image rows to disk."""
        self._append(PER_IMAGE, self.columns, rows)

    def append_skipped(self, rows: Iterable[dict[str, Any]]) -> None:
        """Stream images that could not be used, with the reason."""
        self._append(SKIPPED, SKIPPED_COLUMNS, rows)

    def save_maps(self, relpath: str, **arrays: np.ndarray) -> None:
        """One .npz of float32 maps, written atomically."""
        data = {k: np.asarray(v, dtype=np.float32) for k, v in arrays.items()}
        self.submit(atomic_write, self.run_dir / relpath, lambda fh: np.savez(fh, **data), False)

    def save_png(self, relpath: str, image: np.ndarray) -> None:
        """A lossless PNG of an HxWx3 uint8 image, written atomically."""
        self.submit(atomic_write, self.run_dir / relpath,
                     lambda fh: Image.fromarray(image).save(fh, format="PNG"), False)

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

    def done_indices(self) -> set[int]:
        """Images already finished by an earlier attempt: rows whose maps are on disk, and skipped images."""
        done = {i for i, row in self.read_rows(PER_IMAGE).items()
                if not row.get("maps") or (self.run_dir / row["maps"]).is_file()}
        return done | set(self.read_rows(SKIPPED))

    def merge(self, world_size: int = 1) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
        """Merge every process's parts into per_image.csv and skipped.csv, sorted by image index."""
        merged = []
        for name, columns in ((PER_IMAGE, self.columns), (SKIPPED, SKIPPED_COLUMNS)):
            rows = self.read_rows(name)
            ordered = [rows[i] for i in sorted(rows)]
            if ordered or name == PER_IMAGE:
                buf = io.StringIO()
                writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
                writer.writeheader()
                writer.writerows(ordered)
                atomic_write_text(self.run_dir / name, buf.getvalue())
            merged.append(ordered)
        return merged[0], merged[1]

    def remove_parts(self, world_size: int = 1) -> None:
        for name in (PER_IMAGE, SKIPPED):
            for part in self.parts(name):
                part.unlink(missing_ok=True)

    def write_status(self, status: str, **info: Any) -> None:
        """The INCOMPLETE marker: why this folder does not (yet) hold a complete run."""
        text = json.dumps(_jsonable({"status": status, **info}), indent=2, allow_nan=False)
        atomic_write_text(self.run_dir / INCOMPLETE, text + "\n")

    def read_status(self) -> dict[str, Any] | None:
        path = self.run_dir / INCOMPLETE
        return json.loads(path.read_text()) if path.exists() else None

    def write_summary(self, summary: dict[str, Any]) -> None:
        """summary.json, written last: its presence marks a complete run."""
        text = json.dumps(_jsonable(summary), indent=2, sort_keys=False, allow_nan=False)
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
    return [dict(zip(columns, r, strict=True)) for r in reader if len(r) == len(columns)]


# Config keys that may change between an interrupted run and its resumption (they do not change results).
RESUME_FREE_KEYS = ("resume", "trainer", "logger", "allow_untrained_fallback", "clean_cache", "corruption_cache")


def launch_rank() -> int:
    """This process's global rank as its launcher set it (0 for the process the user started)."""
    return int(os.environ.get("RANK") or os.environ.get("LOCAL_RANK") or 0)


def _comparable(config: dict[str, Any] | None) -> dict[str, Any]:
    config = json.loads(json.dumps(_jsonable(config or {}), default=str))  # as stored on disk
    config = {k: v for k, v in (config or {}).items() if k not in RESUME_FREE_KEYS}
    if isinstance(config.get("dataset"), dict):
        config["dataset"] = {k: v for k, v in config["dataset"].items() if k != "num_workers"}
    return config


def check_run_folder(run_dir: str | Path, resume: bool, config: dict[str, Any] | None = None) -> None:
    """Refuse to write over a complete or unfinished run, or to resume one made with another configuration."""
    run_dir = Path(run_dir)
    writer = RunWriter(run_dir)
    complete = (run_dir / SUMMARY).exists()
    unfinished = (run_dir / INCOMPLETE).exists() or bool(writer.parts(PER_IMAGE) + writer.parts(SKIPPED))
    if not resume:
        if complete:
            raise RunFolderError(f"'{run_dir}' already holds a complete run (summary.json). Choose another "
                                 "hydra.run.dir, or delete that folder to run it again.")
        if unfinished:
            raise RunFolderError(f"'{run_dir}' holds an unfinished run. Add resume=true to finish it, or choose "
                                 "another hydra.run.dir.")
        return
    # the configuration the folder's run was made with: in summary.json, or in the INCOMPLETE marker
    earlier = json.loads((run_dir / SUMMARY).read_text()) if complete else writer.read_status()
    if earlier and config is not None and "config" in earlier:
        before, now = _comparable(earlier["config"]), _comparable(config)
        if before != now:
            changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
            raise RunFolderError(f"'{run_dir}' was started with a different configuration (differs in: "
                                 f"{', '.join(changed)}). Resume with the same overrides, or choose another "
                                 "hydra.run.dir.")


def start_run(writer: RunWriter, n_images: int, resume: bool, config: dict[str, Any] | None) -> list[int]:
    """Mark the folder unfinished and return the image indices still to do (all, unless resuming)."""
    rank = launch_rank()
    if rank == 0:
        check_run_folder(writer.run_dir, resume, config)
    writer.rank = rank
    done: set[int] = set()
    if resume:
        writer.repair_part()
        done = writer.done_indices()
        if done:
            log.info("Resuming %s: %d of %d images already done.", writer.run_dir, len(done & set(range(n_images))),
                     n_images)
    if rank == 0:
        writer.write_status("running", config=config or {})
    return [i for i in range(n_images) if i not in done]


def is_complete(run_dir: str | os.PathLike) -> bool:
    """A run folder is complete when its summary.json exists (it is written last)."""
    return (Path(run_dir) / SUMMARY).is_file()


def read_summary(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The summary.json of a complete run."""
    return json.loads((Path(run_dir) / SUMMARY).read_text())


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) or math.isinf(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, Path):
        return str(value)
    return value
