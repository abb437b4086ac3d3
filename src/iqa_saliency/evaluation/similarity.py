"""Similarity between a quality map and an attribution map, batched: (B, h, w) tensors in, (B,) out."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ConfigError

EPS = 2.2204e-16  # the MIT saliency benchmark's epsilon
QUALITY_MAPS = ("raw", "inverted", "drop")


def pool_to_grid(maps: torch.Tensor, grid: int) -> torch.Tensor:
    """Average-pool (B, H, W) maps onto (B, grid, grid) blocks (adaptive average pooling)."""
    return F.adaptive_avg_pool2d(maps.unsqueeze(1).double(), grid).squeeze(1)


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1).double()


def _minmax_sum(x: torch.Tensor) -> torch.Tensor:
    """Min-max normalise each row, then divide by its sum (a distribution); NaN where constant."""
    lo = x.min(dim=1, keepdim=True).values
    hi = x.max(dim=1, keepdim=True).values
    span = hi - lo
    x = (x - lo) / torch.where(span > 0, span, torch.nan)
    return x / x.sum(dim=1, keepdim=True)


def pearson_cc(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation per map pair; NaN when either map is constant."""
    a, b = _flat(a), _flat(b)
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    denom = a.norm(dim=1) * b.norm(dim=1)
    return (a * b).sum(dim=1) / torch.where(denom > 0, denom, torch.nan)


def histogram_sim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """SIM (histogram intersection): sum of element-wise minima of the two normalised maps."""
    return torch.minimum(_minmax_sum(_flat(a)), _minmax_sum(_flat(b))).sum(dim=1)


def kld(quality: torch.Tensor, attribution: torch.Tensor) -> torch.Tensor:
    """KL divergence Σ Q·log(ε + Q/(P + ε)), Q = quality map, P = attribution map (both normalised)."""
    q = _minmax_sum(_flat(quality))
    p = _minmax_sum(_flat(attribution))
    return (q * torch.log(EPS + q / (p + EPS))).sum(dim=1)


def rank_average(x: torch.Tensor) -> torch.Tensor:
    """1-based ranks along dim 1 with ties given their average rank (as scipy.stats.rankdata); a row holding a
    NaN is all NaN (scipy's nan_policy="propagate")."""
    x = _flat(x)
    values, order = x.sort(dim=1)
    starts = torch.ones_like(values, dtype=torch.bool)
    starts[:, 1:] = values[:, 1:] != values[:, :-1]
    group = starts.cumsum(dim=1) - 1  # index of each sorted value's run of equal values
    position = torch.arange(x.shape[1], device=x.device, dtype=torch.float64).expand_as(values)
    first = torch.zeros_like(values).scatter_reduce(1, group, position, "amin", include_self=False)
    last = torch.zeros_like(values).scatter_reduce(1, group, position, "amax", include_self=False)
    ranks_sorted = ((first + last) / 2 + 1).gather(1, group)
    ranks = torch.empty_like(ranks_sorted).scatter_(1, order, ranks_sorted)
    return torch.where(torch.isnan(x).any(dim=1, keepdim=True), torch.nan, ranks)


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation per map pair."""
    return pearson_cc(rank_average(a), rank_average(b))


SIMILARITY_METRICS = {"cc": pearson_cc, "sim": histogram_sim, "kld": kld, "spearman": spearman}


def check_quality_map(kind: str) -> None:
    """Raise ConfigError unless `kind` is a known quality-map variant."""
    if kind not in QUALITY_MAPS:
        raise ConfigError(f"similarity.quality_map={kind!r} is not valid. Use one of: {', '.join(QUALITY_MAPS)}.")


def select_quality_map(kind: str, local: torch.Tensor, local_clean: torch.Tensor) -> torch.Tensor:
    """The local quality map to compare: raw scores, 100 − score (where quality is bad), or clean − corrupted."""
    check_quality_map(kind)
    if kind == "inverted":
        return 100.0 - local
    if kind == "drop":
        return local_clean - local
    return local


def minmax(maps: torch.Tensor) -> torch.Tensor:
    """Min-max scale each (h, w) map of a (B, h, w) batch to [0, 1]; NaN where a map is constant."""
    flat = _flat(maps)
    lo = flat.min(dim=1, keepdim=True).values
    span = flat.max(dim=1, keepdim=True).values - lo
    return ((flat - lo) / torch.where(span > 0, span, torch.nan)).reshape(maps.shape)


def change_maps(quality_clean: torch.Tensor, quality: torch.Tensor, attr_clean: torch.Tensor, attr: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each map moved, on the quality map's grid: |Δ quality map| and |Δ attribution| average-pooled.

    The attribution maps are min-max scaled first (a map that only changed its scale has not moved); the
    quality maps keep their units (both are scores of the same model)."""
    moved_quality = (quality_clean.double() - quality.double()).abs()
    moved_attr = pool_to_grid((minmax(attr_clean) - minmax(attr)).abs(), quality.shape[-1])
    return moved_quality, moved_attr


def compare_changes(quality_clean: torch.Tensor, quality: torch.Tensor, attr_clean: torch.Tensor,
                    attr: torch.Tensor) -> dict[str, torch.Tensor]:
    """CC and Spearman between the two change maps (change_maps): did both move in the same places?"""
    moved_quality, moved_attr = change_maps(quality_clean, quality, attr_clean, attr)
    return {"cc": pearson_cc(moved_quality, moved_attr), "spearman": spearman(moved_quality, moved_attr)}


def compare_maps(quality: torch.Tensor, attribution: torch.Tensor) -> dict[str, torch.Tensor]:
    """All similarity metrics between (B, g, g) quality maps and attribution maps pooled to g×g."""
    pooled = pool_to_grid(attribution, quality.shape[-1])
    return {name: fn(quality, pooled) for name, fn in SIMILARITY_METRICS.items()}
