"""Sweep cell folders named by what varies, wandb's folders kept inside a run, progress text (fast, no runs)."""

from __future__ import annotations

import pandas as pd
from omegaconf import OmegaConf

from iqa_saliency.cli import runtime
from iqa_saliency.cli.sweep import cell_dirname, sweep_plan
from iqa_saliency.progress import format_eta
from iqa_saliency.report.sweep import severity_lines


def test_cell_names_are_one_safe_folder():
    assert cell_dirname(3, "corruption=contrast,severity=1") == "corruption=contrast,severity=1"
    assert cell_dirname(0, "+experiment=demo,seed=1") == "experiment=demo,seed=1"
    assert "/" not in cell_dirname(0, "dataset.root=/data/a b/c")
    assert cell_dirname(4, "") == "4"  # nothing varies: the job number
    long = cell_dirname(0, "x=" + "a" * 400)
    assert len(long.encode()) <= 200 and long != cell_dirname(0, "x=" + "a" * 399 + "b")


def test_only_swept_keys_vary():
    cfg = OmegaConf.create({"hydra": {"sweeper": {"params": {"corruption": "contrast,motion_blur",
                                                             "severity": "0,1,3"}},
                                      "overrides": {"task": ["+experiment=demo", "pretrained=false",
                                                             "seed=1,2"]}}})
    swept, constant, total = sweep_plan(cfg)
    assert swept == ["corruption", "severity", "seed"] and constant == ["experiment", "pretrained"]
    assert total == 12


def test_wandb_folders_move_into_the_run_unless_set(tmp_path, monkeypatch):
    for var in runtime.WANDB_DIRS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv(runtime.OURS, raising=False)
    monkeypatch.setenv("WANDB_CACHE_DIR", "/users/choice")
    changed = runtime.keep_wandb_inside(tmp_path / "run1")
    assert set(changed) == {"WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"}
    assert changed["WANDB_DATA_DIR"] == str((tmp_path / "run1" / "wandb" / "data").resolve())
    runtime.keep_wandb_inside(tmp_path / "run2")  # a later run of the same process moves ours, not the user's
    import os

    assert os.environ["WANDB_DATA_DIR"].startswith(str((tmp_path / "run2").resolve()))
    assert os.environ["WANDB_CACHE_DIR"] == "/users/choice"
    monkeypatch.setattr(os, "environ", {k: v for k, v in os.environ.items()})  # a launcher's worker: a fresh process
    runtime.keep_wandb_inside(tmp_path / "cell", ("WANDB_DATA_DIR",))  # with the parent's values in its environment
    assert os.environ["WANDB_DATA_DIR"] == str((tmp_path / "cell" / "wandb" / "data").resolve())
    assert os.environ["WANDB_ARTIFACT_DIR"].startswith(str((tmp_path / "run2").resolve()))


def test_progress_text():
    assert format_eta(0, 6, 0.0) == "0/6 cells"
    assert format_eta(2, 6, 60.0) == "2/6 cells, 30.0 s/cell, about 2 min left"
    assert format_eta(6, 6, 60.0) == "6/6 cells, 10.0 s/cell"


def test_report_panels_have_one_line_per_corruption():
    curves = pd.DataFrame({"variant": ["v"] * 4, "corruption": ["contrast", "contrast", "fog", "fog"],
                           "severity": [0, 2, 0, 1], "acc_top1": [0.9, 0.5, 0.9, float("nan")]})
    assert severity_lines(curves, "acc_top1") == {"contrast": ([0, 2], [0.9, 0.5]), "fog": ([0], [0.9])}
