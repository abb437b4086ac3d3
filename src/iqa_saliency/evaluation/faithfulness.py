"""Deletion and insertion curves of an attribution map (Petsiuk et al. 2018, "RISE", BMVC), batched on the model's
device: every step of every image of a batch goes through the classifier in a few forward passes.

Deletion: the most-attributed pixels (the map upsampled bilinearly to the input when smaller) are set to black
(0 in the [0, 1] input, as Quantus's PixelFlipping "black" baseline) in `steps` equal steps; insertion: they are
copied from the image onto its blurred copy (RISE's substrate: a Gaussian blur, 11 px kernel, sigma 5). The curve
is the softmax probability of the explained class after 0, 1/k, ..., k/k of the pixels; its AUC is the trapezoid
rule over the fraction of pixels (in [0, 1]). Deletion: lower is more faithful; insertion: higher. RISE's own code
deletes to 0 in the *normalised* input (the dataset's mean colour); here the classifier normalises inside, so
black is the natural 0. Ties of the map are broken by pixel index (row-major), so the curves are deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.transforms.functional import gaussian_blur

BLUR_KERNEL, BLUR_SIGMA = 11, 5.0  # RISE's insertion substrate
IMAGES_PER_PASS = 64  # perturbed images per classifier forward pass


@dataclass(frozen=True)
class Faithfulness:
    """Whether and how the deletion (and insertion) curves are computed: k = steps, each costing a forward pass."""

    steps: int = 0  # 0: off; k: k + 1 points per curve (0, 1/k, ..., 1 of the pixels), k + 1 forward passes each
    insertion: bool = False  # also the insertion curve (k + 1 more forward passes per image)

    @property
    def enabled(self) -> bool:
        return self.steps > 0


def removal_ranks(attribution: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Each pixel's place (B, H*W) in descending order of the (B, h, w) maps brought to `size` (0 = most
    attributed; equal values in pixel order)."""
    maps = attribution.float()
    if tuple(maps.shape[-2:]) != tuple(size):
        maps = F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    order = torch.sort(maps.flatten(1), dim=1, descending=True, stable=True).indices
    places = torch.arange(order.shape[1], device=order.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, places)


def pixels_changed(steps: int, n_pixels: int) -> torch.Tensor:
    """How many pixels are changed at each of the steps + 1 points: floor(i * n / steps)."""
    return torch.arange(steps + 1, dtype=torch.long) * n_pixels // steps


def perturbation_curves(model: torch.nn.Module, start: torch.Tensor, end: torch.Tensor, ranks: torch.Tensor,
                        target: torch.Tensor, steps: int) -> torch.Tensor:
    """(B, steps + 1) probabilities of `target` for images that are `end` at the most attributed pixels (their
    number: pixels_changed) and `start` elsewhere; all (image, step) pairs in chunks of IMAGES_PER_PASS."""
    b, _, h, w = start.shape
    counts = pixels_changed(steps, h * w).to(start.device)
    image = torch.arange(b, device=start.device).repeat_interleave(steps + 1)
    step = torch.arange(steps + 1, device=start.device).repeat(b)
    ranks = ranks.reshape(b, 1, h, w)
    out = torch.empty(b * (steps + 1), device=start.device, dtype=torch.float64)
    with torch.no_grad():
        for first in range(0, out.numel(), IMAGES_PER_PASS):
            i, s = image[first:first + IMAGES_PER_PASS], step[first:first + IMAGES_PER_PASS]
            batch = torch.where(ranks[i] < counts[s].view(-1, 1, 1, 1), end[i], start[i])
            probs = model(batch).float().softmax(dim=1)
            out[first:first + i.numel()] = probs.gather(1, target[i][:, None])[:, 0].double()
    return out.view(b, steps + 1)


def curve_auc(curves: torch.Tensor) -> torch.Tensor:
    """Area under (B, k + 1) curves sampled at 0, 1/k, ..., 1 (trapezoid rule)."""
    return torch.trapezoid(curves, dx=1.0 / (curves.shape[1] - 1), dim=1)


def faithfulness_aucs(model: torch.nn.Module, x: torch.Tensor, attribution: torch.Tensor, target: torch.Tensor,
                      settings: Faithfulness) -> dict[str, torch.Tensor]:
    """{"deletion": (B,), "insertion": (B,) when asked} AUCs for [0, 1] images x (B, 3, H, W) and their maps."""
    ranks = removal_ranks(attribution, tuple(x.shape[-2:]))
    out = {"deletion": curve_auc(perturbation_curves(model, x, torch.zeros_like(x), ranks, target, settings.steps))}
    if settings.insertion:
        blurred = gaussian_blur(x, [BLUR_KERNEL, BLUR_KERNEL], [BLUR_SIGMA, BLUR_SIGMA])
        out["insertion"] = curve_auc(perturbation_curves(model, blurred, x, ranks, target, settings.steps))
    return out
