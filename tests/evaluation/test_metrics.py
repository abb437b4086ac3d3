"""Run metrics against numpy computations of the same per-image values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from iqa_saliency.evaluation.metrics import RunMetrics


def _batch(rng, n, labelled=True):
    v = {k: torch.tensor(rng.normal(size=n)) for k in
         ("mos", "mos_clean", "mos_drop", "mos_normalized", "sim_cc", "sim_sim", "sim_kld", "sim_spearman",
          "attr_stability_cc")}
    v["clean_pred_prob"] = torch.tensor(rng.uniform(size=n))
    v["flipped"] = torch.tensor(rng.integers(0, 2, n).astype(float))
    c1 = rng.integers(0, 2, n).astype(float)
    v["correct_top1"] = torch.tensor(c1 if labelled else np.full(n, np.nan))
    v["correct_top5"] = torch.tensor(np.maximum(c1, rng.integers(0, 2, n)) if labelled else np.full(n, np.nan))
    return v


def test_run_metrics_equal_numpy():
    rng = np.random.default_rng(0)
    batches = [_batch(rng, 5), _batch(rng, 3, labelled=False), _batch(rng, 4)]
    batches[0]["sim_cc"][1] = math.nan  # a constant map: ignored, not counted as zero
    m = RunMetrics()
    for b in batches:
        m.update(b)
    out = m.compute()
    cat = {k: np.concatenate([b[k].numpy() for b in batches]) for k in batches[0]}
    assert out["acc/top1"] == pytest.approx(np.nanmean(cat["correct_top1"]))
    assert out["acc/top5"] == pytest.approx(np.nanmean(cat["correct_top5"]))
    assert out["robustness/flip_rate"] == pytest.approx(cat["flipped"].mean())
    assert out["quality/mos_mean"] == pytest.approx(cat["mos"].mean())
    assert out["quality/mos_std"] == pytest.approx(cat["mos"].std(ddof=1))
    assert out["quality/mos_drop"] == pytest.approx(cat["mos_drop"].mean())
    assert out["similarity/cc"] == pytest.approx(np.nanmean(cat["sim_cc"]))
    assert out["n_images"] == 12 and out["n_labeled"] == 9
    want = spearmanr(cat["mos"], cat["clean_pred_prob"]).statistic
    assert out["correlation/mos_vs_clean_pred_prob_spearman"] == pytest.approx(want, abs=1e-5)


def test_unlabelled_run_has_nan_accuracy():
    m = RunMetrics()
    m.update(_batch(np.random.default_rng(1), 4, labelled=False))
    out = m.compute()
    assert math.isnan(out["acc/top1"]) and out["n_labeled"] == 0
