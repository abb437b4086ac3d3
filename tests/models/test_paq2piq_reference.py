"""PaQ-2-PiQ's reported numbers against independent restatements: the MOS normalisation and categories of the
standalone inference (mos_normalized, quality_category), the block boxes, and the global score / local map
read off a forward pass done by hand with torchvision's roi_pool (mos, quality maps)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import reference as ref
from torchvision.ops import roi_pool

from iqa_saliency.models.paq2piq import (
    AdaptiveConcatPool2d,
    GridRoIPool,
    PaQ2PiQ,
    ScoreNormalizer,
    block_rois,
    roipool_bins,
)


@pytest.mark.parametrize("mos", [-30.0, 0.0, 30.5, 50.0, 63.2, 71.99, 72.0, 72.01, 75.0, 80.0, 84.4, 90.0, 150.0])
def test_normaliser_is_the_standalone_formula(mos):
    got = ScoreNormalizer()(torch.tensor([mos], dtype=torch.float64)).item()
    assert got == pytest.approx(ref.paq_normalise(mos), abs=1e-9)


def test_normaliser_hand_values():
    n = ScoreNormalizer()
    # below the peak: 72 + 72 (mos - 72) / (3.5 * 7.798...); above: 72 + 28 (mos - 72) / (3.5 * 4.118...)
    assert n(torch.tensor([60.0])).item() == pytest.approx(72 + 72 * -12 / (3.5 * 7.798274017370107), rel=1e-6)
    assert n(torch.tensor([76.0])).item() == pytest.approx(72 + 28 * 4 / (3.5 * 4.118047289170692), rel=1e-6)
    assert n(torch.tensor([0.0, 200.0])).tolist() == pytest.approx([0.0, 99.9])


@pytest.mark.parametrize(("score", "category"), [
    (0.0, "Bad"), (19.99, "Bad"), (20.0, "Poor"), (39.99, "Poor"), (40.0, "Fair"), (59.9, "Fair"), (60.0, "Good"),
    (79.99, "Good"), (80.0, "Excellent"), (99.9, "Excellent"), (100.0, "Excellent")])
def test_categories_are_20_points_each(score, category):
    assert ScoreNormalizer.category(score) == category
    if score < 100:
        assert ref.paq_category(score) == category


def test_category_of_nan_is_blank():
    assert ScoreNormalizer.category(math.nan) == ""


def test_block_rois_whole_image_then_row_major_grid():
    boxes = block_rois(60, 90, grid=3).tolist()
    want = [[0, 0, 90, 60]] + [[30 * j, 20 * i, 30 * (j + 1), 20 * (i + 1)] for i in range(3) for j in range(3)]
    assert boxes == want


def test_adaptive_concat_pool_is_max_then_mean():
    x = torch.randn(2, 3, 5, 7, generator=torch.Generator().manual_seed(0))
    out = AdaptiveConcatPool2d()(x)
    torch.testing.assert_close(out[:, :3, 0, 0], x.amax(dim=(2, 3)))
    torch.testing.assert_close(out[:, 3:, 0, 0], x.mean(dim=(2, 3)))
    out2 = AdaptiveConcatPool2d(2)(x)
    torch.testing.assert_close(out2, torch.cat([torch.nn.AdaptiveMaxPool2d(2)(x), torch.nn.AdaptiveAvgPool2d(2)(x)], 1))


@pytest.mark.parametrize(("height", "width"), [(224, 224), (96, 160), (100, 70)])
def test_grid_pool_equals_torchvision_roi_pool(height, width):
    feats = torch.randn(2, 4, -(-height // 32), -(-width // 32), generator=torch.Generator().manual_seed(1))
    boxes = block_rois(height, width, grid=5)
    bins = roipool_bins(boxes, feats.shape[-2], feats.shape[-1], 1 / 32)
    got = GridRoIPool(bins)(feats)
    index = torch.arange(2, dtype=feats.dtype).repeat_interleave(len(boxes))[:, None]
    want = roi_pool(feats, torch.cat([index, boxes.repeat(2, 1)], dim=1), (2, 2), spatial_scale=1 / 32)
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("fast_pool", [False, True])
def test_forward_global_score_and_local_map_by_hand(fast_pool):
    torch.manual_seed(0)
    model = PaQ2PiQ(grid=4, fast_pool=fast_pool).eval()
    x = torch.rand(2, 3, 96, 128, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out = model(x)
        g, local = model.split(out)
        # by hand: body features, torchvision RoIPool over the whole image and the 4x4 blocks, the head per box
        feats = model.body(x)
        boxes = torch.tensor([[0, 0, 128, 96]] + [[32 * j, 24 * i, 32 * (j + 1), 24 * (i + 1)]
                                                  for i in range(4) for j in range(4)], dtype=torch.float32)
        index = torch.arange(2, dtype=torch.float32).repeat_interleave(17)[:, None]
        pooled = roi_pool(feats, torch.cat([index, boxes.repeat(2, 1)], dim=1), (2, 2), spatial_scale=1 / 32)
        scores = model.head(pooled).view(2, 17)
    torch.testing.assert_close(out, scores, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g, scores[:, 0])
    torch.testing.assert_close(local, scores[:, 1:].reshape(2, 4, 4))
    assert local[1, 2, 3] == scores[1, 1 + 2 * 4 + 3]  # row-major: row 2, column 3
    assert np.isfinite(local.numpy()).all()
