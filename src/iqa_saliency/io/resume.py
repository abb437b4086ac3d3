"""Starting and resuming a run folder: refuse to overwrite, check the configuration, list the work left."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import RunFolderError
from .atomic import atomic_write_text, jsonable, remove_temporary_files, strict_json
from .run_writer import RunWriter
from .schema import INCOMPLETE, PER_IMAGE, SKIPPED, SUMMARY

log = logging.getLogger(__name__)

# Config keys that may change between an interrupted run and its resumption: none of them changes a number.
# resume itself; logger (where metrics are also sent); allow_untrained_fallback (the weights actually loaded are
# compared instead, see start_run's `identity`); the caches (an entry is keyed by everything that changes its
# content); paths (where caches and outputs go); report (how the sweep report's figures are written).
RESUME_FREE_KEYS = ("resume", "logger", "allow_untrained_fallback", "clean_cache", "corruption_cache", "paths",
                    "report")
# Keys inside a group that may change: DataLoader workers only decode and corrupt (seeded per image), and the
# trainer keys listed change what Lightning prints or logs. Every other trainer key (precision, accelerator,
# devices, strategy, ...) can change the numbers (bf16, another device, another thread count) and is compared.
RESUME_FREE_SUBKEYS = {
    "dataset": ("num_workers",),
    "trainer": ("enable_progress_bar", "enable_model_summary", "enable_checkpointing", "num_sanity_val_steps",
                "log_every_n_steps", "default_root_dir", "logger", "callbacks"),
}
# The dataset a run folder was started on (image ids and file stamps), kept until the run completes.
DATASET_FILE = ".dataset.json"
# Temporary files of interrupted writes are looked for here (and in the run folder itself).
TEMPORARY_FOLDERS = ("maps", "images", "figures", "checkpoints")


def launch_rank() -> int:
    """This process's global rank as its launcher set it (0 for the process the user started)."""
    return int(os.environ.get("RANK") or os.environ.get("LOCAL_RANK") or 0)


def _comparable(config: dict[str, Any] | None) -> dict[str, Any]:
    config = json.loads(json.dumps(jsonable(config or {}), default=str))  # as stored on disk
    config = {k: v for k, v in (config or {}).items() if k not in RESUME_FREE_KEYS}
    for group, free in RESUME_FREE_SUBKEYS.items():
        if isinstance(config.get(group), dict):
            config[group] = {k: v for k, v in config[group].items() if k not in free}
    return config


def _differences(before: dict[str, Any], now: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted names of the keys whose values differ (nested one level, e.g. trainer.precision)."""
    out = []
    for key in sorted(set(before) | set(now), key=str):
        a, b = before.get(key), now.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict) and not prefix:
            out += _differences(a, b, f"{key}.")
        else:
            out.append(f"{prefix}{key}")
    return out


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
    earlier = _read_json(run_dir / SUMMARY) if complete else _read_json(run_dir / INCOMPLETE)
    if earlier and config is not None and "config" in earlier:
        changed = _differences(_comparable(earlier["config"]), _comparable(config))
        if changed:
            raise RunFolderError(f"'{run_dir}' was started with a different configuration (differs in: "
                                 f"{', '.join(changed)}); resuming would mix results of both. Resume with the "
                                 "same overrides, or choose another hydra.run.dir.")


def _read_json(path: Path) -> dict[str, Any] | None:
    """A JSON file of the run folder; None when absent or unreadable (a marker killed mid-write is atomic, but a
    folder copied by hand may not be)."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise RunFolderError(f"'{path}' is unreadable ({exc}). Restore it, or start the run in another "
                             "hydra.run.dir.") from exc


def _check_same_dataset(run_dir: Path, images: list[list[str]], done: dict[int, str]) -> None:
    """Refuse to resume on a dataset that changed since the run started (added, removed or replaced files):
    finished rows are tied to images by position and id, so a changed dataset would mix or lose images."""
    recorded = _read_json(run_dir / DATASET_FILE)
    if recorded is not None:
        before = {image_id: stamp for image_id, stamp in recorded.get("images", [])}
        now = dict(map(tuple, images))
        added = [i for i in now if i not in before]
        removed = [i for i in before if i not in now]
        changed = [i for i in now if i in before and now[i] != before[i]]
        order = not (added or removed or changed) and [i for i, _ in images] != [i for i, _ in recorded["images"]]
    else:  # a folder from an earlier version: the finished rows still name their images
        added = removed = order = []
        changed = [image_id for index, image_id in done.items() if index >= len(images) or images[index][0] != image_id]
    if added or removed or changed or order:
        parts = [f"{len(names)} {what} ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})"
                 for what, names in (("added", added), ("removed", removed), ("changed", changed)) if names]
        raise RunFolderError(f"The dataset changed since '{run_dir}' was started: {'; '.join(parts) or 'new order'}. "
                             "Restore the dataset as it was to resume, or start a new run in another "
                             "hydra.run.dir.")


def start_run(writer: RunWriter, images: int | Sequence[str], resume: bool, config: dict[str, Any] | None,
              stamps: Sequence[str] | None = None, identity: dict[str, Any] | None = None) -> list[int]:
    """Mark the folder unfinished and return the image indices still to do (all, unless resuming).

    `images`: the dataset's image ids in order (or their number); `stamps`: each file's stamp (size and
    modification time), recorded so a resume can tell a changed dataset. Finished rows count only for the image
    they were computed for (index and id); the process that launched the run also deletes the temporary files
    of writes an interrupted attempt left behind. `identity`: what the configuration does not pin down but the
    numbers depend on (the weights actually loaded, the device type, the precision); a resume must match it.
    """
    ids = [str(i) for i in range(images)] if isinstance(images, int) else [str(i) for i in images]
    manifest = [[image_id, stamp] for image_id, stamp in zip(ids, stamps or [""] * len(ids), strict=True)]
    rank = launch_rank()
    if rank == 0:
        check_run_folder(writer.run_dir, resume, config)
        removed = remove_temporary_files(writer.run_dir, TEMPORARY_FOLDERS)
        if removed:
            log.info("Removed %d temporary file(s) of interrupted writes in %s.", removed, writer.run_dir)
    writer.rank = rank
    done: dict[int, str] = {}
    if resume:
        writer.repair_part()
        finished = writer.done_rows()  # reads every finished row's maps once (their CRCs)
        done = finished if isinstance(images, int) else _matching(finished, ids)
        if rank == 0 and not isinstance(images, int):
            _check_same_dataset(writer.run_dir, manifest, finished)
        if rank == 0 and identity is not None:
            _check_same_identity(writer.run_dir, identity)
        if done:
            log.info("Resuming %s: %d of %d images already done.", writer.run_dir, len(done), len(ids))
    writer.identity = jsonable(identity or {})
    if rank == 0:
        if not isinstance(images, int) and (not resume or not (writer.run_dir / DATASET_FILE).exists()):
            atomic_write_text(writer.run_dir / DATASET_FILE, strict_json({"images": manifest}) + "\n")
        writer.write_status("running", config=config or {})
    writer.finished = set(done)
    return [i for i in range(len(ids)) if i not in done]


def _check_same_identity(run_dir: Path, identity: dict[str, Any]) -> None:
    """Refuse a resume whose weights, device type or precision differ from the interrupted attempt's."""
    earlier = (_read_json(run_dir / INCOMPLETE) or {}).get("identity")
    now = json.loads(json.dumps(jsonable(identity), default=str))
    if earlier:
        changed = _differences(earlier, now)
        if changed:
            raise RunFolderError(f"'{run_dir}' was started with other {', '.join(changed)} than this resume has; "
                                 "resuming would mix results of both. Resume where and how the run started, or "
                                 "choose another hydra.run.dir.")


def _matching(done: dict[int, str], ids: list[str]) -> dict[int, str]:
    """The finished rows that belong to the image now at their index."""
    return {i: image_id for i, image_id in done.items() if i < len(ids) and ids[i] == image_id}


def is_complete(run_dir: str | os.PathLike) -> bool:
    """A run folder is complete when its summary.json exists (it is written last)."""
    return (Path(run_dir) / SUMMARY).is_file()


def read_summary(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The summary.json of a complete run."""
    return json.loads((Path(run_dir) / SUMMARY).read_text())
