"""A -m sweep's cell folders and progress (Hydra callback `SweepCallback`, configured in conf/evaluate.yaml).

Cell folders are named by what varies: only the swept keys (a sweeper parameter or a command-line override with
several values) enter `hydra.job.override_dirname`, and the resolver `iqa_cell_dir` turns it into one safe folder
name (no path separators, bounded length), so `-m +experiment=demo pretrained=false` gives `corruption=contrast,
severity=0` instead of `0_+experiment=demo,corruption=contrast,pretrained=False,severity=0`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import sys
import time
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from .. import profiling
from ..io.atomic import atomic_write_text, strict_json
from ..io.schema import SUMMARY
from ..progress import format_eta
from .runtime import keep_wandb_inside

log = logging.getLogger(__name__)

PROGRESS_FILE = ".sweep_progress.json"
MAX_NAME = 200  # bytes; file systems allow 255 per folder name


def cell_dirname(num: Any, override_dirname: Any) -> str:
    """One folder name for a sweep job: its swept overrides, sanitised; the job number when nothing varies.

    Names are unique per set of overrides: where sanitising or shortening changed the text (`dataset.root=/d/x_y`
    and `/d/x/y` both read `dataset.root=_d_x_y`), a digest of the overrides as given is appended."""
    given = re.sub(r"(^|,)[+~]+", r"\1", str(override_dirname or ""))  # +experiment=x -> experiment=x
    name = re.sub(r"[/\\\s:*?\"<>|\ud800-\udfff]+", "_", given)
    name = "".join(c if c.isprintable() else "_" for c in name).strip("._")
    if not name:
        return str(num)
    if name != given or len(name.encode()) > MAX_NAME:
        digest = hashlib.sha1(str(override_dirname).encode(errors="surrogatepass")).hexdigest()[:10]
        name = f"{name.encode()[:MAX_NAME - 11].decode(errors='ignore')}-{digest}"
    return name


if not OmegaConf.has_resolver("iqa_cell_dir"):
    OmegaConf.register_new_resolver("iqa_cell_dir", cell_dirname)


def sweep_plan(config: DictConfig) -> tuple[list[str], list[str], int]:
    """(swept keys, constant keys, number of jobs) of a basic sweep: sweeper params, then the command line."""
    params = config.hydra.sweeper.get("params") or {}
    lines = [f"{k}={v}" for k, v in params.items()] + list(config.hydra.overrides.task)
    values: dict[str, int] = {}
    for override in OverridesParser.create().parse_overrides(lines):
        if override.is_sweep_override() and override.is_discrete_sweep():
            values[override.key_or_group] = len(list(override.sweep_string_iterator()))
        else:
            values[override.key_or_group] = 1
    swept = [k for k, n in values.items() if n > 1]
    constant = [k for k, n in values.items() if n == 1]
    return swept, constant, math.prod(values.values()) if values else 1


class SweepCallback(Callback):
    """Names cell folders by the swept keys, keeps wandb's files in the sweep folder, and logs progress."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        swept, constant, total = sweep_plan(config)
        exclude = list(config.hydra.job.config.override_dirname.exclude_keys or []) + constant
        override = "hydra.job.config.override_dirname.exclude_keys=[" + ",".join(
            "'" + k.replace("'", "\\'") + "'" for k in dict.fromkeys(exclude)) + "]"
        with read_write(config.hydra), open_dict(config.hydra):  # every job is composed with the hydra overrides
            config.hydra.overrides.hydra.append(override)
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if config.get("logger") and "WandbLogger" in str(config.logger.get("_target_", "")):
            keep_wandb_inside(sweep_dir)  # before any job starts (joblib and submitit workers inherit it)
        state = {"total": total, "started": time.time(), "done_at_start": _complete_cells(sweep_dir),
                 "swept": swept}
        atomic_write_text(sweep_dir / PROGRESS_FILE, strict_json(state) + "\n")
        log.info("Sweep of %d cells over %s in %s", total, ", ".join(swept) or "nothing", sweep_dir)

    def on_job_end(self, config: DictConfig, job_return: Any = None, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            state = json.loads((sweep_dir / PROGRESS_FILE).read_text())
        except (OSError, ValueError):
            return  # not a sweep this callback started
        done = _complete_cells(sweep_dir)
        new = done - state["done_at_start"]
        eta = format_eta(new, state["total"] - state["done_at_start"], time.time() - state["started"])
        shown = config.get("trainer") is None or config.trainer.get("enable_progress_bar", True)
        if shown and sys.stderr.isatty():  # like Lightning's bar: quiet in logs and with the bar switched off
            log.info("Sweep: %d/%d cells complete (this session: %s)", done, state["total"], eta)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        # the data workers the cells kept (data.loading.keep_workers); the module is loaded only if a cell ran
        loading = sys.modules.get("iqa_saliency.data.loading")
        if loading is not None:
            loading.release_workers()


class SweepReportCallback(Callback):
    """Writes the sweep's report when a -m sweep ends (the report's modules load only then)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from ..report.style import FigureStyle, StudyFigures
        from ..report.sweep import load_cells, log_report_to_wandb, write_report

        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            with profiling.stage("sweep report + figures"):
                cells = load_cells(sweep_dir)  # every cell's per_image.csv read once, for the report and wandb
                path = write_report(sweep_dir, style=FigureStyle.from_config(config.get("report")),
                                    study=StudyFigures.from_config(config.get("report")), cells=cells)
                log_report_to_wandb(sweep_dir, cells)
            log.info("Sweep report: %s", path)
            if config.get("print_summary", True):
                from ..report.console import sweep_table

                print(sweep_table(sweep_dir), flush=True)
        except Exception:  # the cells' results are on disk; a failed report must not hide them
            log.exception("Writing the sweep report failed; rebuild it with python -m iqa_saliency.report %s",
                          sweep_dir)


def _complete_cells(sweep_dir: Path) -> int:
    return sum(1 for p in sweep_dir.glob(f"*/{SUMMARY}"))
