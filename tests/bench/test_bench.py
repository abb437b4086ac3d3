"""The throughput benchmark runs end to end on a tiny setting (it prints a ratio; no timing assertion)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_benchmark_runs_on_a_tiny_setting(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.pipeline", "--images", "4", "--baseline-images", "2", "--batch-size", "2",
         "--workers", "1", "--warm-cache", "--out", str(out)],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "pipeline / per-image loop:" in proc.stdout
    results = json.loads(out.read_text())
    names = [t["name"] for t in results["timings"]]
    assert names[0].startswith("per-image loop") and "pipeline end to end (clean pass included)" in names
    assert any(n.startswith("models only, corrupted") for n in names)
    assert results["ratio_sweep_pipeline_vs_loop"] > 0 and results["warm_cache_fraction_of_models_only"] > 0
    assert results["ratio_pipeline_vs_loop"] > 0 and results["memory"]["rss_mib"] > 0
    host = next(t for t in results["timings"] if t["name"].startswith("host bound"))
    assert host["images"] == 4 and results["host_bound_vs_loop"] > 0
    pipeline = next(t for t in results["timings"] if t["name"] == "pipeline end to end (clean pass included)")
    assert 0 < pipeline["model_seconds"] < pipeline["seconds"] and pipeline["host_ms_per_image"] > 0


@pytest.mark.slow
def test_scaling_mode_runs(tmp_path):
    out = tmp_path / "scaling.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.pipeline", "--scaling", "--scaling-images", "2,4", "--scaling-sizes", "64",
         "--scaling-size-images", "2", "--batch-size", "2", "--workers", "0", "--corruption", "contrast",
         "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())["scaling"]
    assert [(r["axis"], r["images"], r["size"]) for r in rows] == [("images", 2, 224), ("images", 4, 224),
                                                                   ("size", 2, 64)]
    assert all(r["run_peak_rss_mib"] > 0 for r in rows if r["axis"] == "images")
