"""PaQ-2-PiQ (Ying et al., CVPR 2020): a global quality score plus a 20x20 map of local patch scores."""

from __future__ import annotations

import enum
import math
from collections import Counter
from dataclasses import dataclass

import torch
import torch.nn.functional as F
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
        self.size = size
        self.mp = nn.AdaptiveMaxPool2d(size)
        self.ap = nn.AdaptiveAvgPool2d(size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.size == 1:  # a plain max and mean: the same values, 2-5x faster than the adaptive kernels on a CPU
            flat = x.flatten(2)
            return torch.cat([flat.amax(2), flat.mean(2)], 1)[..., None, None]
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


LOCAL_SCORES_MAP = "model:paq2piq_local_scores"  # the quality map is the model's own 20x20 local scores


def quality_map_kind(model: nn.Module) -> str:
    """What a quality model's map is: its own spatial output ("model:...") or an attribution ("attribution:...")."""
    return getattr(model, "map_kind", LOCAL_SCORES_MAP)  # a PaQ-2-PiQ-shaped module: its local scores


class PaQ2PiQ(nn.Module):
    """ResNet18 body + RoIPool head. Input: RGB in [0, 1], any size, no normalisation.

    forward returns (B, 1 + grid²): column 0 the global score, the rest the local scores row-major.
    """

    attribution_layer = "body.7"  # the last residual stage (ResNet18's layer4), explained by layer methods

    def __init__(self, grid: int = GRID, fast_pool: bool | None = None, share_scores: bool = True) -> None:
        super().__init__()
        self.grid = grid
        self.fast_pool = fast_pool
        self.share_scores = share_scores
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
        self._layouts: dict[tuple[int, int, int, int], RoILayout] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        feats = self.body(x)
        layout = self.layout(height, width, feats.shape[-2], feats.shape[-1])
        # In eval each box is scored on its own, so a box whose pooled features equal another's is scored once;
        # in training the head's BatchNorm sees every box, so all are kept.
        shared = self.share_scores and not self.training
        rows = layout.unique_rows if shared else layout.all_rows
        # Both pooling paths give the same numbers; torchvision's roi_pool kernel is the faster one on fp32 CPU
        # features (it has no bf16 CPU kernel: under bf16 autocast the grid path is ~2x faster than a cast + roi_pool)
        if self.fast_pool or (self.fast_pool is None and (x.is_cuda or feats.dtype == torch.bfloat16)):
            pooled = layout.grid_pool(rows)(feats)
        else:
            pooled = self._roi_pool(feats, layout.on(feats.device, "boxes", rows))
        scores = self.head(pooled).view(batch, len(rows))
        return scores.index_select(1, layout.on(x.device, "inverse")) if shared else scores

    def _roi_pool(self, feats: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """torchvision roi_pool with the same boxes for every image of the batch."""
        batch, n = feats.shape[0], len(boxes)
        # torchvision's CPU kernel has no bf16/fp16; a max commutes with rounding, so pooling in fp32 is exact.
        work = feats if feats.dtype in (torch.float32, torch.float64) else feats.float()
        index = torch.arange(batch, device=feats.device, dtype=work.dtype).repeat_interleave(n).unsqueeze(1)
        pooled = self.roi_pool(work, torch.cat([index, boxes.to(work.dtype).repeat(batch, 1)], dim=1))
        return pooled.to(feats.dtype)

    def layout(self, height: int, width: int, feat_h: int, feat_w: int) -> RoILayout:
        """The boxes and their pooling bins for one input size, built once."""
        key = (height, width, feat_h, feat_w)
        if key not in self._layouts:
            self._layouts[key] = RoILayout(block_rois(height, width, self.grid), feat_h, feat_w,
                                           self.roi_pool.spatial_scale)
        return self._layouts[key]

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
    """Maps raw MOS onto 0-100 around a peak, as the original study's standalone inference did.

    Below the peak: peak + peak * (x - peak) / (n_std * std_left); at or above it:
    peak + (100 - peak) * (x - peak) / (n_std * std_right); then clipped to [0, clip_max]. The defaults are
    the study file's fixed parameters (paq2piq_standalone.py: 72, 3.5 sigma, clip 0-99.9); see NORMALIZATIONS
    for the others. `name` says where the parameters came from (recorded in summary.json).
    """

    peak: float = 72.0
    std_left: float = 7.798274017370107
    std_right: float = 4.118047289170692
    n_std: float = 3.5
    clip_max: float = 99.9
    name: str = "study_defaults"

    def __call__(self, mos: torch.Tensor) -> torch.Tensor:
        p = self.peak
        below = p + p * (mos - p) / (self.n_std * self.std_left)
        above = p + (100 - p) * (mos - p) / (self.n_std * self.std_right)
        return torch.where(mos < p, below, above).clamp(0.0, self.clip_max)

    @staticmethod
    def category(normalized: float) -> str:
        """'Bad' … 'Excellent' for a normalised score (20 points a category)."""
        if math.isnan(normalized):
            return ""
        return CATEGORIES[min(int(normalized // 20), len(CATEGORIES) - 1)]

    @classmethod
    def fit(cls, scores, name: str = "fit") -> ScoreNormalizer:  # noqa: ANN001
        """Parameters fitted to raw scores exactly as the study's InferenceModel.adapt_from_dir does.

        peak = the most common score truncated to an integer (on a tie, the one met first); the scores below
        the peak and those at or above it each give a std: the population std of the scores together with their
        reflections 2 * peak - x, i.e. the RMS distance from the peak. n_std and the clip stay the study file's.
        """
        import numpy as np

        x = np.asarray([float(v) for v in scores], dtype=np.float64)
        x = x[~np.isnan(x)]
        if x.size == 0:
            raise ValueError("no scores to fit the normalisation to")
        peak = Counter(x.astype(int).tolist()).most_common(1)[0][0]

        def reflected_std(side):  # noqa: ANN001, ANN202
            return float(np.concatenate([side, 2 * peak - side]).std()) if side.size else float("nan")

        return cls(float(peak), reflected_std(x[x < peak]), reflected_std(x[x >= peak]), name=name)


# quality.normalization.name: the study file's fixed parameters (the default), parameters fitted on a folder
# (quality.normalization.fit_dir, as the study did on CLIVE), or the PaQ-2-PiQ authors' own inference code
# (baidut/paq2piq inference_model.py: peak 72.597, 4 sigma, clip 0-100).
NORMALIZATIONS: dict[str, ScoreNormalizer | None] = {
    "study_defaults": ScoreNormalizer(),
    "fit": None,
    "official": ScoreNormalizer(peak=72.59696108881171, n_std=4.0, clip_max=100.0, name="official"),
}


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


def roipool_bins(boxes: torch.Tensor, feat_h: int, feat_w: int, spatial_scale: float,
                 pooled: tuple[int, int] = (2, 2)) -> torch.Tensor:
    """(R, ph, pw, 4) feature-map rectangles [y0, y1, x0, x1) of every RoIPool bin, as torchvision computes them.

    Follows torchvision's roi_pool kernel step by step in float32: rounded RoI corners, bin size = RoI size /
    pooled size, floor/ceil bin edges, clipping to the feature map. An empty bin is [0, 0, 0, 0) (pools to 0).
    """
    import numpy as np

    b = boxes.detach().cpu().numpy().astype(np.float32)
    scale = np.float32(spatial_scale)
    corners = []
    for col in range(4):
        v = b[:, col] * scale
        # C's round() takes halves away from zero; numpy rounds them to even.
        half = np.abs(v - np.trunc(v)) == np.float32(0.5)
        corners.append(np.where(half, np.trunc(v) + np.sign(v), np.round(v)).astype(np.int64))
    x1, y1, x2, y2 = corners
    roi_w = np.maximum(x2 - x1 + 1, 1).astype(np.float32)
    roi_h = np.maximum(y2 - y1 + 1, 1).astype(np.float32)
    bin_h = roi_h / np.float32(pooled[0])
    bin_w = roi_w / np.float32(pooled[1])
    out = np.zeros((len(b), pooled[0], pooled[1], 4), dtype=np.int64)
    for ph in range(pooled[0]):
        for pw in range(pooled[1]):
            hs = np.clip(np.floor(np.float32(ph) * bin_h).astype(np.int64) + y1, 0, feat_h)
            he = np.clip(np.ceil(np.float32(ph + 1) * bin_h).astype(np.int64) + y1, 0, feat_h)
            ws = np.clip(np.floor(np.float32(pw) * bin_w).astype(np.int64) + x1, 0, feat_w)
            we = np.clip(np.ceil(np.float32(pw + 1) * bin_w).astype(np.int64) + x1, 0, feat_w)
            empty = (he <= hs) | (we <= ws)
            out[:, ph, pw] = np.where(empty[:, None], 0, np.stack([hs, he, ws, we], axis=1))
    return torch.from_numpy(out)


class GridRoIPool(nn.Module):
    """RoIPool for boxes fixed per image size, without building RoIs per image: exact, and batched.

    Each bin is a max over a fixed rectangle of the feature map. Rectangles of one size are read off a
    stride-1 max-pool of that size, so a whole batch needs one max-pool per distinct rectangle size and
    then a single gather of every bin.
    """

    def __init__(self, bins: torch.Tensor) -> None:
        super().__init__()
        self.n_rois, self.ph, self.pw = bins.shape[:3]
        rects = bins.reshape(-1, 4)
        sizes = torch.stack([rects[:, 1] - rects[:, 0], rects[:, 3] - rects[:, 2]], dim=1)
        empty = (sizes <= 0).any(dim=1)
        self.sizes: list[tuple[int, int]] = [tuple(v) for v in torch.unique(sizes[~empty], dim=0).tolist()]
        self.rects = rects
        self.empty = empty
        self._index: dict[tuple[int, int, torch.device], torch.Tensor] = {}

    def _flat_index(self, height: int, width: int, device: torch.device) -> torch.Tensor:
        """Per bin, its position in the concatenation of the flattened max-pool maps (+ a zero column)."""
        key = (height, width, device)
        if key not in self._index:
            index = torch.empty(len(self.rects), dtype=torch.long)
            offset = 0
            sizes = torch.stack([self.rects[:, 1] - self.rects[:, 0], self.rects[:, 3] - self.rects[:, 2]], dim=1)
            for h, w in self.sizes:
                out_w = width - w + 1
                members = (sizes[:, 0] == h) & (sizes[:, 1] == w) & ~self.empty
                index[members] = offset + self.rects[members, 0] * out_w + self.rects[members, 2]
                offset += (height - h + 1) * out_w
            index[self.empty] = offset  # the zero column: an empty bin pools to 0, as in torchvision
            self._index[key] = index.to(device)
        return self._index[key]

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) features -> (B * R, C, ph, pw), ordered like torchvision.ops.roi_pool's output."""
        batch, channels, height, width = feats.shape
        maps = [F.max_pool2d(feats, (h, w), stride=1).flatten(2) for h, w in self.sizes]
        maps.append(feats.new_zeros(batch, channels, 1))
        gathered = torch.cat(maps, dim=2).index_select(2, self._flat_index(height, width, feats.device))
        out = gathered.view(batch, channels, self.n_rois, self.ph, self.pw).permute(0, 2, 1, 3, 4)
        return out.reshape(batch * self.n_rois, channels, self.ph, self.pw)


class RoILayout:
    """The 1 + grid² boxes of one input size, their RoIPool bins, and which boxes pool identical features.

    At 224 px the 7×7 feature map gives 401 boxes only 198 distinct sets of bins, so in eval mode the head
    scores 198 rows per image and copies the results to the boxes that share them.
    """

    def __init__(self, boxes: torch.Tensor, feat_h: int, feat_w: int, spatial_scale: float) -> None:
        self.boxes = boxes
        self.bins = roipool_bins(boxes, feat_h, feat_w, spatial_scale)
        _, self.inverse = torch.unique(self.bins.reshape(len(boxes), -1), dim=0, return_inverse=True)
        first = torch.full((int(self.inverse.max()) + 1,), len(boxes), dtype=torch.long)
        first.scatter_reduce_(0, self.inverse, torch.arange(len(boxes)), reduce="amin")
        # Representatives in box order, so unique_rows[inverse] is the original box order.
        order = torch.argsort(first)
        self.unique_rows = first[order]
        self.inverse = torch.argsort(order)[self.inverse]
        self.all_rows = torch.arange(len(boxes))
        self._pools: dict[int, GridRoIPool] = {}
        self._on_device: dict[tuple[str, int, torch.device], torch.Tensor] = {}

    def on(self, device: torch.device, name: str, rows: torch.Tensor | None = None) -> torch.Tensor:
        """`boxes[rows]` or `inverse` on a device, copied there once."""
        key = (name, -1 if rows is None else len(rows), device)
        if key not in self._on_device:
            value = getattr(self, name)
            self._on_device[key] = (value if rows is None else value[rows]).to(device)
        return self._on_device[key]

    def grid_pool(self, rows: torch.Tensor) -> GridRoIPool:
        """A GridRoIPool for the given boxes (all of them, or unique_rows)."""
        if len(rows) not in self._pools:
            self._pools[len(rows)] = GridRoIPool(self.bins[rows])
        return self._pools[len(rows)]
