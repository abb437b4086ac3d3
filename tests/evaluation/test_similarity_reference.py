"""The similarity columns (sim_cc, sim_sim, sim_kld, sim_spearman) against the MIT saliency benchmark's formulas,
scipy.stats and a numpy adaptive pooling, on maps chosen so that each part of a definition shows: KL's direction
(P vs Q), SIM's min shift, ties in Spearman's ranks, non-divisible pooling windows, the quality-map variants."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import reference as ref
from scipy import stats

from iqa_saliency.evaluation.similarity import (
    compare_changes,
    compare_maps,
    histogram_sim,
    kld,
    pearson_cc,
    pool_to_grid,
    rank_average,
    select_quality_map,
    spearman,
)

RNG = np.random.default_rng(18)
# Maps far from zero and with different minima: a missing min shift or a swapped direction changes the value.
Q = RNG.gamma(2.0, size=(3, 6, 6)) + np.array([5.0, 0.5, 40.0])[:, None, None]
P = RNG.gamma(0.7, size=(3, 6, 6)) * np.array([1.0, 30.0, 0.01])[:, None, None] - 2.0


def t(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(x, dtype=np.float64))


def test_cc_is_pearson_per_map_pair():
    got = pearson_cc(t(Q), t(P)).numpy()
    want = [stats.pearsonr(q.ravel(), p.ravel()).statistic for q, p in zip(Q, P, strict=True)]
    np.testing.assert_allclose(got, want, rtol=1e-10)


def test_cc_hand_case_and_constant_map():
    # x = [1, 2, 3, 4], y = [2, 1, 4, 3]: centred dot product 3, norms sqrt(5) each -> 0.6
    x = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    y = torch.tensor([[[2.0, 1.0], [4.0, 3.0]]])
    assert pearson_cc(x, y).item() == pytest.approx(0.6, abs=1e-12)
    assert math.isnan(pearson_cc(torch.ones(1, 2, 2), y).item())


def test_sim_matches_mit_definition_with_min_shift():
    got = histogram_sim(t(Q), t(P)).numpy()
    want = [ref.mit_sim(q, p) for q, p in zip(Q, P, strict=True)]
    np.testing.assert_allclose(got, want, rtol=1e-10)


def test_sim_hand_case_needs_the_min_shift():
    # a = [10, 11, 12, 13] -> min-max [0, 1/3, 2/3, 1] -> /2 = [0, 1/6, 1/3, 1/2]
    # b = [10, 13, 11, 12] -> [0, 1/2, 1/6, 1/3]; Σ min = 0 + 1/6 + 1/6 + 1/3 = 2/3.
    # Without the min shift a/Σa = [10, 11, 12, 13]/46 and the intersection would be near 1.
    a = torch.tensor([[[10.0, 11.0], [12.0, 13.0]]])
    b = torch.tensor([[[10.0, 13.0], [11.0, 12.0]]])
    assert histogram_sim(a, b).item() == pytest.approx(2 / 3, abs=1e-12)
    assert histogram_sim(a, a).item() == pytest.approx(1.0, abs=1e-12)
    assert math.isnan(histogram_sim(a, torch.full((1, 2, 2), 3.0)).item())


def test_kld_is_kl_of_quality_from_attribution_mit_formula():
    got = kld(t(Q), t(P)).numpy()
    want = [ref.mit_kld(q, p) for q, p in zip(Q, P, strict=True)]
    np.testing.assert_allclose(got, want, rtol=1e-10)
    swapped = [ref.mit_kld(p, q) for q, p in zip(Q, P, strict=True)]
    assert not np.allclose(got, swapped, rtol=1e-3)  # the maps make the direction matter


def test_kld_direction_against_scipy_entropy():
    # Same argmin in both maps: no zero of P under mass of Q, so the MIT eps is negligible and
    # KL(Q || P) = scipy.stats.entropy(Q, P) (the first argument is the reference distribution).
    q = np.array([0.0, 1.0, 5.0, 2.0, 9.0, 3.0]) + 7.0
    p = np.array([0.0, 4.0, 1.0, 8.0, 2.0, 2.5]) - 1.0
    qn = (q - q.min()) / np.ptp(q)
    pn = (p - p.min()) / np.ptp(p)
    want = stats.entropy(qn / qn.sum(), pn / pn.sum())
    got = kld(t(q.reshape(1, 2, 3)), t(p.reshape(1, 2, 3))).item()
    assert got == pytest.approx(want, rel=1e-9)
    assert got != pytest.approx(stats.entropy(pn / pn.sum(), qn / qn.sum()), rel=1e-3)


def test_kld_hand_case_asymmetric():
    # Q = [0, 1, 2, 3] -> [0, 1/6, 1/3, 1/2]; P = [0, 3, 3, 2] -> [0, 3/8, 3/8, 1/4]  (min-max then /sum)
    # KL(Q||P) = 1/6 log(4/9) + 1/3 log(8/9) + 1/2 log(2)
    q = torch.tensor([[[0.0, 1.0], [2.0, 3.0]]])
    p = torch.tensor([[[0.0, 3.0], [3.0, 2.0]]])
    want = np.log(4 / 9) / 6 + np.log(8 / 9) / 3 + np.log(2) / 2
    assert kld(q, p).item() == pytest.approx(want, rel=1e-9)


def test_kld_where_attribution_is_zero_uses_the_mit_eps():
    # P's min-max zero sits under Q's mass: the MIT code gives Q·log(eps + Q/eps), finite and large.
    q = torch.tensor([[[0.0, 1.0], [1.0, 1.0]]])
    p = torch.tensor([[[1.0, 0.0], [1.0, 1.0]]])
    want = ref.mit_kld(q.numpy()[0], p.numpy()[0])
    assert kld(q, p).item() == pytest.approx(want, rel=1e-9)
    assert 10 < want < 20


def test_spearman_matches_scipy_with_ties_and_nan():
    a = np.round(RNG.normal(size=(4, 5, 5)), 0)  # many ties
    b = np.round(RNG.normal(size=(4, 5, 5)) + 0.5 * a, 1)
    got = spearman(t(a), t(b)).numpy()
    want = [stats.spearmanr(x.ravel(), y.ravel()).statistic for x, y in zip(a, b, strict=True)]
    np.testing.assert_allclose(got, want, rtol=1e-10)
    np.testing.assert_allclose(rank_average(t(a)).numpy(), [stats.rankdata(x.ravel()) for x in a])
    with_nan = a.copy()
    with_nan[1, 0, 0] = np.nan
    ranks = rank_average(t(with_nan)).numpy()
    assert np.isnan(ranks[1]).all() and not np.isnan(ranks[[0, 2, 3]]).any()


def test_rank_average_hand_case():
    x = torch.tensor([[3.0, 1.0, 3.0, 2.0, 3.0, 0.0]])
    # sorted: 0(1) 1(2) 2(3) 3,3,3 (4,5,6 -> 5)
    assert rank_average(x).tolist() == [[5.0, 2.0, 5.0, 3.0, 5.0, 1.0]]


@pytest.mark.parametrize(("shape", "grid"), [((224, 224), 20), ((23, 31), 5), ((7, 9), 4), ((6, 6), 3)])
def test_pool_to_grid_is_adaptive_average_pooling(shape, grid):
    m = RNG.normal(size=(2, *shape))
    got = pool_to_grid(t(m), grid).numpy()
    want = np.stack([ref.adaptive_avg_pool(x, grid) for x in m])
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_compare_maps_pools_the_attribution_then_applies_each_definition():
    quality = RNG.normal(size=(2, 5, 5)) * 3 + 50
    attribution = np.abs(RNG.normal(size=(2, 23, 31)))
    got = compare_maps(t(quality), t(attribution))
    assert set(got) == {"cc", "sim", "kld", "spearman"}
    for i in range(2):
        want = ref.similarities(quality[i], attribution[i])
        for name in ("cc", "sim", "kld", "spearman"):
            assert got[name][i].item() == pytest.approx(want[f"sim_{name}"], rel=1e-9), name


@pytest.mark.parametrize(("peak_clean", "peak_corrupted"), [(10.0, 20.0), (0.5, 0.25)])  # spans above and below 1
def test_change_maps_hand_case(peak_clean, peak_corrupted):
    # quality moved only in the bottom-right cell (by 4); the attribution's peak moved from the top-left pixel to
    # the bottom-right one (and changed scale, which min-max scaling ignores): |Δ attribution| pooled =
    # [[.25, 0], [0, .25]]
    q_clean, q_corr = np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([[1.0, 2.0], [3.0, 0.0]])
    a_clean, a_corr = np.zeros((4, 4)), np.zeros((4, 4))
    a_clean[0, 0], a_corr[3, 3] = peak_clean, peak_corrupted
    got = compare_changes(t(q_clean[None]), t(q_corr[None]), t(a_clean[None]), t(a_corr[None]))
    # CC of [0, 0, 0, 4] and [.25, 0, 0, .25]: 0.5 / (√12 · 0.25) = 1/√3; ranks [2, 2, 2, 4] and
    # [3.5, 1.5, 1.5, 3.5] give the same
    assert got["cc"].item() == pytest.approx(1 / math.sqrt(3), rel=1e-12)
    assert got["spearman"].item() == pytest.approx(1 / math.sqrt(3), rel=1e-12)


def test_change_maps_against_the_restatement_and_undefined_cases():
    rng = np.random.default_rng(3)
    q_clean, q_corr = rng.normal(50, 5, (3, 5, 5)), rng.normal(45, 5, (3, 5, 5))
    a_clean, a_corr = rng.gamma(1.0, size=(3, 17, 13)) * 7, rng.gamma(1.0, size=(3, 17, 13)) - 3
    a_corr[2] = 4.0 * a_clean[2]  # only rescaled (exactly: a power of two), so it did not move: no correlation
    got = compare_changes(t(q_clean), t(q_corr), t(a_clean), t(a_corr))
    for i in range(3):
        want = ref.change_similarity(q_clean[i], q_corr[i], a_clean[i], a_corr[i])
        for key in ("cc", "spearman"):
            if math.isnan(want[f"change_{key}"]):
                assert math.isnan(got[key][i].item())
            else:
                assert got[key][i].item() == pytest.approx(want[f"change_{key}"], rel=1e-9)
    assert math.isnan(ref.change_similarity(q_clean[2], q_corr[2], a_clean[2], a_corr[2])["change_cc"])
    same = compare_changes(t(q_clean), t(q_clean), t(a_clean), t(a_clean))  # a clean run: nothing moved
    assert torch.isnan(same["cc"]).all() and torch.isnan(same["spearman"]).all()


def test_quality_map_variants():
    local = t(RNG.uniform(0, 100, size=(2, 3, 3)))
    clean = t(RNG.uniform(0, 100, size=(2, 3, 3)))
    torch.testing.assert_close(select_quality_map("raw", local, clean), local)
    torch.testing.assert_close(select_quality_map("inverted", local, clean), 100.0 - local)
    torch.testing.assert_close(select_quality_map("drop", local, clean), clean - local)


@pytest.mark.cuda
def test_every_metric_on_cuda_matches_the_references():
    got = {k: v.cpu().numpy() for k, v in compare_maps(t(Q).cuda(), t(P).cuda()).items()}
    for i in range(len(Q)):
        want = ref.similarities(Q[i], P[i])
        for name, values in got.items():
            assert values[i] == pytest.approx(want[f"sim_{name}"], rel=1e-9), name
    moved = {k: v.cpu().numpy() for k, v in compare_changes(t(Q).cuda(), t(Q[::-1].copy()).cuda(), t(P).cuda(),
                                                            t(P[::-1].copy()).cuda()).items()}
    for i in range(len(Q)):
        want = ref.change_similarity(Q[i], Q[::-1][i], P[i], P[::-1][i])
        for name, values in moved.items():
            if math.isnan(want[f"change_{name}"]):  # the middle map against itself: nothing moved
                assert math.isnan(values[i]), name
            else:
                assert values[i] == pytest.approx(want[f"change_{name}"], rel=1e-9), name
