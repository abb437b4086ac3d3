"""Commands the tool prints for the user to run next, written so that they work when pasted into a shell."""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf

# Overrides the hint sets itself, or that only the sweep callback adds (it adds them again on the next sweep).
_REPLACED = ("resume=", "hydra.run.dir=", "hydra.sweep.dir=", "hydra.mode=",
             "hydra.job.config.override_dirname.exclude_keys=")


def program(default: str = "iqa-evaluate") -> list[str]:
    """How this entry point was started, as words a shell runs from the same folder (`python evaluate.py` or the
    console script); the interpreter by its full path unless `python` on PATH is this one."""
    script = sys.argv[0] if sys.argv else ""
    name = Path(script).name
    if name.endswith(".py") and name != "__main__.py":
        python = "python" if _same_file(shutil.which("python"), sys.executable) else sys.executable
        return [python, script]
    if name.startswith("iqa-"):
        return [name if _same_file(shutil.which(name), script) else script]
    return [default]  # a launcher's worker process (joblib, submitit): the installed command


def _same_file(a: str | None, b: str) -> bool:
    return bool(a) and os.path.realpath(a) == os.path.realpath(b)


def resume_command() -> str:
    """The command that finishes this run (or sweep) in its folder: the original overrides, resume=true and the
    folder. Call inside a Hydra job."""
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    task, hydra_overrides = list(hydra_cfg.overrides.task), list(hydra_cfg.overrides.hydra)
    if multirun:  # the sweep's own overrides (with their commas), not this job's values
        saved = Path(hydra_cfg.sweep.dir) / "multirun.yaml"
        if saved.is_file():
            overrides = OmegaConf.load(saved).hydra.overrides
            task, hydra_overrides = list(overrides.task), list(overrides.hydra)
    kept = [o for o in (*hydra_overrides, *task) if not o.lstrip("+~").startswith(_REPLACED)]
    folder = ("hydra.sweep.dir", hydra_cfg.sweep.dir) if multirun else ("hydra.run.dir", hydra_cfg.runtime.output_dir)
    return shlex.join([*program(), *(["-m"] if multirun else []), *kept, "resume=true", "=".join(folder)])
