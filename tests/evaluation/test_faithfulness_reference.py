"""Deletion/insertion curves and AUCs (evaluation.faithfulness): a classifier whose target probability is known by
construction (hand-computed AUCs), Quantus's PixelFlipping curve on the same model and inputs, and a per-image
numpy restatement (RISE's blurred substrate through scipy) for insertion, chunked or not."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch import nn

from iqa_saliency.evaluation import faithfulness as fa
from iqa_saliency.evaluation.faithfulness import Faithfulness, faithfulness_aucs, perturbation_curves, removal_ranks

# a 4x4 weight map holding 1..16 in a scrambled order
WEIGHTS = torch.tensor([[7.0, 2, 15, 10], [12, 1, 5, 16], [3, 14, 9, 6], [11, 8, 13, 4]])


class WeightedBrightness(nn.Module):
    """p(class 0) = s = Σ w·mean_c(x) / Σ w, p(class 1) = 1 - s (logits log s, log(1 - s)): on a white image, the
    probability is the share of the weight still white."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = (x.mean(dim=1) * WEIGHTS.to(x)).sum(dim=(1, 2)) / WEIGHTS.sum()
        return torch.stack([s.log(), (1 - s).log()], dim=1)


def test_deletion_auc_known_by_construction():
    white = torch.ones(2, 3, 4, 4)
    attribution = torch.stack([WEIGHTS, -WEIGHTS])  # the true importance, and its reverse
    target = torch.zeros(2, dtype=torch.long)
    curves = perturbation_curves(WeightedBrightness(), white, torch.zeros_like(white),
                                 removal_ranks(attribution, (4, 4)), target, steps=4)
    # 4 pixels per step; best first: 16+15+14+13 = 58, then 42, 26, 10 of the 136 removed
    np.testing.assert_allclose(curves[0].numpy(), [1, 78 / 136, 36 / 136, 10 / 136, 0], atol=1e-6)
    np.testing.assert_allclose(curves[1].numpy(), [1, 126 / 136, 100 / 136, 58 / 136, 0], atol=1e-6)
    aucs = faithfulness_aucs(WeightedBrightness(), white, attribution, target, Faithfulness(steps=4))
    # trapezoid over 0, 1/4, ..., 1: 1/4 * (1/2 + 124/136) = 48/136; reversed: 1/4 * (1/2 + 284/136) = 88/136
    np.testing.assert_allclose(aucs["deletion"].numpy(), [48 / 136, 88 / 136], atol=1e-6)
    assert "insertion" not in aucs


def test_attribution_smaller_than_the_input_is_upsampled():
    """A 2x2 map over a 4x4 input: bilinear (align_corners=False) upsampling keeps the quadrant order, so the most
    attributed quadrant's 4 pixels go first."""
    coarse = torch.tensor([[[1.0, 4.0], [2.0, 3.0]]])
    ranks = removal_ranks(coarse, (4, 4)).view(4, 4)
    assert set(ranks[:2, 2:].flatten().tolist()) < set(range(6))  # the top-right quadrant (4) leads
    assert ranks[3, 3] < ranks[3, 0] and ranks[0, 0] == 15  # the corner of the weakest quadrant is last


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                                 nn.Linear(16, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) * 4


def test_deletion_curve_equals_quantus_pixel_flipping():
    quantus = pytest.importorskip("quantus")
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, (3, 3, 8, 6)).astype(np.float32)
    a = rng.normal(size=(3, 8, 6)).astype(np.float32)  # continuous: no ties, so both orders agree
    model = TinyNet().eval()
    target = np.array([0, 3, 4])
    steps = 6  # 8 pixels (24 channel values, Quantus's features) per step
    ours = perturbation_curves(model, torch.from_numpy(x), torch.zeros(3, 3, 8, 6),
                               removal_ranks(torch.from_numpy(a), (8, 6)), torch.from_numpy(target), steps).numpy()
    metric = quantus.PixelFlipping(features_in_step=24, perturb_baseline=0.0, disable_warnings=True)
    theirs = np.array(metric(model=model, x_batch=x, y_batch=target, a_batch=a[:, None], device="cpu",
                             softmax=True, channel_first=True))
    np.testing.assert_allclose(ours[:, 1:], theirs, atol=1e-5)
    with torch.no_grad():
        first = model(torch.from_numpy(x)).softmax(dim=1).numpy()[np.arange(3), target]
    np.testing.assert_allclose(ours[:, 0], first, atol=1e-6)  # the untouched image opens the curve


def _restated_insertion(model: nn.Module, x: np.ndarray, a: np.ndarray, target: np.ndarray, steps: int) -> list:
    """Per image: sort pixels by attribution (descending, ties by index), blur with scipy (sigma 5, radius 5,
    mirrored edges as torchvision pads), insert floor(i * n / steps) pixels, trapezoid over [0, 1]."""
    aucs = []
    for img, attr, t in zip(x, a, target, strict=True):
        blurred = np.stack([ndimage.gaussian_filter(c.astype(np.float64), sigma=5.0, truncate=1.0, mode="mirror")
                            for c in img])
        order = np.argsort(-attr.ravel(), kind="stable")
        n = attr.size
        probs = []
        for i in range(steps + 1):
            keep = np.zeros(n, bool)
            keep[order[: i * n // steps]] = True
            mixed = np.where(keep.reshape(attr.shape)[None], img, blurred)
            with torch.no_grad():
                p = model(torch.from_numpy(mixed[None]).float()).softmax(dim=1)[0, t].item()
            probs.append(p)
        aucs.append(sum((probs[i] + probs[i + 1]) / 2 for i in range(steps)) / steps)
    return aucs


def test_insertion_and_deletion_against_a_restatement_in_chunks(monkeypatch):
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 1, (3, 3, 12, 12)).astype(np.float32)
    a = np.round(rng.uniform(size=(3, 12, 12)), 1).astype(np.float32)  # many ties: broken by pixel index
    target = np.array([1, 2, 0])
    model = TinyNet().eval()
    settings = Faithfulness(steps=7, insertion=True)
    whole = faithfulness_aucs(model, torch.from_numpy(x), torch.from_numpy(a), torch.from_numpy(target), settings)
    monkeypatch.setattr(fa, "IMAGES_PER_PASS", 5)  # 24 (image, step) pairs in 5 passes
    chunked = faithfulness_aucs(model, torch.from_numpy(x), torch.from_numpy(a), torch.from_numpy(target), settings)
    np.testing.assert_allclose(chunked["insertion"].numpy(), whole["insertion"].numpy(), atol=1e-6)
    np.testing.assert_allclose(whole["insertion"].numpy(), _restated_insertion(model, x, a, target, 7), atol=1e-5)
    assert not np.allclose(whole["insertion"].numpy(), whole["deletion"].numpy())
