"""Sweep report: one summary row per cell, correlations, mCE, figures and report.md.

    python -m iqa_saliency.report SWEEP_DIR     # (re)build the report of a finished sweep
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from ..io.atomic import atomic_write_text, strict_json
from ..io.csv_safe import neutralise_frame, restore_frame
from ..io.schema import PER_IMAGE, SUMMARY
from ..models.weights import UNTRAINED
from . import change
from .change import CLEAN
from .style import untrained_mark

log = logging.getLogger(__name__)

# Hendrycks & Dietterich (ICLR 2019): AlexNet top-1 error on ImageNet-C, averaged over severities 1-5,
# and on clean ImageNet (Table 1: 43.5%).
ALEXNET_ERRORS = {
    "gaussian_noise": 0.886428, "shot_noise": 0.894468, "impulse_noise": 0.922640, "defocus_blur": 0.819880,
    "glass_blur": 0.826268, "motion_blur": 0.785948, "zoom_blur": 0.798360, "snow": 0.866816,
    "frost": 0.826572, "fog": 0.819324, "brightness": 0.564592, "contrast": 0.853204,
    "elastic_transform": 0.646056, "pixelate": 0.717840, "jpeg_compression": 0.606500,
}
ALEXNET_CLEAN_ERROR = 0.435

# summary.csv column -> summary.json metric
METRIC_COLUMNS = {
    "acc_top1": "acc/top1", "acc_top5": "acc/top5", "flip_rate": "robustness/flip_rate",
    "mos_mean": "quality/mos_mean", "mos_std": "quality/mos_std", "mos_drop": "quality/mos_drop",
    "mos_normalized_mean": "quality/mos_normalized_mean", "attr_stability_cc": "attribution/stability_cc",
    "spearman_mos_confidence": "correlation/mos_vs_clean_pred_prob_spearman",
    "quality_stability_cc": "quality/stability_cc", "change_cc": "change/cc", "change_spearman": "change/spearman",
    "confidence_drop": "robustness/confidence_drop",
    "rho_stability": "correlation/quality_vs_attr_stability_spearman",
    "rho_mos_drop_confidence_drop": "correlation/mos_drop_vs_confidence_drop_spearman",
    "rho_mos_drop_flip": "correlation/mos_drop_vs_flipped_spearman",
    "attr_ris": "attribution/ris", "attr_ros": "attribution/ros",
    "deletion_auc_clean": "faithfulness/deletion_auc_clean", "deletion_auc": "faithfulness/deletion_auc",
    "insertion_auc_clean": "faithfulness/insertion_auc_clean", "insertion_auc": "faithfulness/insertion_auc",
}
# summary.csv `<column>_ci_low/high` -> the per-image column whose mean it bounds (sim_* columns get theirs too)
CI_COLUMNS = {"acc_top1": "correct_top1", "acc_top5": "correct_top5", "mos_mean": "mos", "flip_rate": "flipped",
              "mos_drop": "mos_drop", "confidence_drop": "confidence_drop",
              "attr_stability_cc": "attr_stability_cc", "quality_stability_cc": "quality_stability_cc",
              "change_cc": "change_cc", "change_spearman": "change_spearman",
              **{col: col for col in ("attr_ris", "attr_ros", "deletion_auc_clean", "deletion_auc",
                                      "insertion_auc_clean", "insertion_auc")}}


@dataclass
class Cell:
    """One finished run of a sweep: its folder, summary.json and per-image rows."""

    path: Path
    summary: dict[str, Any]
    rows: pd.DataFrame

    @property
    def classifier(self) -> str:
        """The classifier's weights name (or its architecture): what accuracy and the error rates depend on.
        Untrained weights are named by the architecture too, so two untrained models are never pooled."""
        s = self.summary
        arch = s.get("classifier", {}).get("arch", "")
        name = (s.get("weights") or {}).get("classifier", {}).get("name")
        return f"{arch} (untrained)" if name == UNTRAINED and arch else name or arch

    @property
    def quality(self) -> str:
        """A pyiqa quality model's metric (quality=pyiqa; '' for the default PaQ-2-PiQ): cells of a sweep over
        metrics are told apart by it."""
        metric = ((self.summary.get("config") or {}).get("quality") or {}).get("metric")
        return str(metric) if metric else ""

    @property
    def variant(self) -> str:
        """What besides (corruption, severity) distinguishes cells: attribution method and the model pair."""
        quality = f" · {self.quality}" if self.quality else ""
        return f"{self.summary.get('attribution', '')} · {self.classifier}{quality}"


def load_cells(sweep_dir: str | os.PathLike) -> list[Cell]:
    """Every complete cell (a folder with summary.json and per_image.csv) below `sweep_dir`."""
    cells = []
    for summary_path in sorted(Path(sweep_dir).rglob(SUMMARY)):
        run = summary_path.parent
        hidden = any(part.startswith(".") for part in run.relative_to(sweep_dir).parts)
        if (run / PER_IMAGE).is_file() and not hidden:
            cells.append(Cell(run, json.loads(summary_path.read_text()),
                              restore_frame(pd.read_csv(run / PER_IMAGE, keep_default_na=True))))
    return cells


def bootstrap_ci(values: Sequence[float], n_boot: int = 1000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean (NaN values dropped)."""
    x = np.asarray(values, dtype=np.float64)
    x = x[~np.isnan(x)]
    if x.size == 0:
        return math.nan, math.nan
    if x.size == 1:
        return float(x[0]), float(x[0])
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    alpha = (1 - level) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def similarity_columns(rows: pd.DataFrame) -> list[str]:
    return [c for c in rows.columns if c.startswith("sim_")]


def summarize_cells(cells: Sequence[Cell], n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """summary.csv: one row per cell; metric values are the cell's summary.json values, CIs from its rows."""
    records = []
    for cell in cells:
        s = cell.summary
        metrics = s.get("metrics") or {}
        rec: dict[str, Any] = {
            "corruption": s["corruption"], "severity": int(s["severity"]), "variant": cell.variant,
            "classifier": cell.classifier,
            "attribution": s.get("attribution"), "n": int(s.get("n_images", len(cell.rows))),
            "n_skipped": int(s.get("n_skipped", 0)),
        }
        for col, key in METRIC_COLUMNS.items():
            rec[col] = _num(metrics.get(key))
        for col, per_image in CI_COLUMNS.items():
            values = cell.rows[per_image] if per_image in cell.rows else []
            rec[f"{col}_ci_low"], rec[f"{col}_ci_high"] = bootstrap_ci(values, n_boot, seed)
        for col in similarity_columns(cell.rows):
            name = col[len("sim_"):]
            key = f"similarity/{name}"
            rec[f"sim_{name}_mean"] = _num(metrics[key]) if key in metrics else _nanmean(cell.rows[col])
            rec[f"sim_{name}_ci_low"], rec[f"sim_{name}_ci_high"] = bootstrap_ci(cell.rows[col], n_boot, seed)
        rec["run"] = str(cell.path)
        records.append(rec)
    if not records:
        return pd.DataFrame()
    return pd.DataFrame.from_records(records).sort_values(["variant", "corruption", "severity"], ignore_index=True)


def _num(value: Any) -> float:
    return math.nan if value is None else float(value)


def _nanmean(values: Any) -> float:
    """The mean of the non-NaN values; NaN (and no warning) when there are none."""
    x = np.asarray(values, dtype=np.float64)
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else math.nan


def correlation_across_cells(summary: pd.DataFrame, x: str = "mos_mean", y: str = "acc_top1") -> dict[str, float]:
    """Spearman and Pearson correlation of two summary columns across cells (NaN rows dropped)."""
    pair = summary[[x, y]].dropna()
    n = len(pair)
    if n < 3 or pair[x].nunique() < 2 or pair[y].nunique() < 2:
        return {"n": n, "spearman": math.nan, "spearman_p": math.nan, "pearson": math.nan, "pearson_p": math.nan}
    sp = stats.spearmanr(pair[x], pair[y])
    pe = stats.pearsonr(pair[x], pair[y])
    return {"n": n, "spearman": float(sp.statistic), "spearman_p": float(sp.pvalue),
            "pearson": float(pe.statistic), "pearson_p": float(pe.pvalue)}


def clean_error(cells: Sequence[Cell]) -> float:
    """Top-1 error of the clean predictions (every cell records them), over the labelled images."""
    frames = [c.rows[["image", "label", "clean_pred"]] for c in cells if {"label", "clean_pred"} <= set(c.rows)]
    if not frames:
        return math.nan
    rows = pd.concat(frames).drop_duplicates("image").dropna(subset=["label"])
    return float((rows["clean_pred"] != rows["label"]).mean()) if len(rows) else math.nan


def corruption_errors(summary: pd.DataFrame, clean_err: float, reference: dict[str, float] = ALEXNET_ERRORS,
                      reference_clean: float = ALEXNET_CLEAN_ERROR) -> pd.DataFrame:
    """Corruption error CE and relative CE per corruption (top-1 error, severities 1-5, normalised by AlexNet).

    CE_c = Σ_s E_{s,c} / Σ_s E^AlexNet_{s,c};
    relative CE_c = Σ_s (E_{s,c} − E_clean) / Σ_s (E^AlexNet_{s,c} − E^AlexNet_clean).
    The reference errors are averages over severities, so Σ_s E^AlexNet_{s,c} = 5 × the average. A corruption
    counts only when all five severities have an accuracy.
    """
    rows = []
    for corruption, ref in reference.items():
        cells = summary[(summary["corruption"] == corruption) & (summary["severity"].between(1, 5))]
        cells = cells.dropna(subset=["acc_top1"])
        if sorted(cells["severity"].unique().tolist()) != [1, 2, 3, 4, 5]:
            continue
        errors = 1 - cells.groupby("severity")["acc_top1"].mean()
        rows.append({
            "corruption": corruption,
            "error_mean": float(errors.mean()),
            "ce": float(errors.sum() / (5 * ref)),
            "relative_ce": float((errors - clean_err).sum() / (5 * (ref - reference_clean))),
        })
    return pd.DataFrame(rows, columns=["corruption", "error_mean", "ce", "relative_ce"])


def mean_corruption_error(ce_table: pd.DataFrame) -> dict[str, float]:
    """mCE and relative mCE (in %) over the corruptions in the table."""
    if ce_table.empty:
        return {"mce": math.nan, "relative_mce": math.nan, "n_corruptions": 0}
    return {"mce": 100 * float(ce_table["ce"].mean()), "relative_mce": 100 * float(ce_table["relative_ce"].mean()),
            "n_corruptions": int(len(ce_table))}


def errors_by_classifier(summary: pd.DataFrame, cells: Sequence[Cell]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The CE table and mCE of each classifier in the sweep, never pooled across classifiers.

    One classifier: its table and mCE as they are. Several: the table gains a leading `classifier` column and
    the mCE holds `by_classifier` (the pooled mce/relative_mce are NaN: they would mix models).
    """
    tables, by_classifier = [], {}
    for name in sorted({c.classifier for c in cells}):
        rows = summary[summary["classifier"] == name]
        table = corruption_errors(rows, clean_error([c for c in cells if c.classifier == name]))
        by_classifier[name] = mean_corruption_error(table)
        tables.append(table.assign(classifier=name))
    if len(tables) == 1:
        return tables[0].drop(columns="classifier"), by_classifier[next(iter(by_classifier))]
    table = pd.concat(tables, ignore_index=True)
    table = table[["classifier", *[c for c in table.columns if c != "classifier"]]]
    mce = {**mean_corruption_error(pd.DataFrame()), "by_classifier": by_classifier}
    return table, mce


def with_clean_points(summary: pd.DataFrame) -> pd.DataFrame:
    """Per-corruption curves start at severity 0: clean cells (corruption=none) are copied to every corruption."""
    corruptions = sorted(set(summary["corruption"]) - {CLEAN})
    clean = summary[summary["corruption"] == CLEAN]
    parts = [summary[summary["corruption"] != CLEAN]]
    for corruption in corruptions:
        have = summary[(summary["corruption"] == corruption) & (summary["severity"] == 0)]
        for variant, rows in clean.groupby("variant"):
            if variant not in set(have["variant"]):
                parts.append(rows.assign(corruption=corruption))
    return pd.concat(parts, ignore_index=True).sort_values(["variant", "corruption", "severity"], ignore_index=True)


def write_report(sweep_dir: str | os.PathLike, n_boot: int = 1000, seed: int = 0,
                 images: Sequence[str] | None = None, style: Any = None, study: Any = None,
                 cells: Sequence[Cell] | None = None) -> Path:
    """Build summary.csv, figures and report.md in `sweep_dir`; returns the report's path. `style`: a
    style.FigureStyle (format, dpi), PNG at 150 dpi by default; `study`: a style.StudyFigures (the original
    study's figure set when enabled); `cells`: load_cells(sweep_dir) when the caller has them already (the report
    writes no cell's files, so they stay valid for logging it afterwards)."""
    import matplotlib.pyplot as plt

    from . import figures as figs

    style = style or figs.DEFAULT_STYLE
    cells = load_cells(Path(sweep_dir)) if cells is None else list(cells)
    if not cells:
        raise FileNotFoundError(f"No complete cell (summary.json + per_image.csv) under {sweep_dir}.")
    with plt.rc_context(style.rc()), figs.marked(untrained_mark([c.summary for c in cells])):
        return _write_report(Path(sweep_dir), cells, n_boot, seed, images, style, study)


def _write_report(sweep_dir: Path, cells: list[Cell], n_boot: int, seed: int, images: Sequence[str] | None,
                  style: Any, study: Any) -> Path:
    from . import figures as figs
    from . import markdown

    summary = summarize_cells(cells, n_boot=n_boot, seed=seed)
    atomic_write_text(sweep_dir / "summary.csv", neutralise_frame(summary).to_csv(index=False))
    fig_dir = sweep_dir / "report_figures"
    curves = with_clean_points(summary)
    y_acc = "acc_top1" if summary["acc_top1"].notna().any() else "flip_rate"
    correlation = correlation_across_cells(summary, "mos_mean", y_acc)
    flip_correlation = correlation_across_cells(summary, "mos_mean", "flip_rate")
    ce_table, mce = errors_by_classifier(summary, cells)
    if not ce_table.empty:
        atomic_write_text(sweep_dir / "corruption_errors.csv", neutralise_frame(ce_table).to_csv(index=False))
    events = change.first_events(cells)
    agreement = change.event_agreement(events)
    atomic_write_text(sweep_dir / "first_events.csv", neutralise_frame(events).to_csv(index=False))
    figures = {
        "change": figs.change_curves(curves, style.path(fig_dir, "change")),
        "per_corruption": figs.per_corruption_panels(curves, fig_dir, y_acc, style),
        "overview": figs.overview_grid(curves, style.path(fig_dir, "overview"), y_acc),
        "mos_vs_accuracy": figs.mos_vs_accuracy(summary, style.path(fig_dir, "mos_vs_accuracy"), y_acc, correlation),
        "map_grids": figs.map_grids(cells, fig_dir, images, style=style),
        "study": (figs.study_figure(cells, style.path(fig_dir, "study"), study)
                  if study is not None and study.enabled else None),
    }
    findings = change.findings(summary)
    text = markdown.render(sweep_dir, markdown.ReportParts(summary, y_acc, correlation, flip_correlation, ce_table,
                                                           mce, figures, agreement, findings))
    path = sweep_dir / "report.md"
    atomic_write_text(path, text)
    atomic_write_text(sweep_dir / "report.json", strict_json(
        {"correlation": {"x": "mos_mean", "y": y_acc, **correlation},
         "correlation_flip_rate": {"x": "mos_mean", "y": "flip_rate", **flip_correlation},
         "mce": mce, "n_cells": len(cells),
         "first_events": agreement.to_dict("records"), "findings": findings},
        indent=2) + "\n")
    return path


# The study's panels against severity, one line per corruption (the report run's line plots).
PANELS = {"acc_top1": "top-1 accuracy", "acc_top5": "top-5 accuracy", "flip_rate": "flip rate",
          "mos_mean": "mean MOS", "sim_cc_mean": "CC (quality map vs attribution)"}


def severity_lines(curves: pd.DataFrame, column: str) -> dict[str, tuple[list[int], list[float]]]:
    """One (severities, values) line per corruption (per variant when several), NaN points left out."""
    lines: dict[str, tuple[list[int], list[float]]] = {}
    several = curves["variant"].nunique() > 1
    for (variant, corruption), rows in curves.groupby(["variant", "corruption"], sort=True):
        if corruption == CLEAN and len(set(curves["corruption"])) > 1:
            continue  # the clean cells are every corruption's severity-0 point
        rows = rows.dropna(subset=[column]).sort_values("severity")
        if len(rows):
            key = f"{corruption} ({variant})" if several else str(corruption)
            lines[key] = ([int(s) for s in rows["severity"]], [float(v) for v in rows[column]])
    return lines


def log_report_to_wandb(sweep_dir: Path, cells: Sequence[Cell]) -> None:
    """A final wandb run (offline unless the cells' logger was online), grouped with the sweep's runs: the
    per-cell table (one row per cell), the study's panels as line plots against severity (one line per
    corruption) and the report's figures."""
    logger_cfg = (cells[0].summary.get("config") or {}).get("logger") or {} if cells else {}
    if "WandbLogger" not in str(logger_cfg.get("_target_", "")):
        return
    import wandb

    from .loggers import in_run_files

    run = wandb.init(project=logger_cfg.get("project", "iqa-saliency"), group=sweep_dir.name, job_type="report",
                     name=f"{sweep_dir.name}-report", dir=str(sweep_dir),
                     mode="offline" if logger_cfg.get("offline", True) else "online", reinit="finish_previous",
                     config={"sweep_dir": str(sweep_dir), "n_cells": len(cells)})
    summary = restore_frame(pd.read_csv(sweep_dir / "summary.csv"))
    # undefined values (accuracy without labels, ...) as None: wandb would write NaN into the table's JSON file
    logged: dict[str, Any] = {"summary": wandb.Table(dataframe=summary.astype(object).where(summary.notna(), None))}
    curves = with_clean_points(summary)
    for column, title in PANELS.items():
        lines = severity_lines(curves, column) if column in curves else {}
        if lines:
            logged[f"panels/{column}"] = wandb.plot.line_series(
                xs=[x for x, _ in lines.values()], ys=[y for _, y in lines.values()], keys=list(lines),
                title=f"{title} vs severity", xname="severity")
    for png in sorted((sweep_dir / "report_figures").glob("*.png")):
        logged[f"figures/{png.stem}"] = wandb.Image(str(png))
    run.log(in_run_files(run, logged))  # offline: no artifact naming files by absolute path (report.loggers)
    report = json.loads((sweep_dir / "report.json").read_text()) if (sweep_dir / "report.json").is_file() else {}
    run.summary.update({"n_cells": len(cells), "mce": (report.get("mce") or {}).get("mce"),
                        "mos_vs_accuracy_spearman": (report.get("correlation") or {}).get("spearman")})
    run.finish()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build (or rebuild) the report of an evaluate.py -m sweep.")
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for the 95%% intervals")
    parser.add_argument("--images", nargs="*", default=None, help="image ids for the severity grids")
    parser.add_argument("--wandb", action="store_true", help="also log the report to an offline wandb run")
    parser.add_argument("--format", choices=("png", "pdf", "svg"), default="png", help="the figures' file format")
    parser.add_argument("--dpi", type=int, default=150, help="the figures' resolution")
    parser.add_argument("--study-image", default=None,
                        help="also draw the original study's figure set for this image id (or dataset position)")
    parser.add_argument("--study-severity", type=int, default=2, help="the severity of the study's figure set")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not args.sweep_dir.is_dir():
        parser.error(f"{args.sweep_dir} is not a folder. Pass the sweep folder (hydra.sweep.dir).")
    from .style import FigureStyle, StudyFigures

    pick = args.study_image
    study = StudyFigures.from_config({"study_figures": pick is not None, "study_severity": args.study_severity,
                                      "study_image": int(pick) if pick is not None and pick.isdigit() else pick})
    cells = load_cells(args.sweep_dir)  # read once, for the report and its wandb run
    path = write_report(args.sweep_dir, n_boot=args.n_boot, images=args.images,
                        style=FigureStyle(format=args.format, dpi=args.dpi), study=study, cells=cells)
    if args.wandb:
        log_report_to_wandb(args.sweep_dir, cells)
    print(path)
    return 0

