"""Run-level metrics as torchmetrics Metrics, so multi-process (DDP) runs sync them for free."""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from scipy import stats
from torch import nn
from torchmetrics import MeanMetric, Metric, SpearmanCorrCoef, SumMetric


class MeanStd(Metric):
    """Mean and sample standard deviation of a stream of values (NaN ignored)."""

    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total_sq", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, values: torch.Tensor) -> None:
        values = values.detach().double().flatten()
        values = values[~torch.isnan(values)]
        self.total += values.sum()
        self.total_sq += (values**2).sum()
        self.count += values.numel()

    def compute(self) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.count
        mean = self.total / n if n > 0 else torch.tensor(math.nan, dtype=torch.float64)
        if n > 1:
            var = (self.total_sq - n * mean**2) / (n - 1)
            std = var.clamp_min(0).sqrt()
        else:
            std = torch.tensor(math.nan, dtype=torch.float64)
        return mean, std


# per-image column -> summary key of its run mean
MEAN_COLUMNS = {
    "correct_top1": "acc/top1",
    "correct_top5": "acc/top5",
    "flipped": "robustness/flip_rate",
    "mos_clean": "quality/mos_clean_mean",
    "mos_drop": "quality/mos_drop",
    "mos_normalized": "quality/mos_normalized_mean",
    "sim_cc": "similarity/cc",
    "sim_sim": "similarity/sim",
    "sim_kld": "similarity/kld",
    "sim_spearman": "similarity/spearman",
    "attr_stability_cc": "attribution/stability_cc",
    "quality_stability_cc": "quality/stability_cc",
    "change_cc": "change/cc",
    "change_spearman": "change/spearman",
    "sim_cc_clean": "similarity/cc_clean",
    "confidence_drop": "robustness/confidence_drop",
}


# summary key -> the two per-image columns whose Spearman correlation across the run's images it holds
IMAGE_CORRELATIONS = {
    "correlation/quality_vs_attr_stability_spearman": ("quality_stability_cc", "attr_stability_cc"),
    "correlation/mos_drop_vs_confidence_drop_spearman": ("mos_drop", "confidence_drop"),
    "correlation/mos_drop_vs_flipped_spearman": ("mos_drop", "flipped"),
}


def spearman_of(x: np.ndarray, y: np.ndarray) -> tuple[float, float, int]:
    """Spearman ρ, its p-value and the number of pairs used (pairs with a NaN dropped); ρ and p are NaN with
    fewer than 3 pairs or a constant column: no correlation is defined then."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan, math.nan, int(x.size)
    result = stats.spearmanr(x, y)
    return float(result.statistic), float(result.pvalue), int(x.size)


class RunMetrics(nn.Module):
    """Aggregates per-image values into the run summary (accuracy, flips, MOS, similarity)."""

    def __init__(self, extra_mean_columns: dict[str, str] | None = None, sync: bool = True) -> None:
        super().__init__()
        kw = {} if sync else {"sync_on_compute": False}  # sync=False: this process's values only
        self.mean_columns = {**MEAN_COLUMNS, **(extra_mean_columns or {})}
        self.means = nn.ModuleDict(
            {col: MeanMetric(nan_strategy="ignore", **kw).set_dtype(torch.float64) for col in self.mean_columns}
        )
        self.mos = MeanStd(**kw)
        self.n_images = SumMetric(**kw)
        self.n_labeled = SumMetric(**kw)
        with warnings.catch_warnings():  # it keeps all values (2 floats per image): fine at our scale
            warnings.simplefilter("ignore")
            self.mos_vs_confidence = SpearmanCorrCoef(**kw)

    def _apply(self, fn, *args, **kwargs):  # noqa: ANN001, ANN202
        # Lightning casts the whole LightningModule to its precision; aggregates stay float64.
        out = super()._apply(fn, *args, **kwargs)
        for metric in self.modules():
            if isinstance(metric, Metric):
                metric.set_dtype(torch.float64)
        return out

    def update(self, values: dict[str, torch.Tensor]) -> None:
        """Add one batch: `values` maps per-image column names to (B,) tensors (NaN = not available)."""
        for col, metric in self.means.items():
            if col in values:
                v = values[col].detach().double()
                if not torch.isnan(v).all():  # MeanMetric would warn on an all-NaN batch
                    metric.update(v)
        self.mos.update(values["mos"])
        self.n_images.update(torch.tensor(float(values["mos"].numel()), device=values["mos"].device))
        self.n_labeled.update((~torch.isnan(values["correct_top1"].double())).sum().double())
        self.mos_vs_confidence.update(values["mos"].double(), values["clean_pred_prob"].double())

    def compute(self) -> dict[str, float]:
        """The run's aggregates as plain floats (NaN where undefined)."""
        out: dict[str, float] = {}
        with warnings.catch_warnings():
            # every process must call compute (it syncs), also one whose values were all NaN
            warnings.simplefilter("ignore")
            for col, metric in self.means.items():
                out[self.mean_columns[col]] = _float(metric.compute())
            try:
                spearman = _float(self.mos_vs_confidence.compute())
            except ValueError:  # no image at all (every one skipped): torchmetrics has nothing to concatenate
                spearman = math.nan
        mean, std = self.mos.compute()
        out["quality/mos_mean"] = _float(mean)
        out["quality/mos_std"] = _float(std)
        out["n_images"] = _float(self.n_images.compute())
        out["n_labeled"] = _float(self.n_labeled.compute())
        n = int(out["n_images"]) if not math.isnan(out["n_images"]) else 0
        out["correlation/mos_vs_clean_pred_prob_spearman"] = spearman if n >= 3 else math.nan
        return out


def _float(x: torch.Tensor | float) -> float:
    return float(x.item() if torch.is_tensor(x) else x)


def summarize_rows(rows: list[dict[str, str]], extra_mean_columns: dict[str, str] | None = None) -> dict[str, float]:
    """The run summary from per_image.csv rows (in index order): the same numbers however the rows were made.

    One process, one update, in image order: a resumed run or a multi-process run gives the same
    summary as a single uninterrupted one.
    """
    metrics = RunMetrics(extra_mean_columns, sync=False)  # the rows are already every process's
    if rows:
        columns = set(metrics.mean_columns) | {"mos", "clean_pred_prob", "correct_top1"}
        metrics.update({c: torch.tensor(_column(rows, c), dtype=torch.float64) for c in columns})
    out = metrics.compute()
    for key, (x, y) in IMAGE_CORRELATIONS.items():
        out[key] = spearman_of(_column(rows, x), _column(rows, y))[0] if rows else math.nan
    return out


def _column(rows: list[dict[str, str]], column: str) -> list[float]:
    """A per_image.csv column as floats (a blank or missing value is NaN)."""
    return [float(r[column]) if r.get(column) not in (None, "") else math.nan for r in rows]
