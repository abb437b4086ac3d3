"""Models whose outputs are known by construction, for end-to-end checks of the plumbing (which image reaches
the models, prepared how, and which value lands in which column).

* ``RegionClassifier``: class c's logit is GAIN * (the mean over its region R_c of the channel mix w_c · x, plus
  a bias b_c), on the [0, 1] pixels it is given. Its class order is its own (RULES), not the dataset's folders.
  Its saliency map (|∂ logit_c / ∂x| summed over channels) is GAIN · Σ|w_c| / |R_c| inside R_c and 0 elsewhere.
* ``RegionQuality``: the global score is 40 + 50 · (mean green of the top half); the 20x20 local map is
  100 · the adaptive average pool of the channel mean (the layout PaQ-2-PiQ's forward output has: (B, 1 + 400)).

Both are used through Hydra: ``classifier._target_=helpers.plumbing_models.load_classifier`` and
``quality._target_=helpers.plumbing_models.load_quality`` (tests/ on sys.path). The tests recompute every number
from these definitions in numpy (tests/evaluation/test_plumbing_reference.py), never with this module's code.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

GAIN = 10.0
# (class name, channel weights (R, G, B), region (top, bottom, left, right) as fractions of the input, bias)
RULES: list[tuple[str, tuple[float, float, float], tuple[float, float, float, float], float]] = [
    ("red", (1.0, 0.0, 0.0), (0.0, 0.5, 0.0, 1.0), 0.0),  # top half
    ("green", (0.0, 1.0, 0.0), (0.5, 1.0, 0.0, 1.0), 0.0),  # bottom half
    ("blue", (0.0, 0.0, 1.0), (0.0, 1.0, 0.0, 0.5), 0.0),  # left half
    ("light blue", (0.0, 0.5, 0.5), (0.0, 1.0, 0.5, 1.0), 0.05),  # right half
    ("yellow", (0.5, 0.5, 0.0), (0.25, 0.75, 0.25, 0.75), 0.0),  # centre
    ("grey", (1 / 3, 1 / 3, 1 / 3), (0.0, 1.0, 0.0, 1.0), -0.1),  # everything
    ("dark", (-1 / 3, -1 / 3, -1 / 3), (0.0, 1.0, 0.0, 1.0), 0.45),  # everything, dark images
]
CLASS_NAMES = [name for name, *_ in RULES]
QUALITY_BASE, QUALITY_SCALE, LOCAL_SCALE, GRID = 40.0, 50.0, 100.0, 20


def region_bounds(region: tuple[float, float, float, float], height: int, width: int) -> tuple[int, int, int, int]:
    """Row and column bounds (r0, r1, c0, c1) of a fractional region on a height x width input."""
    top, bottom, left, right = region
    return int(top * height), int(bottom * height), int(left * width), int(right * width)


class RegionNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.tensor(GAIN))  # a parameter, so the module has one (as a real network)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = []
        for _, weights, region, bias in RULES:
            r0, r1, c0, c1 = region_bounds(region, x.shape[-2], x.shape[-1])
            mix = (x[:, :, r0:r1, c0:c1] * torch.tensor(weights, dtype=x.dtype, device=x.device).view(1, 3, 1, 1))
            logits.append(mix.sum(dim=1).mean(dim=(1, 2)) + bias)
        return self.gain * torch.stack(logits, dim=1)


class RegionQuality(nn.Module):
    grid = GRID

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.shape[-2]
        score = QUALITY_BASE + QUALITY_SCALE * x[:, 1, : h // 2, :].mean(dim=(1, 2))
        local = LOCAL_SCALE * F.adaptive_avg_pool2d(x.mean(dim=1, keepdim=True), GRID).flatten(1)
        return torch.cat([score[:, None], local], dim=1)

    def split(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return out[:, 0], out[:, 1:].reshape(-1, GRID, GRID)


def load_classifier(**_: Any):  # noqa: ANN201
    """Hydra target: the RegionClassifier with its own class names, matched to a dataset's folders by name (as an
    ImageNet classifier's are; imagenet_classes=True, so any number of folders)."""
    from iqa_saliency.models.classifier import Classifier
    from iqa_saliency.models.weights import WeightsIdentity

    return Classifier(model=RegionNet().eval(), arch="region", class_names=list(CLASS_NAMES),
                      weights=WeightsIdentity("region-rules", "tests/helpers/plumbing_models.py", "0" * 64),
                      imagenet_classes=True)


def load_quality(**_: Any):  # noqa: ANN201
    """Hydra target: (RegionQuality, its weights' identity), as load_paq2piq returns."""
    from iqa_saliency.models.weights import WeightsIdentity

    return RegionQuality().eval(), WeightsIdentity("region-quality", "tests/helpers/plumbing_models.py", "1" * 64)
