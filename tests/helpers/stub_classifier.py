"""A classifier whose ranking of classes is known in advance, for end-to-end checks of the per-image columns.

Its logits depend on two image statistics: the high-frequency energy h (mean squared Laplacian response) and the
mean brightness b. The clean samples (full size, or every other pixel) have log h around -8..-2.7, the same under
gaussian_noise severity 3 around -0.5, so the ranking flips between two sets of five classes at log h = THRESHOLD:

* low energy (clean):  CLEAN_TOP5  = [10, 11, 967, 12, 13]   (967 = espresso, the label of the "coffee" sample)
* high energy (noisy): NOISY_TOP5  = [281, 20, 409, 21, 22]  (281 = tabby "chelsea", 409 = analog clock "clock")

so on the chelsea/clock/coffee samples every image flips; chelsea is right at top-1 only when corrupted, clock is in
the corrupted top-5 but not top-1, coffee is in the clean top-5 but not the corrupted one. The other 990 classes
have logit 0. Used through Hydra: ``classifier._target_=helpers.stub_classifier.load`` (tests/ on PYTHONPATH).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

CLEAN_TOP5 = [10, 11, 967, 12, 13]
NOISY_TOP5 = [281, 20, 409, 21, 22]
OFFSETS = [4.0, 3.5, 3.0, 2.5, 2.0]
SLOPE = 2.0
THRESHOLD = -2.2
BRIGHTNESS_WEIGHT = 5.0
NUM_CLASSES = 1000
LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


class EnergyAndImage(nn.Module):
    """(B, 3, H, W) -> (B, 6, H-2, W-2): squared per-channel Laplacian responses, then the image's interior.

    `scale` (1) is a parameter so that the output needs a gradient as a real layer's does."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lap = F.conv2d(x, LAPLACIAN.to(x).expand(3, 1, 3, 3), groups=3)
        return torch.cat([lap.square(), x[:, :, 1:-1, 1:-1]], dim=1) * self.scale


def logits_from_layer(acts: torch.Tensor) -> torch.Tensor:
    """The logits from the layer output: energy and brightness statistics mapped onto the two class sets."""
    u = acts[:, :3].mean(dim=(1, 2, 3)).log() - THRESHOLD
    b = acts[:, 3:].mean(dim=(1, 2, 3))
    out = acts.new_zeros(acts.shape[0], NUM_CLASSES)
    for offset, clean, noisy in zip(OFFSETS, CLEAN_TOP5, NOISY_TOP5, strict=True):
        out[:, clean] = offset - SLOPE * u + BRIGHTNESS_WEIGHT * b
        out[:, noisy] = offset + SLOPE * u + BRIGHTNESS_WEIGHT * b
    return out


class StubNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer4 = nn.Sequential(EnergyAndImage())  # the layer Grad-CAM explains (default_layer finds it)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return logits_from_layer(self.layer4(x))


def load(**_: Any):  # noqa: ANN201
    """Hydra target: a ready Classifier around StubNet with ImageNet's class names."""
    from iqa_saliency.models.classifier import Classifier, imagenet_categories
    from iqa_saliency.models.weights import WeightsIdentity

    return Classifier(model=StubNet().eval(), arch="stub", class_names=imagenet_categories(),
                      weights=WeightsIdentity("untrained"), imagenet_classes=True)
