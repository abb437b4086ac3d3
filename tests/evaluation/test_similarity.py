"""Map similarity metrics against hand-computed values and scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from iqa_saliency.evaluation.similarity import (
    compare_maps,
    histogram_sim,
    kld,
    pearson_cc,
    pool_to_grid,
    rank_average,
    spearman,
)

A = torch.tensor([[[0.0, 1.0], [2.0, 3.0]]])
B = torch.tensor([[[0.0, 2.0], [1.0, 3.0]]])


def test_identical_maps():
    x = torch.rand(3, 5, 5, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(pearson_cc(x, x), torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(histogram_sim(x, x), torch.ones(3, dtype=torch.float64))
    assert kld(x, x).abs().max() < 1e-9
    torch.testing.assert_close(spearman(x, x), torch.ones(3, dtype=torch.float64))


def test_known_pair_hand_values():
    # a = [0,1,2,3], b = [0,2,1,3]: deviations give 4 / (sqrt5*sqrt5) = 0.8
    assert pearson_cc(A, B).item() == pytest.approx(0.8)
    assert spearman(A, B).item() == pytest.approx(0.8)
    # normalised: a -> [0,1/6,1/3,1/2], b -> [0,1/3,1/6,1/2]; min-sum = 1/6 + 1/6 + 1/2
    assert histogram_sim(A, B).item() == pytest.approx(5 / 6)
    # Q=a, P=b: 1/6*log(1/2) + 1/3*log(2) + 1/2*log(1) = log(2)/6
    assert kld(A, B).item() == pytest.approx(math.log(2) / 6, abs=1e-12)


def test_constant_map_gives_nan_not_a_number():
    const = torch.ones(1, 2, 2)
    assert torch.isnan(pearson_cc(A, const)).all()
    assert torch.isnan(histogram_sim(A, const)).all()


def test_spearman_with_ties_matches_scipy():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 4, size=(4, 6, 6)).astype(float)
    b = rng.normal(size=(4, 6, 6))
    got = spearman(torch.tensor(a), torch.tensor(b)).numpy()
    want = [spearmanr(a[i].ravel(), b[i].ravel()).statistic for i in range(4)]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    from scipy.stats import rankdata
    np.testing.assert_allclose(rank_average(torch.tensor(a)).numpy(), rankdata(a.reshape(4, -1), axis=1))


@pytest.mark.parametrize("levels", [2, 7, 1000])  # many ties, some, almost none
def test_rank_average_matches_scipy_on_map_sized_rows(levels):
    from scipy.stats import rankdata

    rng = np.random.default_rng(levels)
    x = rng.integers(0, levels, size=(5, 20, 20)).astype(np.float32) / 3
    x[4] = 1.5  # a constant map: one run of ties
    np.testing.assert_array_equal(rank_average(torch.tensor(x)).numpy(), rankdata(x.reshape(5, -1), axis=1))


def test_rank_average_of_a_row_with_nan_is_nan_as_in_scipy():
    from scipy.stats import rankdata

    x = np.array([[0.3, np.nan, 0.1, 0.3], [0.2, 0.1, 0.1, 0.4]])
    got = rank_average(torch.tensor(x)).numpy()
    assert np.isnan(got[0]).all() and np.isnan(rankdata(x[0])).all()
    np.testing.assert_array_equal(got[1], rankdata(x[1]))


def test_pool_to_grid_is_block_mean():
    x = torch.arange(16 * 16, dtype=torch.float32).reshape(1, 16, 16)
    pooled = pool_to_grid(x, 4)
    want = x.reshape(4, 4, 4, 4).permute(0, 2, 1, 3).reshape(4, 4, 16).mean(-1)
    torch.testing.assert_close(pooled[0], want.double())


def test_compare_maps_pools_attribution_to_quality_grid():
    q = torch.rand(2, 4, 4, generator=torch.Generator().manual_seed(2))
    attr = q.repeat_interleave(8, dim=1).repeat_interleave(8, dim=2)  # 32x32 blocks of the same values
    out = compare_maps(q, attr)
    torch.testing.assert_close(out["cc"], torch.ones(2, dtype=torch.float64))
    assert set(out) == {"cc", "sim", "kld", "spearman"}


def test_quality_map_variants_hand_values():
    from iqa_saliency.errors import ConfigError
    from iqa_saliency.evaluation.similarity import select_quality_map

    local = torch.tensor([[[60.0, 70.0]]])
    clean = torch.tensor([[[65.0, 72.0]]])
    assert select_quality_map("raw", local, clean).tolist() == [[[60.0, 70.0]]]
    assert select_quality_map("inverted", local, clean).tolist() == [[[40.0, 30.0]]]
    assert select_quality_map("drop", local, clean).tolist() == [[[5.0, 2.0]]]
    with pytest.raises(ConfigError, match="raw, inverted, drop"):
        select_quality_map("worse", local, clean)
