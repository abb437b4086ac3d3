"""Atomic, durable file writes and value formatting shared by every file a run writes."""

from __future__ import annotations

import io
import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError

_UMASK = os.umask(0)
os.umask(_UMASK)


# Every temporary file a write leaves behind after a kill ends with this (cleaned at start-up and on resume).
TMP_SUFFIX = ".tmp"


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make a rename or a new file in `folder` durable (a no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a folder; the rename is still atomic
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[io.BufferedWriter], None], durable: bool = True) -> None:
    """Write through a temporary file in the same folder, fsync it, rename it into place and fsync the folder:
    never a half-written file, also after a power cut (durable=False skips both fsyncs)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; final files get the usual mode
        os.replace(tmp, path)
        if durable:
            fsync_dir(path.parent)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def remove_temporary_files(folder: str | os.PathLike, subfolders: tuple[str, ...] = ()) -> int:
    """Delete the temporary files an interrupted write left in `folder` and its `subfolders`; how many."""
    removed = 0
    for sub in ("", *subfolders):
        where = Path(folder) / sub
        if where.is_dir():
            for tmp in where.glob(f".*{TMP_SUFFIX}*"):  # atomic_write's .NAME.XXXX.tmp, save_figure's .NAME.tmp.png
                if tmp.is_file():
                    tmp.unlink(missing_ok=True)
                    removed += 1
    return removed


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
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-") as fh:
            fh.write(b"\0" * 4096)  # a full disk takes an empty file but not a block of data
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        raise UserError(
            f"Cannot write to the output folder '{folder}' ({exc.strerror or exc}). "
            "Choose a writable folder with hydra.run.dir=PATH."
        ) from exc


def strict_json(value: Any, **options: Any) -> str:
    """`value` as strict JSON text (RFC 8259: NaN and infinities written as null, never as the bare `NaN` that
    strict parsers refuse); `options` go to json.dumps. Every JSON file a run writes goes through here."""
    return json.dumps(jsonable(value), allow_nan=False, **options)


def jsonable(value: Any) -> Any:
    """`value` with numpy scalars as Python numbers, NaN/inf as None and paths as text (for json.dumps)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) or math.isinf(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, Path):
        return str(value)
    return value
