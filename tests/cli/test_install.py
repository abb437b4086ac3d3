"""The package as a user installs it: a wheel built from the repository, installed (not editable) into a fresh
virtual environment, runs `iqa-evaluate` and a `-m` sweep from a folder that is not the repository.

The venv borrows the dependencies from the test interpreter's site-packages (a path line, so the repository's
editable install stays inactive) to fit a test's time; the full `pip install <repo>` into an empty venv is the
same wheel plus downloads."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from helpers.cli import ROOT

IGNORE = shutil.ignore_patterns(".venv", ".git", "outputs", "multirun", "build", "dist", "*.egg-info",
                                "__pycache__", ".pytest_cache", ".ruff_cache", "bench-out*", "wandb")
FAST = ["pretrained=false", "logger=none", "trainer.enable_progress_bar=false", "figures=0",
        "dataset.num_workers=0"]


def _run(args: list, cwd: Path, env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{args}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.mark.slow
def test_wheel_installs_and_runs_outside_the_repository(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(WANDB_SILENT="true", HYDRA_FULL_ERROR="1")
    src, dist, venv, elsewhere = (tmp_path / n for n in ("src", "dist", "venv", "elsewhere"))
    shutil.copytree(ROOT, src, ignore=IGNORE)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", dist, src],
         tmp_path, env)
    wheel = next(dist.glob("iqa_saliency-*.whl"))
    _run([sys.executable, "-m", "venv", "--without-pip", venv], tmp_path, env)
    python = venv / "bin" / "python"
    purelib = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path,
                   env).stdout.strip()
    Path(purelib, "_borrowed_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q", wheel],
         tmp_path, env)
    elsewhere.mkdir()
    where = _run([python, "-c", "import iqa_saliency.conf as c; print(c.__file__)"], elsewhere, env).stdout
    assert where.startswith(str(venv)), where  # the installed copy, not the repository's
    iqa_evaluate = venv / "bin" / "iqa-evaluate"
    _run([iqa_evaluate, *FAST, "allow_untrained_fallback=true", "dataset.source.names=[chelsea,coffee]"],
         elsewhere, env)
    assert len(list((elsewhere / "outputs" / "evaluate").glob("motion_blur-s2/*/summary.json"))) == 1
    _run([iqa_evaluate, "-m", *FAST, "corruption=contrast,brightness", "severity=1",
          "dataset.source.names=[coffee]", "hydra.sweep.dir=sweep"], elsewhere, env)
    cells = sorted(p.parent.name for p in (elsewhere / "sweep").glob("*/summary.json"))
    assert cells == ["corruption=brightness", "corruption=contrast"]
    assert (elsewhere / "sweep" / "report.md").is_file()
