"""Figures of the sweep report (matplotlib, Agg)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image  # noqa: E402

Y_LABELS = {"acc_top1": "top-1 accuracy", "flip_rate": "flip rate vs clean"}


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def _panels(axes: Sequence[Any], rows: pd.DataFrame, y_acc: str, legend: bool) -> None:
    """Accuracy, mean MOS and CC (with 95% CI) against severity, one line per variant."""
    for variant, r in rows.groupby("variant"):
        r = r.sort_values("severity")
        axes[0].plot(r["severity"], r[y_acc], marker="o", label=variant)
        axes[1].errorbar(r["severity"], r["mos_mean"], yerr=r["mos_std"], marker="o", capsize=3, label=variant)
        axes[2].plot(r["severity"], r["sim_cc_mean"], marker="o", label=variant)
        axes[2].fill_between(r["severity"], r["sim_cc_ci_low"], r["sim_cc_ci_high"], alpha=0.2)
    for ax, ylabel in zip(axes, (Y_LABELS.get(y_acc, y_acc), "mean MOS (± std)", "CC quality map vs attribution"),
                          strict=True):
        ax.set_xlabel("severity")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.set_xticks(sorted(rows["severity"].unique()))
    if legend and rows["variant"].nunique() > 1:
        axes[2].legend(fontsize=8)


def per_corruption_panels(curves: pd.DataFrame, out_dir: Path, y_acc: str) -> dict[str, Path]:
    """One three-panel figure per corruption (the original study's plots)."""
    paths = {}
    for corruption, rows in curves.groupby("corruption"):
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), constrained_layout=True)
        _panels(axes, rows, y_acc, legend=True)
        fig.suptitle(corruption)
        paths[corruption] = _save(fig, out_dir / f"corruption_{corruption}.png")
    return paths


def overview_grid(curves: pd.DataFrame, path: Path, y_acc: str) -> Path:
    """All corruptions at a glance: one row per corruption, the three panels as columns."""
    corruptions = sorted(curves["corruption"].unique())
    fig, axes = plt.subplots(len(corruptions), 3, figsize=(12, 2.6 * len(corruptions) + 0.6),
                             constrained_layout=True, squeeze=False)
    for i, corruption in enumerate(corruptions):
        _panels(axes[i], curves[curves["corruption"] == corruption], y_acc, legend=(i == 0))
        axes[i][0].set_title(corruption, loc="left", fontsize=10, fontweight="bold")
    return _save(fig, path)


def mos_vs_accuracy(summary: pd.DataFrame, path: Path, y_acc: str, correlation: dict[str, float]) -> Path:
    """Mean MOS against accuracy over all cells, coloured by corruption, with the correlations in the title."""
    fig, ax = plt.subplots(figsize=(7.5, 5.5), constrained_layout=True)
    cmap = plt.get_cmap("tab20")
    for k, (corruption, rows) in enumerate(summary.groupby("corruption")):
        ax.scatter(rows["mos_mean"], rows[y_acc], color=cmap(k % 20), label=corruption, s=20 + 12 * rows["severity"],
                   edgecolor="black", linewidth=0.4)
    ax.set_xlabel("mean MOS (PaQ-2-PiQ, raw)")
    ax.set_ylabel(Y_LABELS.get(y_acc, y_acc))
    rho, r = correlation.get("spearman", math.nan), correlation.get("pearson", math.nan)
    ax.set_title(f"cells: n={correlation.get('n', 0)}, Spearman ρ={rho:.3f}, Pearson r={r:.3f} "
                 "(marker size = severity)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncols=2, loc="best")
    return _save(fig, path)


def image_grids(cells: Sequence[Any], out_dir: Path, images: Sequence[str] | None = None,
                max_images: int = 2) -> list[Path]:
    """Per corruption and chosen image: rows = severities, each row the cell's image | quality | attribution figure."""
    by_corruption: dict[str, dict[int, Any]] = {}
    clean_cells = [c for c in cells if c.summary["corruption"] == "none"]
    for cell in cells:
        c, s = cell.summary["corruption"], int(cell.summary["severity"])
        if c != "none":
            by_corruption.setdefault(c, {})[s] = cell
    paths = []
    for corruption, cells_by_severity in sorted(by_corruption.items()):
        if 0 not in cells_by_severity and clean_cells:
            cells_by_severity[0] = clean_cells[0]
        severities = sorted(cells_by_severity)
        available = [{p.stem.split("_", 1)[1]: p for p in (cells_by_severity[s].path / "figures").glob("*.png")}
                     for s in severities]
        common = sorted(set.intersection(*(set(a) for a in available))) if available else []
        chosen = [i for i in (images or common[:max_images]) if i in common]
        for image_id in chosen:
            fig, axes = plt.subplots(len(severities), 1, figsize=(12, 4.1 * len(severities)),
                                     constrained_layout=True, squeeze=False)
            for ax, s, figs in zip(axes[:, 0], severities, available, strict=True):
                ax.imshow(np.asarray(Image.open(figs[image_id]).convert("RGB")))
                ax.set_ylabel(f"severity {s}", fontsize=12)
                ax.set_xticks([])
                ax.set_yticks([])
            fig.suptitle(f"{image_id} under {corruption}", fontsize=13)
            paths.append(_save(fig, out_dir / f"grid_{corruption}_{image_id}.png"))
    return paths
