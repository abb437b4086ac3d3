"""The run lock: one process at a time writes a run folder (an advisory lock on `<run>/.lock`)."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from ..errors import RunFolderError

LOCK = ".lock"

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, the folder checks still apply
    fcntl = None  # type: ignore[assignment]


class RunLock:
    """Held by the process that launched a run (DDP ranks it starts do not take it) until release().

    The lock is `flock` on an open file: the kernel drops it when the holder exits, also after kill -9, so a
    stale lock never blocks a resume. The file keeps the holder's PID and host for the error message.
    """

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.path = Path(run_dir) / LOCK
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        if fcntl is None or self._fd is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise RunFolderError(f"'{self.path.parent}' is in use by {self.holder()}. Wait for that run to end "
                                 "(or stop it), or choose another hydra.run.dir.") from None
        info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, info, 0)
        self._fd = fd
        return self

    def holder(self) -> str:
        """'process PID on HOST' from the lock file (as far as it can be read)."""
        try:
            info = json.loads(self.path.read_text() or "{}")
            return f"process {info['pid']} on {info['host']}"
        except (OSError, ValueError, KeyError):
            return "another process"

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock; the file stays (unlinking it would race a new holder)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
