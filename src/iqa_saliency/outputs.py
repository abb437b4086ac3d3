"""The run folder: per-image rows streamed as batches finish, atomic final files, summary.json last."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .errors import UserError

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
_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: str | os.PathLike, write: Callable[[io.BufferedWriter], None]) -> None:
    """Write through a temporary file in the same folder, then rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
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


class RunWriter:
    """Writes one run folder; each process streams its rows to its own part file."""

    def __init__(self, run_dir: str | os.PathLike, rank: int = 0, columns: list[str] | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.rank = rank
        self.columns = columns or list(PER_IMAGE_COLUMNS)

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
        atomic_write(self.run_dir / relpath, lambda fh: np.savez(fh, **data))

    def save_png(self, relpath: str, image: np.ndarray) -> None:
        """A lossless PNG of an HxWx3 uint8 image, written atomically."""
        atomic_write(self.run_dir / relpath, lambda fh: Image.fromarray(image).save(fh, format="PNG"))

    def merge(self, world_size: int = 1) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
        """Merge every process's parts into per_image.csv and skipped.csv, sorted by image index."""
        merged = []
        for name, columns in ((PER_IMAGE, self.columns), (SKIPPED, SKIPPED_COLUMNS)):
            rows: dict[int, dict[str, str]] = {}
            for rank in range(world_size):
                part = self.part_path(name, rank)
                if part.exists():
                    with open(part, newline="") as fh:
                        for row in csv.DictReader(fh):
                            rows[int(row["index"])] = row  # an image counts once, whichever process saw it
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
            for rank in range(world_size):
                self.part_path(name, rank).unlink(missing_ok=True)

    def write_summary(self, summary: dict[str, Any]) -> None:
        """summary.json, written last: its presence marks a complete run."""
        text = json.dumps(_jsonable(summary), indent=2, sort_keys=False, allow_nan=False)
        atomic_write_text(self.run_dir / SUMMARY, text + "\n")


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
