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


def _by_hand(model: PaQ2PiQ, x: torch.Tensor) -> torch.Tensor:
    """Every box pooled by torchvision's roi_pool and scored by the head, in one batch."""
    h, w = x.shape[-2:]
    g = model.grid
    ys = np.linspace(0, h, g + 1)
    xs = np.linspace(0, w, g + 1)
    boxes = torch.tensor([[0, 0, w, h]] + [[xs[j], ys[i], xs[j + 1], ys[i + 1]] for i in range(g) for j in range(g)],
                         dtype=torch.float32)
    feats = model.body(x)
    index = torch.arange(len(x), dtype=torch.float32).repeat_interleave(len(boxes))[:, None]
    pooled = roi_pool(feats, torch.cat([index, boxes.repeat(len(x), 1)], dim=1), (2, 2), spatial_scale=1 / 32)
    return model.head(pooled).view(len(x), len(boxes))


@pytest.mark.parametrize("fast_pool", [False, True])
def test_full_grid_at_224_with_shared_boxes_then_another_size(fast_pool):
    torch.manual_seed(1)
    model = PaQ2PiQ(fast_pool=fast_pool).eval()
    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(model(x), _by_hand(model, x), rtol=1e-5, atol=1e-5)
        y = torch.rand(1, 3, 160, 256, generator=torch.Generator().manual_seed(4))
        torch.testing.assert_close(model(y), _by_hand(model, y), rtol=1e-5, atol=1e-5)  # its own layout


def test_training_mode_scores_every_box_in_one_batchnorm_batch():
    torch.manual_seed(2)
    model = PaQ2PiQ()  # at 224 px the 401 boxes pool only 198 distinct sets of bins
    for m in model.head:
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        model.eval()
        model(x)  # an eval pass first: its cached rows must not leak into training
        model.train()
        out = model(x)
        model.train()
        want = _by_hand(model, x)
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("pooled", [(2, 2), (2, 3), (3, 1)])
def test_roipool_bins_equal_torchvision_on_arbitrary_boxes(pooled):
    g = torch.Generator().manual_seed(6)
    feats = torch.randn(1, 2, 5, 7, generator=g)
    xy = torch.rand(40, 4, generator=g) * torch.tensor([300.0, 220.0, 300.0, 220.0]) - 30
    boxes = torch.stack([xy[:, 0], xy[:, 1], xy[:, 0] + xy[:, 2].abs() / 3, xy[:, 1] + xy[:, 3].abs() / 3], dim=1)
    boxes = torch.cat([boxes, torch.tensor([[16.0, 16.0, 16.0, 16.0], [48.0, 80.0, 47.0, 79.0],
                                            [208.0, 144.0, 240.0, 176.0], [-50.0, -50.0, -40.0, -40.0]])])
    # boxes outside the map in one direction only, or starting at its bottom edge: empty bins
    boxes = torch.cat([boxes, torch.tensor([[-50.0, 16.0, -40.0, 48.0], [16.0, 300.0, 48.0, 340.0]])])
    bins = roipool_bins(boxes, 5, 7, 1 / 32, pooled)
    got = GridRoIPool(bins)(feats)
    want = roi_pool(feats, torch.cat([torch.zeros(len(boxes), 1), boxes], dim=1), pooled, spatial_scale=1 / 32)
    torch.testing.assert_close(got, want)
    rects = bins.reshape(-1, 4)
    empty = (rects[:, 1] <= rects[:, 0]) | (rects[:, 3] <= rects[:, 2])
    assert torch.equal(rects[empty], torch.zeros_like(rects[empty]))  # an empty bin is [0, 0, 0, 0)
    assert (bins[-2:] == 0).all() and empty.sum() >= 2 * pooled[0] * pooled[1]


def test_roi_pool_keeps_float64_features_exact():
    model = PaQ2PiQ(grid=2).double()
    feats = torch.randn(2, 3, 4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    boxes = block_rois(128, 160, grid=2)
    got = model._roi_pool(feats, boxes)
    index = torch.arange(2, dtype=torch.float64).repeat_interleave(len(boxes))[:, None]
    want = roi_pool(feats, torch.cat([index, boxes.double().repeat(2, 1)], dim=1), (2, 2), spatial_scale=1 / 32)
    assert got.dtype == torch.float64 and torch.equal(got, want)


def test_block_rois_at_fractional_edges():
    got = block_rois(100, 70, grid=3)
    ys, xs = np.linspace(0, 100, 4), np.linspace(0, 70, 4)
    want = [[0, 0, 70, 100]] + [[xs[j], ys[i], xs[j + 1], ys[i + 1]] for i in range(3) for j in range(3)]
    assert got.dtype == torch.float32
    assert torch.equal(got, torch.tensor(np.array(want, dtype=np.float64).astype(np.float32)))


def test_fit_is_the_studys_adapt_from_dir():
    scores = [70.2, 71.9, 72.5, 72.1, 75.0, 60.0, float("nan"), 72.9, 71.2]
    fitted = ScoreNormalizer.fit(scores)
    # integer parts 70 71 72 72 75 60 72 71: 72 is the most common
    left = np.array([70.2, 71.9, 60.0, 71.2])
    right = np.array([72.5, 72.1, 75.0, 72.9])
    assert fitted.peak == 72.0
    assert fitted.std_left == pytest.approx(np.sqrt(np.mean((left - 72) ** 2)), rel=1e-12)
    assert fitted.std_right == pytest.approx(np.sqrt(np.mean((right - 72) ** 2)), rel=1e-12)
    assert (fitted.n_std, fitted.clip_max, fitted.name) == (3.5, 99.9, "fit")
    assert ScoreNormalizer.fit([72.0, 80.5], name="clive").name == "clive"
    at_peak = ScoreNormalizer.fit([72.0, 72.4, 80.0])  # a score equal to the peak belongs to the right side
    assert math.isnan(at_peak.std_left)
    assert at_peak.std_right == pytest.approx(np.sqrt(np.mean(np.array([0.0, 0.4, 8.0]) ** 2)))
    assert ScoreNormalizer.fit([5.5, 9.1, 5.2, 9.7]).peak == 5.0  # a tie: the one met first
    with pytest.raises(ValueError, match="^no scores to fit the normalisation to$"):
        ScoreNormalizer.fit([float("nan")])
