"""Sweep report: aggregation, bootstrap intervals, correlations and mCE against independent computations."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from helpers.cli import ROOT
from hydra import compose, initialize_config_dir
from scipy import stats

from iqa_saliency.report.sweep import (
    ALEXNET_CLEAN_ERROR,
    ALEXNET_ERRORS,
    bootstrap_ci,
    clean_error,
    correlation_across_cells,
    corruption_errors,
    load_cells,
    mean_corruption_error,
    summarize_cells,
    with_clean_points,
    write_report,
)


def test_bootstrap_ci_is_the_percentile_interval_of_resampled_means():
    x = np.array([0.1, 0.4, 0.35, 0.8, 0.6, np.nan])
    low, high = bootstrap_ci(x, n_boot=500, seed=3)
    clean = x[~np.isnan(x)]
    assert low <= clean.mean() <= high
    rng = np.random.default_rng(3)
    ref = [clean[rng.integers(0, 5, size=5)].mean() for _ in range(500)]  # one resample at a time
    assert low == pytest.approx(np.quantile(ref, 0.025)) and high == pytest.approx(np.quantile(ref, 0.975))
    assert all(math.isnan(v) for v in bootstrap_ci([np.nan]))  # never a made-up number
    assert bootstrap_ci([0.5]) == (0.5, 0.5)


def test_correlation_equals_scipy():
    df = pd.DataFrame({"mos_mean": [60, 55, 50, 42, 40, np.nan], "acc_top1": [0.8, 0.7, 0.72, 0.5, 0.3, 0.1]})
    out = correlation_across_cells(df)
    pair = df.dropna()
    assert out["n"] == 5
    assert out["spearman"] == pytest.approx(stats.spearmanr(pair["mos_mean"], pair["acc_top1"]).statistic)
    assert out["pearson"] == pytest.approx(stats.pearsonr(pair["mos_mean"], pair["acc_top1"]).statistic)
    assert math.isnan(correlation_across_cells(df.assign(acc_top1=0.0))["spearman"])


def test_mce_hand_computation():
    # made-up errors for two corruptions at severities 1-5, clean error 0.3
    errors = {"contrast": [0.4, 0.5, 0.6, 0.7, 0.8], "fog": [0.35, 0.35, 0.45, 0.55, 0.6]}
    rows = [{"corruption": c, "severity": s + 1, "acc_top1": 1 - e}
            for c, es in errors.items() for s, e in enumerate(es)]
    rows.append({"corruption": "motion_blur", "severity": 1, "acc_top1": 0.5})  # incomplete: not counted
    table = corruption_errors(pd.DataFrame(rows), clean_err=0.3).set_index("corruption")
    # CE_contrast = (0.4+0.5+0.6+0.7+0.8) / (5 * 0.853204) = 3.0 / 4.26602
    assert table.loc["contrast", "ce"] == pytest.approx(3.0 / 4.26602)
    # relative: (3.0 - 5*0.3) / (5 * (0.853204 - 0.435)) = 1.5 / 2.09102
    assert table.loc["contrast", "relative_ce"] == pytest.approx(1.5 / 2.09102)
    assert table.loc["fog", "ce"] == pytest.approx(2.3 / (5 * 0.819324))
    assert "motion_blur" not in table.index
    mce = mean_corruption_error(table.reset_index())
    assert mce["mce"] == pytest.approx(100 * (3.0 / 4.26602 + 2.3 / 4.09662) / 2)
    assert mce["n_corruptions"] == 2
    assert ALEXNET_CLEAN_ERROR == 0.435 and len(ALEXNET_ERRORS) == 15


def _fake_cell(root, name, corruption, severity, metrics, rows):
    d = root / name
    d.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(d / "per_image.csv", index=False)
    (d / "summary.json").write_text(json.dumps({
        "corruption": corruption, "severity": severity, "attribution": "gradcam", "n_images": len(rows),
        "n_skipped": 0, "metrics": metrics, "weights": {"classifier": {"name": "resnet18:IMAGENET1K_V1"}}}))


def test_summary_rows_equal_cell_summaries_and_clean_error(tmp_path):
    rows = [{"image": f"i{k}", "label": k % 3, "clean_pred": 0, "sim_cc": 0.1 * k, "sim_sim": 0.5} for k in range(6)]
    _fake_cell(tmp_path, "0_a", "contrast", 1, {"acc/top1": 0.5, "quality/mos_mean": 61.0, "similarity/cc": 0.25,
                                                "similarity/sim": 0.5}, rows)
    _fake_cell(tmp_path, "1_b", "none", 0, {"acc/top1": 0.9, "quality/mos_mean": 70.0, "similarity/cc": 0.3,
                                            "similarity/sim": 0.5}, rows)
    (tmp_path / ".clean_cache" / "x").mkdir(parents=True)
    cells = load_cells(tmp_path)
    summary = summarize_cells(cells, n_boot=200)
    assert len(summary) == 2
    row = summary[summary.corruption == "contrast"].iloc[0]
    assert row["acc_top1"] == 0.5 and row["mos_mean"] == 61.0 and row["sim_cc_mean"] == 0.25
    assert row["sim_cc_ci_low"] <= 0.25 <= row["sim_cc_ci_high"]
    assert math.isnan(row["flip_rate"])
    assert clean_error(cells) == pytest.approx(4 / 6)  # labels 0,1,2,0,1,2 vs clean_pred 0
    curves = with_clean_points(summary)
    assert set(zip(curves.corruption, curves.severity, strict=True)) == {("contrast", 1), ("contrast", 0)}
    path = write_report(tmp_path, n_boot=50)
    assert path.exists() and (tmp_path / "summary.csv").exists()


@pytest.mark.parametrize(("launcher", "target"), [("parallel", "hydra_plugins.hydra_joblib_launcher"),
                                                   ("slurm", "hydra_plugins.hydra_submitit_launcher")])
def test_launcher_configs_compose(launcher, target):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("evaluate", overrides=[f"hydra/launcher={launcher}", "+experiment=original_study"],
                      return_hydra_config=True)
    assert cfg.hydra.launcher._target_.startswith(target)
    assert cfg.hydra.sweeper.params.severity == "0,1,2,3"
    assert len(cfg.hydra.sweeper.params.corruption.split(",")) == 7


@pytest.mark.parametrize("experiment", ["original_study", "imagenet_c", "demo"])
def test_experiment_configs_name_valid_corruptions(experiment):
    from iqa_saliency.corruption import check_corruption

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("evaluate", overrides=[f"+experiment={experiment}"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    for corruption in params.corruption.split(","):
        for severity in str(params.severity).split(","):
            check_corruption(corruption, int(severity))


def test_sweep_end_reads_each_cell_once_and_writes_the_report_write_report_writes(tmp_path, monkeypatch):
    """The sweep's end (SweepReportCallback) loads the cells once for the report and its wandb step; the files it
    writes are byte for byte those of write_report run on its own."""
    from omegaconf import OmegaConf

    from iqa_saliency.cli.sweep import SweepReportCallback

    rows = [{"image": f"i{k}", "label": k % 3, "clean_pred": 0, "sim_cc": 0.1 * k} for k in range(6)]
    for k, (corruption, severity) in enumerate((("none", 0), ("contrast", 1), ("contrast", 2))):
        _fake_cell(tmp_path, f"{k}_{corruption}", corruption, severity,
                   {"acc/top1": 0.9 - 0.1 * k, "quality/mos_mean": 70.0 - k, "similarity/cc": 0.3}, rows)
    reads = []
    read_csv = pd.read_csv
    monkeypatch.setattr(pd, "read_csv", lambda path, *a, **k: reads.append(str(path)) or read_csv(path, *a, **k))
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}, "print_summary": False,
                               "report": {"format": "png", "dpi": 50}})
    SweepReportCallback().on_multirun_end(config)
    assert sorted(p for p in reads if p.endswith("per_image.csv")) == sorted(
        str(tmp_path / name / "per_image.csv") for name in ("0_none", "1_contrast", "2_contrast"))
    written = {p: p.read_bytes() for p in sorted(tmp_path.glob("*")) + sorted(tmp_path.glob("report_figures/*"))
               if p.is_file()}
    assert {p.name for p in written} >= {"summary.csv", "report.md", "report.json", "change.png"}
    from iqa_saliency.report.style import FigureStyle

    write_report(tmp_path, style=FigureStyle(format="png", dpi=50))
    assert {p: p.read_bytes() for p in written} == written
