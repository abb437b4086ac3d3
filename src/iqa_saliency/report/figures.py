"""The sweep report's figures, each written through one save_figure (atomic PNG), and the overlays the per-image
comparison figure (report.comparison) draws."""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402

from .style import DEFAULT_STYLE, FigureStyle, StudyFigures  # noqa: E402

Y_LABELS = {"acc_top1": "top-1 accuracy", "acc_top5": "top-5 accuracy", "flip_rate": "flip rate vs clean"}



_MARK: ContextVar[str | None] = ContextVar("report_figure_mark", default=None)  # set by marked()


@contextlib.contextmanager
def marked(mark: str | None) -> Iterator[None]:
    """Every figure save_figure writes inside the block carries `mark` above its title (None: no mark)."""
    token = _MARK.set(mark)
    try:
        yield
    finally:
        _MARK.reset(token)


def save_figure(fig: plt.Figure, path: str | os.PathLike, dpi: int | None = None,
                metadata: dict[str, str] | None = None) -> Path:
    """Write `fig` (format from the file's extension; dpi default: matplotlib's savefig.dpi) through a temporary
    file and a rename (never a half-written figure), then close it; `metadata`: the file's text fields."""
    mark = _MARK.get()
    if mark:
        title = fig._suptitle.get_text() if fig._suptitle is not None else ""
        fig.suptitle(f"{mark}\n{title}" if title else mark, color="red", fontweight="bold")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
    try:
        # PNG at zlib level 1: the same pixels, written in a third of the default level's time (~1.2x the bytes)
        png = {"pil_kwargs": {"compress_level": 1}} if path.suffix.lower() == ".png" else {}
        fig.savefig(tmp, dpi=dpi, metadata=metadata, **png)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return path


def upsample(grid_map: np.ndarray, height: int, width: int, mode: str = "nearest") -> np.ndarray:
    """Resize a 2-D map to the image size (nearest keeps the quality patches visible)."""
    t = torch.as_tensor(np.asarray(grid_map, dtype=np.float32))[None, None]
    kwargs = {"align_corners": False} if mode == "bilinear" else {}
    return F.interpolate(t, size=(height, width), mode=mode, **kwargs)[0, 0].numpy()


def normalize01(x: np.ndarray) -> np.ndarray:
    """Min-max scale to [0, 1] for display; a constant map becomes zeros."""
    lo, hi = float(np.nanmin(x)), float(np.nanmax(x))
    return np.zeros_like(x) if hi <= lo else (x - lo) / (hi - lo)


def overlay(image: np.ndarray, heat: np.ndarray, cmap: str = "jet", alpha: float = 0.5,
            mode: str = "nearest") -> np.ndarray:
    """Blend a heat map (any size, display-normalised here) over an HxWx3 uint8 image."""
    h, w = image.shape[:2]
    heat = normalize01(upsample(heat, h, w, mode) if heat.shape != (h, w) else heat)
    colored = plt.get_cmap(cmap)(heat)[..., :3]
    blended = (1 - alpha) * image.astype(np.float32) / 255.0 + alpha * colored
    return (np.clip(blended, 0, 1) * 255).round().astype(np.uint8)


def errorbar_line(ax: Any, rows: pd.DataFrame, column: str, k: int, label: str) -> None:
    """One curve against severity with its 95% CI (`<column>_ci_low/high`) as error bars, in line style k."""
    rows = rows.dropna(subset=[column]).sort_values("severity")
    if rows.empty:
        return
    yerr = None
    # summary.csv names a mean's interval after the column (mos_mean_ci_low) or its metric (sim_cc_ci_low)
    base = next((b for b in (column, column.removesuffix("_mean"))
                 if f"{b}_ci_low" in rows and f"{b}_ci_high" in rows), None)
    if base is not None:
        low = (rows[column] - rows[f"{base}_ci_low"]).clip(lower=0).fillna(0)
        high = (rows[f"{base}_ci_high"] - rows[column]).clip(lower=0).fillna(0)
        yerr = np.vstack([low, high])
    ax.errorbar(rows["severity"], rows[column], yerr=yerr, capsize=3, markersize=5, label=label, **line_style(k))


def _panels(axes: Sequence[Any], rows: pd.DataFrame, y_acc: str, legend: bool) -> None:
    """Accuracy (or flip rate), mean MOS and CC against severity, one line per variant, 95% CIs as error bars."""
    for k, (variant, r) in enumerate(rows.groupby("variant")):
        for ax, column in zip(axes, (y_acc, "mos_mean", "sim_cc_mean"), strict=True):
            errorbar_line(ax, r, column, k, variant)
    _label_severity_axes(axes, rows, (Y_LABELS.get(y_acc, y_acc), "mean MOS (95% CI)",
                                      "CC quality map vs attribution"), legend=legend)


def _study_panels(axes: Sequence[Any], rows: pd.DataFrame, legend: bool) -> None:
    """What the original study's quality_accuracy.py plotted per corruption -- top-1 accuracy, top-5 accuracy and
    the mean raw MOS against severity -- and, next to them, the CC of quality map and attribution; 95% CIs."""
    for k, (variant, r) in enumerate(rows.groupby("variant")):
        for ax, column in zip(axes, ("acc_top1", "acc_top5", "mos_mean", "sim_cc_mean"), strict=True):
            errorbar_line(ax, r, column, k, variant)
    ylabels = ("top-1 accuracy", "top-5 accuracy", "mean MOS (PaQ-2-PiQ, raw)", "CC (95% CI)")
    titles = ("Top-1 Accuracy", "Top-5 Accuracy", "Mean MOS of the dataset", "CC quality map vs attribution")
    _label_severity_axes(axes, rows, ylabels, titles, legend=legend)


def _label_severity_axes(axes: Sequence[Any], rows: pd.DataFrame, ylabels: Sequence[str],
                         titles: Sequence[str] | None = None, legend: bool = True) -> None:
    """Severity on x (the swept levels as ticks), the given y labels and titles, a grid; the last panel holds the
    legend when several variants are drawn."""
    for i, (ax, ylabel) in enumerate(zip(axes, ylabels, strict=True)):
        if titles is not None:
            ax.set_title(titles[i], fontsize=10)
        ax.set_xlabel("severity")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.set_xticks(sorted(rows["severity"].unique()))
    if legend and rows["variant"].nunique() > 1:
        axes[len(ylabels) - 1].legend(fontsize=8)


def per_corruption_panels(curves: pd.DataFrame, out_dir: Path, y_acc: str, style: FigureStyle = DEFAULT_STYLE
                          ) -> dict[str, Path]:
    """One figure per corruption. With labels: the original study's three plots (top-1, top-5, mean raw MOS
    against severity) and the CC next to them; without: flip rate, mean MOS (± std) and CC."""
    paths = {}
    study = y_acc == "acc_top1" and "acc_top5" in curves and curves["acc_top5"].notna().any()
    for corruption, rows in curves.groupby("corruption"):
        if study:
            fig, axes = plt.subplots(1, 4, figsize=(17, 3.8), constrained_layout=True)
            _study_panels(axes, rows, legend=True)
        else:
            fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), constrained_layout=True)
            _panels(axes, rows, y_acc, legend=True)
        fig.suptitle(corruption)
        paths[corruption] = save_figure(fig, style.path(out_dir, f"corruption_{corruption}"))
    return paths


def overview_grid(curves: pd.DataFrame, path: Path, y_acc: str) -> Path:
    """All corruptions at a glance: one row per corruption, the three panels as columns."""
    corruptions = sorted(curves["corruption"].unique())
    fig, axes = plt.subplots(len(corruptions), 3, figsize=(12, 2.6 * len(corruptions) + 0.6),
                             constrained_layout=True, squeeze=False)
    for i, corruption in enumerate(corruptions):
        _panels(axes[i], curves[curves["corruption"] == corruption], y_acc, legend=(i == 0))
        axes[i][0].set_title(corruption, loc="left", fontsize=10, fontweight="bold")
    return save_figure(fig, path)


def mos_vs_accuracy(summary: pd.DataFrame, path: Path, y_acc: str, correlation: dict[str, float]) -> Path:
    """Mean MOS against accuracy over all cells, coloured by corruption, with the correlations in the title."""
    fig, ax = plt.subplots(figsize=(7.5, 5.5), constrained_layout=True)
    for k, (corruption, rows) in enumerate(summary.groupby("corruption")):
        look = line_style(k)
        ax.scatter(rows["mos_mean"], rows[y_acc], color=look["color"], marker=look["marker"], label=corruption,
                   s=20 + 12 * rows["severity"], edgecolor="black", linewidth=0.4)
    ax.set_xlabel("mean MOS (PaQ-2-PiQ, raw)")
    ax.set_ylabel(Y_LABELS.get(y_acc, y_acc))
    rho, r = correlation.get("spearman", math.nan), correlation.get("pearson", math.nan)
    ax.set_title(f"cells: n={correlation.get('n', 0)}, Spearman ρ={rho:.3f}, Pearson r={r:.3f} "
                 "(marker size = severity)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncols=2, loc="best")
    return save_figure(fig, path)


# Okabe & Ito's colour-blind-safe palette; past eight lines the marker and the line style change too
OKABE_ITO = ("#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000")
MARKERS = ("o", "s", "^", "D", "v")
LINESTYLES = ("-", "--", ":")


def line_style(k: int) -> dict[str, Any]:
    """Colour, marker and line style of the k-th line: distinct for 8 × 5 lines, colour-blind safe."""
    return {"color": OKABE_ITO[k % 8], "marker": MARKERS[(k // 8) % 5], "linestyle": LINESTYLES[(k // 40) % 3]}


# the change question's panels: summary.csv column (with _ci_low/_ci_high) -> y label
CHANGE_PANELS = {
    "quality_stability_cc": "quality map: CC clean vs corrupted",
    "attr_stability_cc": "attribution: CC clean vs corrupted",
    "change_cc": "CC of |Δ quality map| and |Δ attribution|",
}


def change_curves(curves: pd.DataFrame, path: Path) -> Path:
    """The change question at a glance: each map's stability and the CC of the two change maps against severity,
    one line per corruption (and variant), 95% bootstrap CIs as error bars."""
    fig, axes = plt.subplots(1, len(CHANGE_PANELS), figsize=(4.2 * len(CHANGE_PANELS), 3.8),
                             constrained_layout=True, squeeze=False)
    several = curves["variant"].nunique() > 1
    groups = [(k, g) for k, g in curves.groupby(["variant", "corruption"], sort=True)
              if k[1] != "none" or curves["corruption"].nunique() == 1]
    for ax, (column, ylabel) in zip(axes[0], CHANGE_PANELS.items(), strict=True):
        for k, ((variant, corruption), rows) in enumerate(groups):
            if column in rows:
                errorbar_line(ax, rows, column, k, f"{corruption} ({variant})" if several else str(corruption))
        ax.axhline(0.0 if column == "change_cc" else 1.0, color="grey", lw=0.6)
        ax.set_ylabel(ylabel)
        ax.set_xlabel("severity")
        ax.set_xticks(sorted(curves["severity"].unique()))
        ax.grid(alpha=0.3)
    for ax in axes[0]:
        handles, labels = ax.get_legend_handles_labels()
        if handles:
            axes[0][-1].legend(handles, labels, loc="best")
            break
    fig.suptitle("Do the quality map and the attribution change alike? (95% bootstrap CIs)")
    return save_figure(fig, path)


def _rows_with_maps(cell: Any) -> pd.DataFrame:
    rows = cell.rows.dropna(subset=["maps"])
    return rows.set_index(rows["image"].astype(str))


def map_grids(cells: Sequence[Any], out_dir: Path, images: Sequence[str] | None = None, max_images: int = 2,
              style: FigureStyle = DEFAULT_STYLE) -> list[Path]:
    """Per corruption and chosen image, from the saved maps: columns = severities (0 from the clean maps every cell
    saves), rows = quality map and attribution, each row on one colour scale across the severities (so the change
    is what differs), the predicted class and MOS in each column's title."""
    from ..io.maps import read_maps

    by_corruption: dict[str, dict[int, Any]] = {}
    for cell in cells:
        c, s = cell.summary["corruption"], int(cell.summary["severity"])
        if c != "none" and s > 0 and "maps" in cell.rows:
            by_corruption.setdefault(c, {})[s] = cell
    paths = []
    for corruption, by_severity in sorted(by_corruption.items()):
        rows = {s: _rows_with_maps(cell) for s, cell in by_severity.items()}
        common = sorted(set.intersection(*(set(r.index) for r in rows.values())))
        for image_id in [i for i in (images or common[:max_images]) if i in common]:
            first = min(by_severity)
            columns = [(0, read_maps(by_severity[first].path, rows[first].loc[image_id, "maps"]), "clean")]
            for s in sorted(by_severity):
                row = rows[s].loc[image_id]
                title = f"severity {s}\n{row.get('pred_name', '')}\nMOS {float(row['mos']):.1f}"
                columns.append((s, read_maps(by_severity[s].path, row["maps"]), title))
            if "attribution_clean" not in columns[0][1]:
                continue  # maps saved before the clean attribution was
            quality = [m["quality_map_clean"] if s == 0 else m["quality_map"] for s, m, _ in columns]
            attribution = [m["attribution_clean"] if s == 0 else m["attribution"] for s, m, _ in columns]
            fig, axes = plt.subplots(2, len(columns), figsize=(3.0 * len(columns) + 1.2, 6.2),
                                     constrained_layout=True, squeeze=False)
            for r, (maps, cmap, label) in enumerate(((quality, "RdYlGn", "local quality (raw)"),
                                                     (attribution, "viridis", "attribution (raw)"))):
                lo, hi = float(min(np.nanmin(m) for m in maps)), float(max(np.nanmax(m) for m in maps))
                for c, m in enumerate(maps):
                    shown = axes[r][c].imshow(m, cmap=cmap, vmin=lo, vmax=hi)
                    axes[r][c].set_xticks([])
                    axes[r][c].set_yticks([])
                    if r == 0:
                        axes[r][c].set_title(columns[c][2], fontsize=9)
                fig.colorbar(shown, ax=list(axes[r]), fraction=0.025, pad=0.01, label=label)
            fig.suptitle(f"{image_id} under {corruption}: one colour scale per row")
            paths.append(save_figure(fig, style.path(out_dir, f"maps_{corruption}_{image_id}")))
    return paths


def study_figure(cells: Sequence[Any], path: Path, study: StudyFigures) -> Path | None:
    """The original study's figure set for one image (see style.StudyFigures); None when no cell at the severity
    holds the image and its saved corrupted input (dataset.save_images=true)."""
    panels = []
    for cell in sorted(cells, key=lambda c: c.summary["corruption"]):
        if int(cell.summary["severity"]) != study.severity or cell.summary["corruption"] == "none":
            continue
        rows = cell.rows
        by_index = isinstance(study.image, int)
        hit = rows[rows["index"] == study.image] if by_index else rows[rows["image"].astype(str) == str(study.image)]
        if hit.empty or not isinstance(hit.iloc[0].get("maps"), str):
            continue
        row = hit.iloc[0]
        inputs = sorted((cell.path / "images").glob(f"{int(row['index']):06d}_*.png"))
        if inputs:
            from ..io.maps import read_maps

            panels.append((cell, row, np.asarray(Image.open(inputs[0]).convert("RGB")),
                           read_maps(cell.path, row["maps"])))
    if not panels:
        return None
    fig, axes = plt.subplots(len(panels), 3, figsize=(11.5, 3.6 * len(panels)), constrained_layout=True,
                             squeeze=False)
    for ax_row, (cell, row, image, maps) in zip(axes, panels, strict=True):
        method = cell.summary.get("attribution", "attribution")
        ax_row[0].imshow(image)
        ax_row[0].set_title(f"{cell.summary['corruption']} s{study.severity}: {row.get('pred_name', '')}", fontsize=9)
        ax_row[1].imshow(overlay(image, maps["quality_map"], cmap="RdYlGn", alpha=0.55))
        ax_row[1].set_title(f"PaQ-2-PiQ local map · MOS {float(row['mos']):.1f} ({row.get('quality_category', '')})",
                            fontsize=9)
        ax_row[2].imshow(overlay(image, maps["attribution"], cmap="jet", alpha=0.5, mode="bilinear"))
        ax_row[2].set_title(f"{method} · {row.get('pred_name', '')}", fontsize=9)
        for ax in ax_row:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"{panels[0][1]['image']} (index {int(panels[0][1]['index'])}) at severity {study.severity}")
    return save_figure(fig, path)


def randomization_figure(path: str | os.PathLike, result: Any, flag_spearman: float) -> Path:
    """The randomisation check's decay curves: Spearman (solid) and SSIM (dashed) per method against the layers."""
    fig, ax = plt.subplots(figsize=(7.5, 4.2), constrained_layout=True)
    steps = ["original", *[layer.split(".")[-1] for layer in result.layers]]
    methods = list(dict.fromkeys(r["method"] for r in result.rows))
    colours = plt.get_cmap("tab10")
    for i, name in enumerate(methods):
        rows = [r for r in result.rows if r["method"] == name]
        label = name + (" (flagged)" if name in result.flagged else "")
        ax.plot(range(len(rows)), [r["spearman_abs"] for r in rows], "-o", color=colours(i % 10), label=label)
        ax.plot(range(len(rows)), [r["ssim"] for r in rows], "--", color=colours(i % 10), alpha=0.7)
    ax.axhline(flag_spearman, color="grey", lw=0.8, ls=":")
    ax.set_xticks(range(len(steps)), steps, rotation=30)
    ax.set_xlabel("cascading randomisation (output side first)")
    ax.set_ylabel("similarity to the original map")
    ax.set_ylim(-0.2, 1.05)
    ax.set_title("Model randomisation test: Spearman |map| (solid), SSIM (dashed)", fontsize=10)
    ax.legend(fontsize=8)
    return save_figure(fig, path, dpi=100)
