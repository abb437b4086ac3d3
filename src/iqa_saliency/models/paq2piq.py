"""PaQ-2-PiQ (Ying et al., CVPR 2020): a global quality score plus a 20x20 map of local patch scores."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import torch
from torch import nn
from torchvision.models import resnet18
from torchvision.ops import RoIPool

from ..errors import ConfigError
from .weights import (
    UNTRAINED,
    WeightsIdentity,
    extract_state_dict,
    fetch_weights,
    load_checkpoint_file,
    load_matching_state_dict,
)

GRID = 20
CATEGORIES = ("Bad", "Poor", "Fair", "Good", "Excellent")


@dataclass(frozen=True)
class WeightsSpec:
    """Where a release of weights lives and how to check it."""

    url: str
    sha256: str | None
    description: str


class PaQ2PiQWeights(enum.Enum):
    """Known PaQ-2-PiQ weight releases."""

    # The authors' release: a dict with the state_dict under "model". Its digest is not published; each
    # run records the file's sha256, and quality.sha256 pins one.
    OFFICIAL = WeightsSpec(
        "https://github.com/baidut/PaQ-2-PiQ/releases/download/v1.0/RoIPoolModel-fit.10.bs.120.pth",
        None,
        "PaQ-2-PiQ v1.0 release (FLIVE), RoIPoolModel-fit.10.bs.120",
    )
    # pyiqa's re-packing of the same network as a plain state_dict; the file name carries a sha256 prefix.
    PYIQA = WeightsSpec(
        "https://github.com/chaofengc/IQA-PyTorch/releases/download/v0.1-weights/P2P_RoIPoolModel-fit.10.bs.120-ca69882e.pth",
        "ca69882e",
        "pyiqa re-packing of the v1.0 release",
    )


class AdaptiveConcatPool2d(nn.Module):
    """Concatenate adaptive max- and average-pooling (max first), as fastai does."""

    def __init__(self, size: int = 1) -> None:
        super().__init__()
        self.mp = nn.AdaptiveMaxPool2d(size)
        self.ap = nn.AdaptiveAvgPool2d(size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.mp(x), self.ap(x)], 1)


def block_rois(height: int, width: int, grid: int = GRID) -> torch.Tensor:
    """(1 + grid², 4) boxes (x1, y1, x2, y2): the whole image, then the grid row-major with x inner."""
    ys = torch.linspace(0, height, grid + 1, dtype=torch.float64)
    xs = torch.linspace(0, width, grid + 1, dtype=torch.float64)
    boxes = [[0.0, 0.0, float(width), float(height)]]
    for i in range(grid):
        for j in range(grid):
            boxes.append([xs[j].item(), ys[i].item(), xs[j + 1].item(), ys[i + 1].item()])
    return torch.tensor(boxes, dtype=torch.float32)


class PaQ2PiQ(nn.Module):
    """ResNet18 body + RoIPool head. Input: RGB in [0, 1], any size, no normalisation.

    forward returns (B, 1 + grid²): column 0 the global score, the rest the local scores row-major.
    """

    attribution_layer = "body.7"  # the last residual stage (ResNet18's layer4), explained by layer methods

    def __init__(self, grid: int = GRID) -> None:
        super().__init__()
        self.grid = grid
        self.body = nn.Sequential(*list(resnet18(weights=None).children())[:-2])
        self.head = nn.Sequential(
            AdaptiveConcatPool2d(),
            nn.Flatten(),
            nn.BatchNorm1d(1024),
            nn.Dropout(0.25),
            nn.Linear(1024, 512),
            nn.ReLU(inplace=True),
            nn.BatchNorm1d(512),
            nn.Dropout(0.5),
            nn.Linear(512, 1),
        )
        self.roi_pool = RoIPool((2, 2), spatial_scale=1 / 32)
        self._rois: dict[tuple[int, int, torch.device], torch.Tensor] = {}

    def rois(self, height: int, width: int, device: torch.device) -> torch.Tensor:
        """The boxes for one image size, built once and cached."""
        key = (height, width, device)
        if key not in self._rois:
            self._rois[key] = block_rois(height, width, self.grid).to(device)
        return self._rois[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        feats = self.body(x)
        boxes = self.rois(height, width, x.device).to(feats.dtype)
        n = boxes.shape[0]
        # Rebuilt for whatever batch size arrives (attribution methods expand the batch).
        index = torch.arange(batch, device=x.device, dtype=feats.dtype).repeat_interleave(n).unsqueeze(1)
        rois = torch.cat([index, boxes.repeat(batch, 1)], dim=1)
        pooled = self.roi_pool(feats, rois)
        return self.head(pooled).view(batch, n)

    def split(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(global scores (B,), local maps (B, grid, grid)) from a forward output."""
        return out[:, 0], out[:, 1:].reshape(-1, self.grid, self.grid)


class GlobalScore(nn.Module):
    """PaQ-2-PiQ reduced to its global score, (B, 1): a regression output for attribution methods."""

    def __init__(self, model: PaQ2PiQ) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)[:, :1]


@dataclass(frozen=True)
class ScoreNormalizer:
    """Maps raw MOS onto 0-100 around the FLIVE peak, as the original study's standalone inference did."""

    peak: float = 72.0
    std_left: float = 7.798274017370107
    std_right: float = 4.118047289170692
    n_std: float = 3.5

    def __call__(self, mos: torch.Tensor) -> torch.Tensor:
        p = self.peak
        below = p + p * (mos - p) / (self.n_std * self.std_left)
        above = p + (100 - p) * (mos - p) / (self.n_std * self.std_right)
        return torch.where(mos < p, below, above).clamp(0.0, 99.9)

    @staticmethod
    def category(normalized: float) -> str:
        """'Bad' … 'Excellent' for a normalised score (20 points a category)."""
        if math.isnan(normalized):
            return ""
        return CATEGORIES[min(int(normalized // 20), len(CATEGORIES) - 1)]


def load_paq2piq(
    checkpoint: str | None = PaQ2PiQWeights.OFFICIAL.value.url,
    sha256: str | None = None,
    pretrained: bool = True,
    seed: int = 0,
    download: bool = True,
) -> tuple[PaQ2PiQ, WeightsIdentity]:
    """Build PaQ-2-PiQ in eval mode with weights from a URL (hub cache) or a local file, or untrained."""
    override = "quality.checkpoint"
    if not pretrained:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = PaQ2PiQ()
        return model.eval(), WeightsIdentity(UNTRAINED)
    if not checkpoint:
        raise ConfigError("quality.checkpoint is empty. Set it to a URL or PATH, or pretrained=false.")
    known = {w.value.url: w for w in PaQ2PiQWeights}
    if sha256 is None and checkpoint in known:
        sha256 = known[checkpoint].value.sha256
    path, digest = fetch_weights(checkpoint, sha256, override, download=download)
    model = PaQ2PiQ()
    state = extract_state_dict(load_checkpoint_file(path, override), path, override)
    load_matching_state_dict(model, state, str(path), override)
    name = known[checkpoint].name if checkpoint in known else path.name
    return model.eval(), WeightsIdentity(f"paq2piq:{name}", str(checkpoint), digest)
