"""Starting and resuming a run folder: refuse to overwrite, check the configuration, list the work left."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from ..errors import RunFolderError
from .atomic import jsonable
from .run_writer import RunWriter
from .schema import INCOMPLETE, PER_IMAGE, SKIPPED, SUMMARY

log = logging.getLogger(__name__)

# Config keys that may change between an interrupted run and its resumption (they do not change results).
RESUME_FREE_KEYS = ("resume", "trainer", "logger", "allow_untrained_fallback", "clean_cache", "corruption_cache",
                    "paths")


def launch_rank() -> int:
    """This process's global rank as its launcher set it (0 for the process the user started)."""
    return int(os.environ.get("RANK") or os.environ.get("LOCAL_RANK") or 0)


def _comparable(config: dict[str, Any] | None) -> dict[str, Any]:
    config = json.loads(json.dumps(jsonable(config or {}), default=str))  # as stored on disk
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
