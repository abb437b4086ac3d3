"""Sweeps end to end: the demo grid, its report, one clean pass per sweep, and resume after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from helpers.cli import ROOT, run_cli

FAST = ["pretrained=false", "logger=none", "trainer.enable_progress_bar=false"]


@pytest.mark.slow
def test_demo_sweep_writes_report_and_runs_clean_pass_once(tmp_path):
    proc = run_cli("evaluate.py", "-m", "+experiment=demo", *FAST, f"hydra.sweep.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summaries = {p.parent.name: json.loads(p.read_text()) for p in tmp_path.glob("*/summary.json")}
    assert len(summaries) == 6  # contrast, motion_blur x severities 0, 1, 3
    summary_csv = pd.read_csv(tmp_path / "summary.csv")
    assert len(summary_csv) == 6
    for row in summary_csv.itertuples():
        cell = json.loads((Path(row.run) / "summary.json").read_text())
        assert (cell["corruption"], cell["severity"]) == (row.corruption, row.severity)
        assert row.mos_mean == cell["metrics"]["quality/mos_mean"]
        assert row.sim_cc_mean == cell["metrics"]["similarity/cc"]
        assert row.flip_rate == cell["metrics"]["robustness/flip_rate"]
    # the clean pass: 4 images computed once for the whole sweep, every other lookup a cache hit
    misses = sum(s["clean_cache"]["misses"] for s in summaries.values())
    hits = sum(s["clean_cache"]["hits"] for s in summaries.values())
    assert (misses, hits) == (4, 5 * 4)
    figures = sorted(p.name for p in (tmp_path / "report_figures").glob("*.png"))
    assert {"overview.png", "mos_vs_accuracy.png", "corruption_contrast.png", "corruption_motion_blur.png"} <= set(
        figures)
    assert any(f.startswith("maps_contrast_") for f in figures)  # the severity grid, one colour scale per row
    report = (tmp_path / "report.md").read_text()
    for name in figures:
        assert name in report
    # the report can be rebuilt from the folder alone
    (tmp_path / "report.md").unlink()
    rebuilt = subprocess.run([sys.executable, "-m", "iqa_saliency.report", str(tmp_path), "--n-boot", "100"],
                             capture_output=True, text=True, timeout=300)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert (tmp_path / "report.md").exists()


@pytest.mark.slow
def test_killed_sweep_resumes_only_missing_cells(tmp_path):
    args = [sys.executable, str(ROOT / "evaluate.py"), "-m", "corruption=contrast,brightness,saturate",
            "severity=1", *FAST, "dataset.source.names=[coffee,rocket]", "figures=0",
            "dataset.num_workers=0", f"hydra.sweep.dir={tmp_path}"]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and len(list(tmp_path.glob("*/summary.json"))) < 1:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the hardest stop: no handler runs
    proc.wait()
    done_before = {p.parent.name: p.stat().st_mtime_ns for p in tmp_path.glob("*/summary.json")}
    assert 1 <= len(done_before) < 3, done_before
    resumed = subprocess.run([*args, "resume=true"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = {p.parent.name: p.stat().st_mtime_ns for p in tmp_path.glob("*/summary.json")}
    assert len(after) == 3
    for name, mtime in done_before.items():
        assert after[name] == mtime  # complete cells were skipped, not redone
    assert "resume=true skips it" in resumed.stdout + resumed.stderr


SWEEP_IN_ONE_PROCESS = """
import gc, sys
gc.disable()  # only explicit collections: what the entry point frees itself
sys.argv = ["evaluate.py", "-m", "corruption=contrast,brightness", "severity=1", "pretrained=false", "logger=none",
            "trainer.enable_progress_bar=false", "figures=0", "save_maps=false", "dataset.source.names=[chelsea]",
            "dataset.num_workers=0", "hydra.sweep.dir=" + sys.argv[1]]
from iqa_saliency.cli.evaluate import main
from iqa_saliency.evaluation.module import EvaluationModule
main()
print("alive", sum(isinstance(o, EvaluationModule) for o in gc.get_objects()))
"""


@pytest.mark.slow  # a fresh Python process per run (imports torch): end to end
def test_a_sweeps_finished_cells_do_not_stay_in_memory(tmp_path):
    """Hydra runs a sweep's cells one after another in one process; each cell's trainer, module and models sit in
    reference cycles: the entry point frees them when the cell ends (about 150 MB a cell otherwise)."""
    proc = subprocess.run([sys.executable, "-c", SWEEP_IN_ONE_PROCESS, str(tmp_path / "sweep")], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "alive 0" in proc.stdout, proc.stdout[-2000:]
