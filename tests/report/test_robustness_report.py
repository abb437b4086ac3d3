"""The attribution checks across a sweep: summary.csv carries each cell's RIS/ROS/deletion/insertion means (from
summary.json) with percentile-bootstrap intervals from the rows (independent restatement), and report.md shows them
in the change section, the AUC columns only when a run computed them."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import reference as ref

from iqa_saliency.report.sweep import Cell, summarize_cells, write_report

COLUMNS = {"attr_ris": "attribution/ris", "attr_ros": "attribution/ros",
           "deletion_auc_clean": "faithfulness/deletion_auc_clean", "deletion_auc": "faithfulness/deletion_auc",
           "insertion_auc_clean": "faithfulness/insertion_auc_clean", "insertion_auc": "faithfulness/insertion_auc"}


def _rows(rng: np.random.Generator, n: int, faithfulness: bool) -> pd.DataFrame:
    rows = pd.DataFrame({"image": [f"i{k}" for k in range(n)], "flipped": rng.integers(0, 2, n),
                         "sim_cc": rng.normal(size=n)})
    for col in COLUMNS:
        rows[col] = rng.lognormal(0, 1, n) if faithfulness or not col.endswith(("auc", "auc_clean")) else np.nan
    rows.loc[rows["flipped"] == 1, ["attr_ris", "attr_ros"]] = np.nan
    return rows


def _metrics(rows: pd.DataFrame) -> dict[str, float | None]:
    means = {key: rows[col].mean() for col, key in COLUMNS.items()}
    return {k: None if math.isnan(v) else float(v) for k, v in means.items()}


def test_summary_means_and_intervals(tmp_path):
    rows = _rows(np.random.default_rng(3), 12, faithfulness=True)
    metrics = {k: (v or 0) + 0.5 for k, v in _metrics(rows).items()}  # summary.json's value is the one reported
    cell = Cell(tmp_path / "fog-2", {"corruption": "fog", "severity": 2, "attribution": "gradcam",
                                     "n_images": 12, "metrics": metrics}, rows)
    out = summarize_cells([cell], n_boot=200, seed=1).iloc[0]
    for col, key in COLUMNS.items():
        assert out[col] == metrics[key], col
        want = ref.percentile_bootstrap(rows[col].astype(float), 200, 1, 0.95)
        assert (out[f"{col}_ci_low"], out[f"{col}_ci_high"]) == pytest.approx(want, rel=1e-12), col


def _write_sweep(root: Path, faithfulness: bool) -> None:
    rng = np.random.default_rng(7)
    for k, (corruption, severity) in enumerate((("none", 0), ("fog", 1), ("fog", 3))):
        run = root / f"{k}_{corruption}_{severity}"
        run.mkdir(parents=True)
        rows = _rows(rng, 10, faithfulness).assign(quality_category="Good", quality_category_clean="Good",
                                                   corruption=corruption, severity=severity)
        rows.to_csv(run / "per_image.csv", index=False)
        (run / "summary.json").write_text(json.dumps({"corruption": corruption, "severity": severity,
                                                      "attribution": "gradcam", "n_images": 10,
                                                      "metrics": _metrics(rows)}))


def test_report_shows_stability_and_only_computed_curves(tmp_path):
    _write_sweep(tmp_path / "with", faithfulness=True)
    text = write_report(tmp_path / "with", n_boot=50).read_text()
    change = text.index("## Do the quality map and the attribution change alike?")
    header = text.index("| RIS [95% CI] | ROS [95% CI] | deletion AUC clean → corrupted [95% CI] | insertion AUC")
    assert change < header < text.index("## Per corruption")
    summary = pd.read_csv(tmp_path / "with" / "summary.csv").set_index(["corruption", "severity"])
    fog3 = summary.loc[("fog", 3)]
    assert (f"| fog | 3 | {fog3.attr_ris:.3f} [{fog3.attr_ris_ci_low:.3f}, {fog3.attr_ris_ci_high:.3f}] | "
            f"{fog3.attr_ros:.3f} [") in text
    assert f"| {fog3.deletion_auc_clean:.3f} → {fog3.deletion_auc:.3f} [{fog3.deletion_auc_ci_low:.3f}, " in text

    _write_sweep(tmp_path / "without", faithfulness=False)
    text = write_report(tmp_path / "without", n_boot=50).read_text()
    assert "| RIS [95% CI] | ROS [95% CI] |\n" in text and "deletion AUC" not in text
