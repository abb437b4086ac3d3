"""summary.csv, corruption_errors.csv, mCE / relative mCE and the bootstrap intervals against hand-computed cases,
Hendrycks & Dietterich's published AlexNet errors and an independent percentile bootstrap."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import reference as ref
from scipy import stats

from iqa_saliency.report.sweep import (
    ALEXNET_CLEAN_ERROR,
    ALEXNET_ERRORS,
    Cell,
    bootstrap_ci,
    clean_error,
    correlation_across_cells,
    corruption_errors,
    load_cells,
    mean_corruption_error,
    summarize_cells,
    with_clean_points,
)

# --------------------------------------------------------------------------------- the published table


def test_alexnet_errors_are_hendrycks_dietterich_averages():
    assert set(ALEXNET_ERRORS) == set(ref.ALEXNET_ERRORS_BY_SEVERITY)
    for name, per_severity in ref.ALEXNET_ERRORS_BY_SEVERITY.items():
        assert ALEXNET_ERRORS[name] == pytest.approx(np.mean(per_severity), abs=1e-6), name
    assert ALEXNET_CLEAN_ERROR == pytest.approx(ref.ALEXNET_CLEAN_ERROR)


def test_alexnet_errors_match_the_paper_rounded_table():
    # ImageNet-C paper (Hendrycks & Dietterich 2019), AlexNet row of the corruption-error appendix table, in %.
    paper = {"gaussian_noise": 88.6, "shot_noise": 89.4, "impulse_noise": 92.3, "defocus_blur": 82.0,
             "glass_blur": 82.6, "motion_blur": 78.6, "zoom_blur": 79.8, "snow": 86.7, "frost": 82.7,
             "fog": 81.9, "brightness": 56.5, "contrast": 85.3, "elastic_transform": 64.6, "pixelate": 71.8,
             "jpeg_compression": 60.7}
    for name, pct in paper.items():
        assert 100 * ALEXNET_ERRORS[name] == pytest.approx(pct, abs=0.051), name


# ------------------------------------------------------------------------------------------ bootstrap


@pytest.mark.parametrize(("n_boot", "seed", "level"), [(1000, 0, 0.95), (200, 7, 0.9), (500, 3, 0.5)])
def test_bootstrap_ci_is_the_percentile_bootstrap(n_boot, seed, level):
    values = np.random.default_rng(1).exponential(size=23)
    values[[3, 9]] = np.nan
    got = bootstrap_ci(values, n_boot=n_boot, seed=seed, level=level)
    assert got == pytest.approx(ref.percentile_bootstrap(values, n_boot, seed, level), rel=1e-12)


def test_bootstrap_ci_covers_the_normal_interval_for_a_large_sample():
    x = np.random.default_rng(2).normal(3.0, 2.0, size=400)
    lo, hi = bootstrap_ci(x, n_boot=2000, seed=0)
    half = stats.norm.ppf(0.975) * x.std(ddof=1) / math.sqrt(len(x))
    assert lo == pytest.approx(x.mean() - half, abs=0.1 * half)
    assert hi == pytest.approx(x.mean() + half, abs=0.1 * half)
    lo90, hi90 = bootstrap_ci(x, n_boot=2000, seed=0, level=0.90)
    assert lo < lo90 < hi90 < hi


def test_bootstrap_ci_degenerate_cases():
    assert bootstrap_ci([4.0]) == (4.0, 4.0)
    assert bootstrap_ci([np.nan, 2.5, np.nan]) == (2.5, 2.5)
    assert all(math.isnan(v) for v in bootstrap_ci([np.nan]))
    assert all(math.isnan(v) for v in bootstrap_ci([]))


# ------------------------------------------------------------------------------------------ summary.csv


def _cell(tmp: Path, corruption: str, severity: int, metrics: dict, rows: pd.DataFrame, **extra) -> Cell:
    summary = {"corruption": corruption, "severity": severity, "attribution": "gradcam",
               "classifier": {"arch": "resnet18"}, "n_images": len(rows), "metrics": metrics, **extra}
    return Cell(tmp / f"{corruption}-{severity}", summary, rows)


def test_summary_csv_columns_come_from_the_right_metric_and_rows(tmp_path):
    metrics = {"acc/top1": 0.11, "acc/top5": 0.22, "robustness/flip_rate": 0.33, "quality/mos_mean": 44.0,
               "quality/mos_std": 5.5, "quality/mos_drop": 6.6, "quality/mos_normalized_mean": 77.0,
               "attribution/stability_cc": 0.88, "correlation/mos_vs_clean_pred_prob_spearman": -0.99,
               "similarity/cc": 0.123}
    rows = pd.DataFrame({"image": list("abcde"), "sim_cc": [0.1, 0.2, np.nan, 0.4, 0.3],
                         "sim_kld": [1.0, 2.0, 4.0, 8.0, 16.0]})
    cell = _cell(tmp_path, "fog", 3, metrics, rows, n_skipped=2, n_images=5)
    out = summarize_cells([cell], n_boot=300, seed=5).iloc[0]
    expected = {"acc_top1": 0.11, "acc_top5": 0.22, "flip_rate": 0.33, "mos_mean": 44.0, "mos_std": 5.5,
                "mos_drop": 6.6, "mos_normalized_mean": 77.0, "attr_stability_cc": 0.88,
                "spearman_mos_confidence": -0.99}
    for col, value in expected.items():
        assert out[col] == value, col
    assert (out["corruption"], out["severity"], out["n"], out["n_skipped"]) == ("fog", 3, 5, 2)
    assert out["variant"] == "gradcam · resnet18"
    assert out["sim_cc_mean"] == 0.123  # the cell's own summary value
    assert out["sim_kld_mean"] == pytest.approx(31 / 5)  # not in the summary: the rows' mean
    assert (out["sim_cc_ci_low"], out["sim_cc_ci_high"]) == pytest.approx(
        ref.percentile_bootstrap(rows["sim_cc"], 300, 5, 0.95))
    assert (out["sim_kld_ci_low"], out["sim_kld_ci_high"]) == pytest.approx(
        ref.percentile_bootstrap(rows["sim_kld"], 300, 5, 0.95))
    assert out["run"] == str(cell.path)


def test_summary_csv_order_variant_and_missing_values(tmp_path):
    rows = pd.DataFrame({"image": ["a"], "sim_cc": [0.5]})
    cells = [
        _cell(tmp_path, "snow", 2, {}, rows),
        _cell(tmp_path, "fog", 5, {"acc/top1": 0.4}, rows),
        _cell(tmp_path, "fog", 1, {}, rows, weights={"classifier": {"name": "resnet18:IMAGENET1K_V1"}}),
        _cell(tmp_path, "brightness", 4, {}, rows),
    ]
    del cells[3].summary["n_images"]
    out = summarize_cells(cells)
    assert list(zip(out["variant"], out["corruption"], out["severity"], strict=True)) == [
        ("gradcam · resnet18", "brightness", 4), ("gradcam · resnet18", "fog", 5), ("gradcam · resnet18", "snow", 2),
        ("gradcam · resnet18:IMAGENET1K_V1", "fog", 1)]
    assert out.loc[1, "acc_top1"] == 0.4 and math.isnan(out.loc[0, "acc_top1"])
    assert out.loc[0, "n"] == 1 and out.loc[0, "n_skipped"] == 0
    assert summarize_cells([]).empty


def test_load_cells_reads_complete_visible_cells(tmp_path):
    for name in ("0_a", "1_b", ".clean_cache/x"):
        run = tmp_path / name
        run.mkdir(parents=True)
        (run / "summary.json").write_text(json.dumps({"corruption": "fog", "severity": 1}))
        (run / "per_image.csv").write_text("image,sim_cc\nx,0.5\n")
    (tmp_path / "2_c").mkdir()
    (tmp_path / "2_c" / "summary.json").write_text("{}")  # no per_image.csv: not complete
    cells = load_cells(tmp_path)
    assert [c.path.name for c in cells] == ["0_a", "1_b"]
    assert cells[0].rows["sim_cc"].tolist() == [0.5]


def test_correlation_across_cells_is_scipy():
    df = pd.DataFrame({"mos_mean": [1.0, 2.0, 3.0, 4.0, 5.0, np.nan], "acc_top1": [0.1, 0.5, 0.2, 0.9, 0.7, 0.3]})
    out = correlation_across_cells(df)
    x, y = df["mos_mean"][:5], df["acc_top1"][:5]
    assert out["n"] == 5
    assert out["spearman"] == pytest.approx(stats.spearmanr(x, y).statistic)
    assert out["spearman_p"] == pytest.approx(stats.spearmanr(x, y).pvalue)
    assert out["pearson"] == pytest.approx(stats.pearsonr(x, y).statistic)
    assert out["pearson_p"] == pytest.approx(stats.pearsonr(x, y).pvalue)
    assert math.isnan(correlation_across_cells(df.iloc[:2])["spearman"])
    flat = df.assign(acc_top1=0.5)
    assert math.isnan(correlation_across_cells(flat)["pearson"])


# ---------------------------------------------------------------------------------- clean error and mCE


def test_clean_error_counts_clean_predictions_once_per_labelled_image(tmp_path):
    a = pd.DataFrame({"image": ["i1", "i2", "i3", "i4"], "label": [1, 2, 3, np.nan], "clean_pred": [1, 5, 3, 7],
                      "pred": [9, 9, 9, 9]})
    b = pd.DataFrame({"image": ["i1", "i2", "i5"], "label": [1, 2, 4], "clean_pred": [1, 5, 0], "pred": [1, 2, 4]})
    cells = [_cell(tmp_path, "fog", 1, {}, a), _cell(tmp_path, "fog", 2, {}, b)]
    # labelled distinct images i1 i2 i3 i5, wrong clean predictions i2 and i5
    assert clean_error(cells) == pytest.approx(2 / 4)
    assert math.isnan(clean_error([_cell(tmp_path, "fog", 1, {}, pd.DataFrame({"image": ["x"]}))]))


def _grid(acc: dict[str, list[float]], extra: list[tuple[str, int, float]] = ()) -> pd.DataFrame:
    recs = [{"corruption": c, "severity": s, "acc_top1": a, "variant": "v"}
            for c, accs in acc.items() for s, a in enumerate(accs, start=1)]
    recs += [{"corruption": c, "severity": s, "acc_top1": a, "variant": "w"} for c, s, a in extra]
    return pd.DataFrame(recs)


def test_corruption_errors_pair_each_corruption_with_its_own_alexnet_errors():
    acc = {"zoom_blur": [0.9, 0.8, 0.7, 0.6, 0.5], "brightness": [0.95, 0.9, 0.9, 0.85, 0.8],
           "gaussian_noise": [0.5, 0.4, 0.3, 0.2, 0.1]}
    clean = 0.08
    table = corruption_errors(_grid(acc), clean).set_index("corruption")
    assert set(table.index) == set(acc)
    for name, accs in acc.items():
        errors = {s: 1 - a for s, a in enumerate(accs, start=1)}
        alex = ref.ALEXNET_ERRORS_BY_SEVERITY[name]
        assert table.loc[name, "error_mean"] == pytest.approx(np.mean(list(errors.values())))
        assert table.loc[name, "ce"] == pytest.approx(ref.corruption_error(errors, alex), rel=1e-5)
        assert table.loc[name, "relative_ce"] == pytest.approx(
            ref.relative_corruption_error(errors, clean, alex), rel=1e-5)
    # hand value for zoom_blur: errors sum to 1.5; AlexNet's five errors sum to 5 x 0.79836
    assert table.loc["zoom_blur", "ce"] == pytest.approx(1.5 / 3.9918, rel=1e-5)
    assert table.loc["zoom_blur", "relative_ce"] == pytest.approx((1.5 - 5 * 0.08) / (3.9918 - 5 * 0.435), rel=1e-5)


def test_corruption_errors_need_all_five_severities_and_average_variants():
    acc = {"fog": [0.9, 0.8, 0.7, 0.6, 0.5], "snow": [0.9, 0.8, 0.7, 0.6]}  # snow lacks severity 5
    extra = [("fog", 2, 0.6), ("fog", 0, 0.0), ("frost", 1, 0.5)]  # a second variant; severity 0 is not counted
    table = corruption_errors(_grid(acc, extra), 0.1)
    assert table["corruption"].tolist() == ["fog"]
    errors = {1: 0.1, 2: 1 - (0.8 + 0.6) / 2, 3: 0.3, 4: 0.4, 5: 0.5}
    assert table.loc[0, "ce"] == pytest.approx(ref.corruption_error(errors, ref.ALEXNET_ERRORS_BY_SEVERITY["fog"]),
                                               rel=1e-5)
    with_nan = _grid({"fog": [0.9, 0.8, np.nan, 0.6, 0.5]})
    assert corruption_errors(with_nan, 0.1).empty
    assert list(corruption_errors(with_nan, 0.1).columns) == ["corruption", "error_mean", "ce", "relative_ce"]


def test_mce_and_relative_mce_are_percent_means_over_corruptions():
    acc = {"fog": [0.9, 0.8, 0.7, 0.6, 0.5], "contrast": [0.7, 0.6, 0.5, 0.4, 0.2]}
    clean = 0.2
    table = corruption_errors(_grid(acc), clean)
    out = mean_corruption_error(table)
    ces, rces = [], []
    for name, accs in acc.items():
        errors = {s: 1 - a for s, a in enumerate(accs, start=1)}
        ces.append(ref.corruption_error(errors, ref.ALEXNET_ERRORS_BY_SEVERITY[name]))
        rces.append(ref.relative_corruption_error(errors, clean, ref.ALEXNET_ERRORS_BY_SEVERITY[name]))
    assert out["mce"] == pytest.approx(100 * np.mean(ces), rel=1e-5)
    assert out["relative_mce"] == pytest.approx(100 * np.mean(rces), rel=1e-5)
    assert out["n_corruptions"] == 2
    empty = mean_corruption_error(table.iloc[:0])
    assert math.isnan(empty["mce"]) and math.isnan(empty["relative_mce"]) and empty["n_corruptions"] == 0


def test_alexnet_itself_scores_100():
    # AlexNet's own per-severity errors give CE = relative CE = 100% for every corruption.
    acc = {name: [1 - e for e in errs] for name, errs in ref.ALEXNET_ERRORS_BY_SEVERITY.items()}
    out = mean_corruption_error(corruption_errors(_grid(acc), ref.ALEXNET_CLEAN_ERROR))
    assert out["mce"] == pytest.approx(100.0, abs=1e-3)
    assert out["relative_mce"] == pytest.approx(100.0, abs=1e-3)
    assert out["n_corruptions"] == 15


def test_with_clean_points_copies_clean_cells_to_each_corruption():
    df = pd.DataFrame([
        {"corruption": "none", "severity": 0, "variant": "v", "acc_top1": 0.9},
        {"corruption": "fog", "severity": 1, "variant": "v", "acc_top1": 0.7},
        {"corruption": "snow", "severity": 0, "variant": "v", "acc_top1": 0.85},
        {"corruption": "snow", "severity": 2, "variant": "v", "acc_top1": 0.5},
    ])
    out = with_clean_points(df)
    assert list(zip(out["corruption"], out["severity"], out["acc_top1"], strict=True)) == [
        ("fog", 0, 0.9), ("fog", 1, 0.7), ("snow", 0, 0.85), ("snow", 2, 0.5)]


# ------------------------------------------------------------------------------------------ edge cases


def test_defaults_are_1000_resamples_seed_0_and_95_percent(tmp_path):
    values = np.random.default_rng(4).normal(size=17)
    assert bootstrap_ci(values) == pytest.approx(ref.percentile_bootstrap(values, 1000, 0, 0.95), rel=1e-12)
    rows = pd.DataFrame({"image": [str(i) for i in range(17)], "sim_cc": values})
    out = summarize_cells([_cell(tmp_path, "fog", 1, {}, rows)]).iloc[0]
    assert (out["sim_cc_ci_low"], out["sim_cc_ci_high"]) == pytest.approx(
        ref.percentile_bootstrap(values, 1000, 0, 0.95), rel=1e-12)


def test_bootstrap_ci_of_two_values_resamples():
    got = bootstrap_ci([1.0, 3.0], n_boot=400, seed=2)
    assert got == pytest.approx(ref.percentile_bootstrap([1.0, 3.0], 400, 2, 0.95))
    assert got[0] < got[1]


def test_summary_csv_attribution_n_and_index(tmp_path):
    rows = pd.DataFrame({"image": ["a", "b"], "sim_cc": [0.5, 0.6]})
    cells = [_cell(tmp_path, "snow", 2, {}, rows, n_images=7), _cell(tmp_path, "fog", 1, {}, rows, n_images=9)]
    cells[0].summary["attribution"] = "saliency"  # sorts after gradcam: the rows swap
    out = summarize_cells(cells, n_boot=10)
    assert out["n"].tolist() == [9, 7]  # summary.json's count (skipped images aside), not len(rows)
    assert out["attribution"].tolist() == ["gradcam", "saliency"]
    assert out.index.tolist() == [0, 1]


def test_correlation_edges():
    three = pd.DataFrame({"mos_mean": [1.0, 2.0, 3.0], "acc_top1": [0.2, 0.1, 0.5]})
    assert correlation_across_cells(three)["pearson"] == pytest.approx(
        stats.pearsonr(three["mos_mean"], three["acc_top1"]).statistic)
    two_values = pd.DataFrame({"mos_mean": [1.0, 1.0, 2.0, 2.0], "acc_top1": [0.5, 0.5, 0.7, 0.9]})
    assert correlation_across_cells(two_values)["spearman"] == pytest.approx(
        stats.spearmanr(two_values["mos_mean"], two_values["acc_top1"]).statistic)
    swapped = two_values.rename(columns={"mos_mean": "acc_top1", "acc_top1": "mos_mean"})
    assert correlation_across_cells(swapped)["spearman"] == pytest.approx(
        stats.spearmanr(two_values["mos_mean"], two_values["acc_top1"]).statistic)
    one_constant = pd.DataFrame({"mos_mean": [1.0, 2.0, 3.0], "acc_top1": [0.5, 0.5, 0.5]})
    out = correlation_across_cells(one_constant)
    assert set(out) == {"n", "spearman", "spearman_p", "pearson", "pearson_p"} and out["n"] == 3
    assert all(math.isnan(out[k]) for k in ("spearman", "spearman_p", "pearson", "pearson_p"))


def test_clean_error_is_an_error_not_an_accuracy_and_one_row_per_image(tmp_path):
    a = pd.DataFrame({"image": ["i1", "i2", "i3", "i4"], "label": [1, 2, 3, 4], "clean_pred": [1, 0, 0, 0]})
    b = pd.DataFrame({"image": ["i1"], "label": [1], "clean_pred": [5]})  # the same image again: counted once
    assert clean_error([_cell(tmp_path, "fog", 1, {}, a), _cell(tmp_path, "fog", 2, {}, b)]) == pytest.approx(3 / 4)


def test_corruption_errors_ignore_missing_values_in_other_columns():
    grid = _grid({"fog": [0.9, 0.8, 0.7, 0.6, 0.5]}).assign(mos_std=[np.nan, 1.0, 2.0, 3.0, 4.0])
    table = corruption_errors(grid, 0.1)
    assert table["corruption"].tolist() == ["fog"]


def test_load_cells_reads_summary_and_blank_cells_as_nan(tmp_path):
    run = tmp_path / "0_a"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps({"corruption": "fog", "severity": 1, "metrics": {"acc/top1": 0.5}}))
    (run / "per_image.csv").write_text("image,sim_cc,label\nx,,3\ny,0.5,\n")
    (cell,) = load_cells(tmp_path)
    assert cell.summary == {"corruption": "fog", "severity": 1, "metrics": {"acc/top1": 0.5}}
    assert math.isnan(cell.rows["sim_cc"][0]) and math.isnan(cell.rows["label"][1])


def test_with_clean_points_index_is_fresh():
    df = pd.DataFrame([
        {"corruption": "snow", "severity": 2, "variant": "v", "acc_top1": 0.5},
        {"corruption": "none", "severity": 0, "variant": "v", "acc_top1": 0.9},
        {"corruption": "fog", "severity": 1, "variant": "v", "acc_top1": 0.7},
    ])
    out = with_clean_points(df)
    assert out.index.tolist() == list(range(len(out)))


def test_mce_is_computed_per_classifier_and_never_pooled(tmp_path):
    """Two classifiers in one sweep: each gets its own CE table and mCE (hand-computed), the pooled mCE is NaN."""
    from iqa_saliency.report.sweep import errors_by_classifier, summarize_cells

    accs = {"r18": [0.9, 0.8, 0.7, 0.6, 0.5], "r50": [0.95, 0.9, 0.85, 0.8, 0.75]}
    clean_preds = {"r18": [0, 9], "r50": [0, 1]}  # labels 0, 1: clean error 1/2 for r18, 0 for r50
    cells = []
    for name, acc in accs.items():
        rows = pd.DataFrame({"image": ["i1", "i2"], "label": [0, 1], "clean_pred": clean_preds[name]})
        for severity, a in enumerate(acc, start=1):
            cells.append(_cell(tmp_path / name, "zoom_blur", severity, {"acc/top1": a}, rows,
                               weights={"classifier": {"name": name}}))
    table, mce = errors_by_classifier(summarize_cells(cells, n_boot=10), cells)
    assert table.columns[0] == "classifier" and sorted(table["classifier"]) == ["r18", "r50"]
    alex = 5 * 0.79836  # zoom_blur's AlexNet errors summed over the five severities
    for name, clean in (("r18", 0.5), ("r50", 0.0)):
        errors = [1 - a for a in accs[name]]
        got = mce["by_classifier"][name]
        assert got["mce"] == pytest.approx(100 * sum(errors) / alex, rel=1e-5)
        assert got["relative_mce"] == pytest.approx(100 * (sum(errors) - 5 * clean) / (alex - 5 * 0.435), rel=1e-5)
    assert math.isnan(mce["mce"]) and math.isnan(mce["relative_mce"])
    single, single_mce = errors_by_classifier(summarize_cells(cells[:5], n_boot=10), cells[:5])
    assert "classifier" not in single.columns and single_mce == mce["by_classifier"]["r18"]
