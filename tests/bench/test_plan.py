"""benchmarks.plan: the estimate's arithmetic by hand, and (slow) its estimate against a measured sweep."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers.cli import ROOT

from benchmarks.plan import MODEL, Costs, Sweep, estimate

COSTS = Costs(clean_model=0.1, corrupted_model=0.2, host=0.05, cell_setup=3.0, process_start=10.0, report=5.0,
              bytes_per_image_cell=1000.0, bytes_per_cell=1e6, clean_cache_bytes_per_image=2000.0)


def test_estimate_by_hand_local_and_slurm():
    # 2 corruptions x severities 0,1,2 = 6 cells (4 corrupted), 100 images, 2 devices
    local = estimate(COSTS, Sweep(2, (0, 1, 2), 1, 100, devices=2, launcher="local"))
    # cells 6 x (3 + 100 x 0.05) = 48; corrupted 4 x 100 x 0.2 = 80; clean 2 devices x 100 x 0.1 = 20; 2 starts = 20
    assert local["cells"] == 6 and local["corrupted_cells"] == 4
    assert local["device_hours"] * 3600 == pytest.approx(168.0)
    assert local["wall_seconds"] == pytest.approx(168.0 / 2 + 5.0)
    assert local["disk_gb"] == pytest.approx((6 * (100 * 1000 + 1e6) + 100 * 2000) / 1e9)
    assert local["model_share"] == pytest.approx(100 / 168)
    slurm = estimate(COSTS, Sweep(2, (0, 1, 2), 1, 100, devices=2, launcher="slurm"))
    assert slurm["device_hours"] * 3600 == pytest.approx(168.0 - 20.0 + 6 * 10.0)  # a process start per cell


def test_costs_from_a_profile_by_hand():
    cell = {MODEL: 2.0, "waiting for data (workers: decode, corrupt)": 1.0, "cell": 10.0}
    profile = {"config": {"images": "4"}, "cells": {"contrast-s0": {**cell, MODEL: 0.8}, "contrast-s1": cell},
               "sweep": {"Hydra: composition, job set-up, callbacks (rest of the sweep)": 2.0,
                         "process start + imports": 7.0, "sweep report + figures": 3.0},
               "disk": {"bytes_per_image_cell": 10.0, "bytes_per_cell_figures": 20.0,
                        "clean_cache_bytes_per_image": 30.0}}
    costs = Costs.from_profile(profile)
    assert costs.clean_model == pytest.approx(0.2) and costs.corrupted_model == pytest.approx(0.5)
    assert costs.host == pytest.approx(2.0 / 8)
    # per cell: (10 - 0.8 - 1) + (10 - 2 - 1) = 15.2, plus Hydra's 2, over 2 cells
    assert costs.cell_setup == pytest.approx(17.2 / 2)
    assert costs.process_start == 7.0 and costs.report == 3.0


def _profile(tmp_path, name, images, *extra):
    out = tmp_path / f"{name}.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.profile", "--images", str(images), "--corruptions",
                           "contrast", "--severities", "0,1,2", "--out", str(out), *extra],
                          cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.slow
def test_estimate_of_a_small_sweep_is_within_a_factor_of_two_of_its_measured_time(tmp_path):
    small = _profile(tmp_path, "small", 4, "--no-study-loop")
    measured = _profile(tmp_path, "measured", 12, "--no-study-loop")
    got = estimate(Costs.from_profile(small), Sweep(1, (0, 1, 2), 1, 12, devices=1, launcher="local"))
    ratio = got["wall_seconds"] / measured["wall_seconds"]
    assert 0.5 <= ratio <= 2.0, (got["wall_seconds"], measured["wall_seconds"])
