"""The stage timers (iqa_saliency.profiling) and the sweep profile built on them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers.cli import ROOT

SCRIPT = """
from iqa_saliency import profiling
profiling.mark("entry")
profiling.add("a", 1.5)
profiling.set_cell("contrast-s1")
profiling.add("a", 2.0)
profiling.add("a", 0.25)
with profiling.stage("b"):
    pass
profiling.set_cell(profiling.OUTSIDE)
profiling.add("a", 1.0)
print(profiling.enabled())
"""


def _run(env):
    return subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60,
                          env={**env, "PYTHONPATH": str(ROOT / "src")})


def test_stages_add_up_per_cell_and_are_written_at_exit(tmp_path):
    out = tmp_path / "profile.json"
    proc = _run({"IQA_PROFILE": str(out)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "True"
    data = json.loads(out.read_text())
    assert data["seconds"]["(sweep)"]["a"] == 2.5 and data["seconds"]["contrast-s1"]["a"] == 2.25
    assert 0 <= data["seconds"]["contrast-s1"]["b"] < 1 and data["marks"]["entry"] > 0


def test_off_by_default_nothing_is_recorded(tmp_path):
    proc = _run({})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


@pytest.mark.slow
def test_profile_splits_a_sweep_and_its_model_time_matches_the_cells_summaries(tmp_path):
    out = tmp_path / "profile.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.profile", "--images", "2", "--corruptions", "contrast",
                           "--severities", "0,1", "--work", str(tmp_path / "work"), "--out", str(out),
                           "--override", "figures=1"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert set(result["cells"]) == {"contrast-s0", "contrast-s1"}
    summaries = {p.parent.name: json.loads(p.read_text())
                 for p in (tmp_path / "work" / "sweep").glob("*/summary.json")}
    for name, summary in summaries.items():
        cell = result["cells"][f"contrast-s{summary['severity']}"]
        # the cell's own record of its model time (summary.json) against the profile's
        assert cell["model compute (quality, classifier, attribution)"] == pytest.approx(summary["model_seconds"],
                                                                                         abs=2e-3), name
        assert cell["cell"] >= summary["seconds"] - 0.5
    assert 0 < result["model_share"] < 1 and result["sweep"]["process start + imports"] > 0
    assert result["speedup_vs_study"] > 0 and result["study_loop"]["model_seconds"] > 0
    assert "| **wall time** |" in proc.stdout
