"""report.md of a sweep: the study's two questions first (each with a table, a figure and what the sweep says),
then per corruption, the cells, the corruption errors and the grids."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from . import change
from .change import CLEAN


@dataclass
class ReportParts:
    """What report.md is made of: the cell table, the correlations, the CE table, figures, first events, findings."""

    summary: pd.DataFrame
    y_acc: str
    correlation: dict[str, float]
    flip_correlation: dict[str, float]
    ce_table: pd.DataFrame
    mce: dict[str, Any]
    figures: dict[str, Any]
    agreement: pd.DataFrame
    findings: dict[str, list[str]]


def _get(row: Any, name: str) -> float:
    """A summary row's value, NaN when the column is absent (cells written before it existed)."""
    return math.nan if getattr(row, name, None) is None else float(getattr(row, name))


def render(sweep_dir: Path, parts: ReportParts) -> str:
    """The text of report.md."""
    summary, correlation, y_acc, ce_table = parts.summary, parts.correlation, parts.y_acc, parts.ce_table
    mce, figures, flip_correlation = parts.mce, parts.figures, parts.flip_correlation
    agreement, findings = parts.agreement, parts.findings

    def rel(p: Path) -> str:
        return p.relative_to(sweep_dir).as_posix()

    def fmt(v: Any) -> str:
        return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"

    def ci(r: Any, col: str) -> str:
        return f"{fmt(_get(r, col))} [{fmt(_get(r, col + '_ci_low'))}, {fmt(_get(r, col + '_ci_high'))}]"

    lines = [f"# Sweep report: {sweep_dir.name}", "",
             f"{len(summary)} cells, {int(summary['n'].sum())} image evaluations. Per-cell numbers: "
             "[summary.csv](summary.csv); similarity means carry 95% bootstrap intervals.", "",
             "## Does quality track accuracy?", "",
             f"Mean MOS against {'top-1 accuracy' if y_acc == 'acc_top1' else 'flip rate (no labels)'} over "
             f"{correlation['n']} cells: Spearman ρ = {fmt(correlation['spearman'])} "
             f"(p = {fmt(correlation['spearman_p'])}), Pearson r = {fmt(correlation['pearson'])} "
             f"(p = {fmt(correlation['pearson_p'])}). Mean MOS against flip rate (needs no labels): "
             f"Spearman ρ = {fmt(flip_correlation['spearman'])}, Pearson r = {fmt(flip_correlation['pearson'])}. "
             "A dash: too few cells, or a constant column (e.g. untrained weights).", "",
             f"![mean MOS vs accuracy]({rel(figures['mos_vs_accuracy'])})", "",
             "Per image within each cell: Spearman ρ of the MOS drop with the drop of the classifier's confidence in "
             "its clean prediction, and with the flip (0/1); means with 95% bootstrap intervals.", "",
             "| variant | corruption | severity | MOS drop [95% CI] | confidence drop [95% CI] | flip rate [95% CI] | "
             "ρ(MOS drop, conf. drop) | ρ(MOS drop, flip) |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r.variant} | {r.corruption} | {r.severity} | {ci(r, 'mos_drop')} | {ci(r, 'confidence_drop')} | "
              f"{ci(r, 'flip_rate')} | {fmt(r.rho_mos_drop_confidence_drop)} | {fmt(r.rho_mos_drop_flip)} |"
              for r in summary.itertuples() if r.corruption != CLEAN and r.severity > 0]
    if not agreement.empty:
        lines += ["", "Per image over the sweep: the lowest severity at which the prediction flips and at which the "
                  "MOS category falls below the clean image's ([first_events.csv](first_events.csv)); *same* counts "
                  "the images where both first happen at the same severity, out of those where either happens.", "",
                  "| variant | corruption | images | flip | category drop | either | same | same / either |",
                  "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r.variant} | {r.corruption} | {r.n_images} | {r.n_flip} | {r.n_category_drop} | {r.n_either} | "
                  f"{r.n_same} | {fmt(r.coincide_rate)} |" for r in agreement.itertuples()]
    lines += ["", "### What this sweep says", "",
              "Read from the 95% intervals at each corruption's highest severity (cells of at least "
              f"{change.MIN_IMAGES} images): a drop *falls* when its whole interval lies above 0.", "",
              *[p + "\n" for p in findings["accuracy"]]]
    lines += ["## Do the quality map and the attribution change alike?", "",
              "Each map against itself, clean vs corrupted (CC; 1 = unchanged), and where they changed: the CC of "
              "|Δ quality map| with |Δ attribution| on the 20×20 grid (> 0: they changed in the same places). "
              "ρ(stability): Spearman, across the cell's images, of the two stabilities. CC clean → corrupted: "
              "the similarity of the two maps before and after.", "",
              f"![change]({rel(figures['change'])})", "",
              "| variant | corruption | severity | quality map CC [95% CI] | attribution CC [95% CI] | "
              "change CC [95% CI] | change Spearman | ρ(stability) | CC clean → corrupted |",
              "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r.variant} | {r.corruption} | {r.severity} | {ci(r, 'quality_stability_cc')} | "
              f"{ci(r, 'attr_stability_cc')} | {ci(r, 'change_cc')} | {fmt(r.change_spearman)} | "
              f"{fmt(r.rho_stability)} | {fmt(_get(r, 'sim_cc_clean_mean'))} → {fmt(_get(r, 'sim_cc_mean'))} |"
              for r in summary.itertuples() if r.corruption != CLEAN and r.severity > 0]
    lines += _robustness_table(summary, ci)
    lines += ["", "### What this sweep says", "",
              f"Read from the 95% intervals at each corruption's highest severity (cells of at least "
              f"{change.MIN_IMAGES} images): a map *moved* when its whole "
              f"interval of clean-vs-corrupted CC lies below {change.STABLE_CC}, *held* when it lies above; "
              "a change is shared when the interval of the change CC lies above 0.", "",
              *[p + "\n" for p in findings["change"]],
              "## Per corruption", "", f"![overview]({rel(figures['overview'])})", ""]
    for corruption, path in figures["per_corruption"].items():
        lines += [f"### {corruption}", "", f"![{corruption}]({rel(path)})", ""]
    lines += ["## Cells", "", "| variant | corruption | severity | n | acc@1 | acc@5 | flip | MOS | MOS drop | "
              "CC [95% CI] | stability |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in summary.itertuples():
        lines.append(f"| {r.variant} | {r.corruption} | {r.severity} | {r.n} | {fmt(r.acc_top1)} | {fmt(r.acc_top5)} | "
                     f"{fmt(r.flip_rate)} | {fmt(r.mos_mean)} | {fmt(r.mos_drop)} | {fmt(r.sim_cc_mean)} "
                     f"[{fmt(r.sim_cc_ci_low)}, {fmt(r.sim_cc_ci_high)}] | {fmt(r.attr_stability_cc)} |")
    lines.append("")
    if not ce_table.empty:
        lines += ["## Corruption error (ImageNet-C protocol)", ""]
        for name, m in (mce.get("by_classifier") or {"": mce}).items():
            if m["n_corruptions"]:
                lines.append(f"{name + ': ' if name else ''}mCE = {m['mce']:.1f}%, relative mCE = "
                             f"{m['relative_mce']:.1f}% over {m['n_corruptions']} corruptions (AlexNet = 100%).")
        several = "classifier" in ce_table.columns
        lines += ["", f"| {'classifier | ' if several else ''}corruption | mean error | CE | relative CE |",
                  f"|{'---|' if several else ''}---|---|---|---|"]
        lines += [f"| {r.classifier + ' | ' if several else ''}{r.corruption} | {r.error_mean:.3f} | "
                  f"{100 * r.ce:.1f} | {100 * r.relative_ce:.1f} |" for r in ce_table.itertuples()]
        lines.append("")
    if figures.get("study") is not None:
        lines += ["## The study's figure set", "", "Per corruption: the corrupted image, PaQ-2-PiQ's local map over "
                  "it, the attribution over it.", "", f"![study]({rel(figures['study'])})", ""]
    if figures["map_grids"]:
        lines += ["## Maps across severities", "",
                  "Columns: severities (0 = the clean maps); rows: quality map, attribution, each on one colour scale "
                  "across the severities.", ""]
        lines += [f"![{p.stem}]({rel(p)})" for p in figures["map_grids"]]
        lines.append("")
    return "\n".join(lines)


def _robustness_table(summary: pd.DataFrame, ci: Any) -> list[str]:
    """The attribution's relative input/output stability and its deletion/insertion AUCs (faithfulness.steps > 0),
    clean → corrupted, per corrupted cell."""
    cells = [r for r in summary.itertuples() if r.corruption != CLEAN and r.severity > 0]
    if not cells or "attr_ris" not in summary:
        return []
    curves = [c for c in ("deletion_auc", "insertion_auc") if summary.get(c, pd.Series(dtype=float)).notna().any()]
    head = "".join(f" | {c.split('_')[0]} AUC clean → corrupted [95% CI]" for c in curves)
    lines = ["", "The attribution under the corruption as the perturbation (Agarwal et al. 2022): relative input "
             "stability RIS = ‖Δe/e‖ / ‖Δx/x‖ and relative output stability ROS = ‖Δe/e‖ / ‖Δlogits‖ (lower = more "
             "stable; images whose prediction flipped left out)"
             + (", and its faithfulness: AUC of the target probability as the most-attributed pixels are deleted "
                "(lower = more faithful) or inserted (higher)." if curves else "."), "",
             f"| variant | corruption | severity | RIS [95% CI] | ROS [95% CI]{head} |",
             "|---|---|---|---|---" + "|---" * len(curves) + "|"]
    for r in cells:
        shown = "".join(f" | {_fmt(_get(r, c + '_clean'))} → {ci(r, c)}" for c in curves)
        lines.append(f"| {r.variant} | {r.corruption} | {r.severity} | {ci(r, 'attr_ris')} | {ci(r, 'attr_ros')}"
                     f"{shown} |")
    return lines


def _fmt(v: float) -> str:
    return "—" if math.isnan(v) else f"{v:.3f}"
