"""summary.json's metrics from per-image rows (summarize_rows / RunMetrics / MeanStd) against numpy and scipy:
NaN-ignoring means per column under the right key, sample standard deviation, counts of images and of labelled
images, Spearman MOS↔clean_pred_prob (scipy) only from three images on."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from iqa_saliency.evaluation.metrics import MeanStd, summarize_rows

# per-image column -> summary.json key, written out from docs/outputs.md/summary.json, not imported
KEYS = {
    "correct_top1": "acc/top1", "correct_top5": "acc/top5", "flipped": "robustness/flip_rate",
    "mos_clean": "quality/mos_clean_mean", "mos_drop": "quality/mos_drop",
    "mos_normalized": "quality/mos_normalized_mean", "sim_cc": "similarity/cc", "sim_sim": "similarity/sim",
    "sim_kld": "similarity/kld", "sim_spearman": "similarity/spearman",
    "attr_stability_cc": "attribution/stability_cc", "quality_stability_cc": "quality/stability_cc",
    "change_cc": "change/cc", "change_spearman": "change/spearman", "sim_cc_clean": "similarity/cc_clean",
    "confidence_drop": "robustness/confidence_drop",
}
# the attribution checks' columns (evaluation.attribution_checks), averaged like the others
CHECK_KEYS = {"attr_ris": "attribution/ris", "attr_ros": "attribution/ros",
              "deletion_auc_clean": "faithfulness/deletion_auc_clean", "deletion_auc": "faithfulness/deletion_auc",
              "insertion_auc_clean": "faithfulness/insertion_auc_clean", "insertion_auc": "faithfulness/insertion_auc"}


def _rows(n: int, seed: int = 0) -> tuple[list[dict[str, str]], dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    cols = {c: rng.normal(loc=i, scale=1 + i, size=n) for i, c in enumerate(KEYS)}  # a distinct mean per column
    cols["mos"] = rng.normal(40, 5, size=n)
    cols["clean_pred_prob"] = rng.uniform(size=n)
    cols["correct_top1"] = rng.integers(0, 2, n).astype(float)
    cols["correct_top5"] = np.maximum(cols["correct_top1"], rng.integers(0, 2, n))
    cols["flipped"] = rng.integers(0, 2, n).astype(float)
    cols["correct_top1"][[1, 4]] = np.nan  # unlabelled images
    cols["correct_top5"][[1, 4]] = np.nan
    cols["sim_cc"][2] = np.nan  # a constant map
    rows = [{c: ("" if np.isnan(v[i]) else repr(float(v[i]))) for c, v in cols.items()} for i in range(n)]
    return rows, cols


def test_summary_means_std_counts_and_spearman():
    rows, cols = _rows(9)
    out = summarize_rows(rows)
    for col, key in KEYS.items():
        assert out[key] == pytest.approx(np.nanmean(cols[col]), rel=1e-12), key
    assert out["quality/mos_mean"] == pytest.approx(np.mean(cols["mos"]), rel=1e-12)
    assert out["quality/mos_std"] == pytest.approx(np.std(cols["mos"], ddof=1), rel=1e-9)
    assert out["n_images"] == 9
    assert out["n_labeled"] == 7
    rho = stats.spearmanr(cols["mos"], cols["clean_pred_prob"]).statistic
    assert out["correlation/mos_vs_clean_pred_prob_spearman"] == pytest.approx(rho, rel=1e-6)


def test_hand_case_two_of_three_labelled():
    rows = [
        {"mos": "10", "clean_pred_prob": "0.9", "correct_top1": "1", "correct_top5": "1", "flipped": "0"},
        {"mos": "20", "clean_pred_prob": "0.5", "correct_top1": "0", "correct_top5": "1", "flipped": "1"},
        {"mos": "60", "clean_pred_prob": "0.1", "correct_top1": "", "correct_top5": "", "flipped": "1"},
    ]
    out = summarize_rows(rows)
    assert out["acc/top1"] == 0.5
    assert out["acc/top5"] == 1.0
    assert out["robustness/flip_rate"] == pytest.approx(2 / 3)
    assert out["quality/mos_mean"] == pytest.approx(30.0)
    assert out["quality/mos_std"] == pytest.approx(math.sqrt(((-20) ** 2 + 10**2 + 30**2) / 2))
    assert (out["n_images"], out["n_labeled"]) == (3, 2)
    # torchmetrics adds eps=1e-6 to the denominator
    assert out["correlation/mos_vs_clean_pred_prob_spearman"] == pytest.approx(-1.0, abs=1e-5)


def test_spearman_needs_three_images_and_std_two():
    rows = [{"mos": "10", "clean_pred_prob": "0.9", "correct_top1": "1"},
            {"mos": "20", "clean_pred_prob": "0.5", "correct_top1": "1"}]
    out = summarize_rows(rows)
    assert math.isnan(out["correlation/mos_vs_clean_pred_prob_spearman"])
    assert out["quality/mos_std"] == pytest.approx(math.sqrt(50))
    one = summarize_rows(rows[:1])
    assert math.isnan(one["quality/mos_std"]) and one["quality/mos_mean"] == 10.0
    empty = summarize_rows([])
    assert empty["n_images"] == 0 and math.isnan(empty["quality/mos_mean"])


def test_extra_mean_columns():
    rows, cols = _rows(5, seed=3)
    for i, r in enumerate(rows):
        r["sim_cc_qattr"] = "" if i == 0 else str(0.1 * i)
    out = summarize_rows(rows, {"sim_cc_qattr": "similarity/cc_qattr"})
    assert out["similarity/cc_qattr"] == pytest.approx(np.mean([0.1, 0.2, 0.3, 0.4]))


def test_mean_std_streams_and_ignores_nan():
    values = np.array([3.0, np.nan, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0])
    m = MeanStd(sync_on_compute=False)
    m.update(torch.tensor(values[:4]))
    m.update(torch.tensor(values[4:]))
    mean, std = m.compute()
    clean = values[~np.isnan(values)]
    assert mean.item() == pytest.approx(clean.mean(), rel=1e-12)
    assert std.item() == pytest.approx(clean.std(ddof=1), rel=1e-9)


def test_mean_std_merges_across_processes_by_summing():
    # what a multi-process (DDP) run does to each process's state: the sums add up
    parts = [np.array([1.0, 2.0, 3.0]), np.array([10.0, 20.0]), np.array([-4.0])]
    metrics = [MeanStd(sync_on_compute=False) for _ in parts]
    for m, p in zip(metrics, parts, strict=True):
        m.update(torch.tensor(p))
    for other in metrics[1:]:
        metrics[0].merge_state(other)
    mean, std = metrics[0].compute()
    everything = np.concatenate(parts)
    assert mean.item() == pytest.approx(everything.mean(), rel=1e-12)
    assert std.item() == pytest.approx(everything.std(ddof=1), rel=1e-9)


def test_run_metrics_sync_across_processes_unless_told_not_to():
    from iqa_saliency.evaluation.metrics import RunMetrics

    synced, local = RunMetrics(), RunMetrics(sync=False)
    assert synced.mos.sync_on_compute and all(m.sync_on_compute for m in synced.means.values())
    assert synced.n_images.sync_on_compute and synced.mos_vs_confidence.sync_on_compute
    assert not local.mos.sync_on_compute and not any(m.sync_on_compute for m in local.means.values())
    assert not local.n_images.sync_on_compute and not local.mos_vs_confidence.sync_on_compute


def test_run_metrics_stay_float64_when_the_module_is_cast():
    from iqa_saliency.evaluation.metrics import RunMetrics

    m = RunMetrics(sync=False).half()  # Lightning casts the whole LightningModule to its precision
    values = np.array([100000.123456, 100000.654321, 100001.5])
    cols = {"mos": values, "clean_pred_prob": np.array([0.1, 0.2, 0.3]), "correct_top1": np.array([1.0, 0.0, 1.0]),
            "mos_clean": values + 0.001}
    m.update({k: torch.tensor(v) for k, v in cols.items()})
    out = m.compute()
    assert out["quality/mos_mean"] == pytest.approx(values.mean(), rel=1e-12)
    assert out["quality/mos_clean_mean"] == pytest.approx(values.mean() + 0.001, rel=1e-12)
    # sum-of-squares form: float64 cancellation at a 1e5 offset costs ~1e-6 of the std, float16 would lose it all
    assert out["quality/mos_std"] == pytest.approx(values.std(ddof=1), rel=1e-4)


def test_correlations_across_the_images_of_a_run():
    rng = np.random.default_rng(5)
    n = 12
    cols = {"quality_stability_cc": rng.uniform(-1, 1, n), "attr_stability_cc": rng.uniform(-1, 1, n),
            "mos_drop": rng.normal(3, 2, n), "confidence_drop": rng.normal(0.2, 0.1, n),
            "flipped": np.array([0, 1] * 6, dtype=float), "mos": rng.normal(40, 5, n),
            "clean_pred_prob": rng.uniform(size=n)}
    cols["attr_stability_cc"][3] = np.nan  # a constant map: that image leaves the pair out
    rows = [{c: ("" if np.isnan(v[i]) else repr(float(v[i]))) for c, v in cols.items()} for i in range(n)]
    out = summarize_rows(rows)
    keep = ~np.isnan(cols["attr_stability_cc"])
    want = stats.spearmanr(cols["quality_stability_cc"][keep], cols["attr_stability_cc"][keep]).statistic
    assert out["correlation/quality_vs_attr_stability_spearman"] == pytest.approx(want, rel=1e-9)
    want = stats.spearmanr(cols["mos_drop"], cols["confidence_drop"]).statistic
    assert out["correlation/mos_drop_vs_confidence_drop_spearman"] == pytest.approx(want, rel=1e-9)
    # against a 0/1 column Spearman is the rank-biserial form: Pearson of the MOS-drop ranks with the flips
    ranks = stats.rankdata(cols["mos_drop"])
    want = np.corrcoef(ranks, cols["flipped"])[0, 1]
    assert out["correlation/mos_drop_vs_flipped_spearman"] == pytest.approx(want, rel=1e-9)


def test_correlations_across_images_are_undefined_not_zero():
    # no image flipped (a constant column), and only two images have both stabilities
    rows = [{"mos": "40", "clean_pred_prob": "0.5", "flipped": "0", "mos_drop": str(d), "confidence_drop": str(c),
             "quality_stability_cc": q, "attr_stability_cc": a}
            for d, c, q, a in ((1, 0.1, "0.9", "0.8"), (2, 0.3, "0.5", ""), (4, 0.2, "0.1", "0.3"))]
    out = summarize_rows(rows)
    assert math.isnan(out["correlation/mos_drop_vs_flipped_spearman"])
    assert math.isnan(out["correlation/quality_vs_attr_stability_spearman"])
    assert out["correlation/mos_drop_vs_confidence_drop_spearman"] == pytest.approx(0.5)  # hand: ranks 1,2,3 vs 1,3,2


def test_attribution_check_columns_are_averaged_when_the_run_adds_them():
    from iqa_saliency.evaluation.attribution_checks import CHECK_MEAN_COLUMNS

    rng = np.random.default_rng(5)
    rows, _ = _rows(7)
    cols = {c: rng.lognormal(i, 1.0, size=7) for i, c in enumerate(CHECK_KEYS)}
    cols["attr_ris"][[0, 3]] = np.nan  # predictions that flipped
    for i, row in enumerate(rows):
        row.update({c: "" if np.isnan(v[i]) else repr(float(v[i])) for c, v in cols.items()})
    out = summarize_rows(rows, CHECK_MEAN_COLUMNS)
    for col, key in CHECK_KEYS.items():
        assert out[key] == pytest.approx(np.nanmean(cols[col]), rel=1e-12), key
    assert "attribution/ris" not in summarize_rows(rows)  # only a run that computes them reports them
