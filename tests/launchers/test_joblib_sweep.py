"""A real sweep through hydra/launcher=parallel (hydra-joblib-launcher, loky worker processes)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SWEEP = ["-m", "corruption=contrast,motion_blur", "severity=1", "trainer=cpu", "pretrained=false", "logger=csv",
         "save_maps=false", "figures=0", "dataset.num_workers=0", "dataset.source.names=[chelsea,coffee,rocket]"]


def run_evaluate(*overrides: str) -> subprocess.CompletedProcess:
    # One thread everywhere: loky limits its workers to cores / n_jobs threads, and float sums (hence the last
    # digits, and Spearman ranks of near-ties) depend on the thread count.
    env = {**os.environ, "WANDB_SILENT": "true", "HYDRA_FULL_ERROR": "1", "PYTHONUNBUFFERED": "1",
           "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(ROOT / "evaluate.py"), *overrides], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    return result


def cells(sweep: Path) -> dict[str, Path]:
    return {p.parent.name: p.parent for p in sweep.glob("*/summary.json")}


def rows(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def assert_same_results(a: Path, b: Path) -> None:
    """Two runs of one cell (folders a, b) with the same configuration, seed and thread count give the same
    per_image.csv byte for byte, whichever of them found its clean passes in the shared cache: the cache serves
    whole fixed batches only and clean images go through the models in their own pass, so a cache hit returns
    exactly what computing it would."""
    assert (a / "per_image.csv").read_bytes() == (b / "per_image.csv").read_bytes(), (a, b)


def test_parallel_launcher_runs_the_sweep(tmp_path):
    parallel, local = tmp_path / "parallel", tmp_path / "local"
    result = run_evaluate(*SWEEP, "hydra/launcher=parallel", "hydra.launcher.n_jobs=2",
                          f"hydra.sweep.dir={parallel}")
    assert "Damaged" not in result.stdout + result.stderr  # jobs racing on one cache entry never see half of it
    run_evaluate(*SWEEP, f"hydra.sweep.dir={local}")

    done = cells(parallel)
    assert len(done) == 2 and set(done) == set(cells(local))
    assert (parallel / "report.md").is_file()
    assert len(rows(parallel / "summary.csv")) == 2
    hits = misses = 0
    for name, cell in done.items():
        summary = json.loads((cell / "summary.json").read_text())
        assert summary["n_images"] == 3 and not (cell / "INCOMPLETE").exists()
        assert Path(summary["clean_cache"]["dir"]).parent == parallel / ".clean_cache"
        hits += summary["clean_cache"]["hits"]
        misses += summary["clean_cache"]["misses"]
        assert_same_results(cell, cells(local)[name])  # as the same cells run one after another
    assert hits + misses == 6  # the two cells ran at the same time: each image's clean pass hit or computed
