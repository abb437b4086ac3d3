"""What a finished cell and a finished sweep print: their headline numbers with 95% bootstrap intervals, and where
their files are."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any

from ..io.schema import PER_IMAGE

# (label, per_image.csv column): the mean over the run's images, with a 95% bootstrap interval of the mean
CELL_HEADLINE = (
    ("top-1 accuracy", "correct_top1"),
    ("flip rate (prediction changed)", "flipped"),
    ("MOS clean", "mos_clean"),
    ("MOS corrupted", "mos"),
    ("MOS drop (clean - corrupted)", "mos_drop"),
    ("map similarity CC (quality vs attribution)", "sim_cc"),
    ("attribution stability CC (clean vs corrupted)", "attr_stability_cc"),
)
# summary.csv columns of a sweep's headline table
SWEEP_HEADLINE = ("corruption", "severity", "n", "acc_top1", "flip_rate", "mos_mean", "mos_drop", "sim_cc_mean",
                  "sim_cc_ci_low", "sim_cc_ci_high", "attr_stability_cc")


def _column(rows: list[dict[str, str]], name: str) -> list[float]:
    return [float(r[name]) for r in rows if r.get(name) not in (None, "")]


def cell_table(run_dir: str | os.PathLike, summary: dict[str, Any], n_boot: int = 1000) -> str:
    """The cell's headline numbers (mean [95% CI] over its images) and its folder, as printed at the end of a run."""
    from .sweep import bootstrap_ci

    with open(Path(run_dir) / PER_IMAGE, newline="") as fh:
        rows = list(csv.DictReader(fh))
    untrained = (summary.get("weights") or {}).get("untrained")
    lines = [f"{summary.get('corruption')} severity {summary.get('severity')}: {summary.get('n_images', len(rows))} "
             f"images, {summary.get('n_skipped', 0)} skipped" + (" (UNTRAINED weights)" if untrained else "")]
    width = max(len(label) for label, _ in CELL_HEADLINE)
    for label, column in CELL_HEADLINE:
        values = [v for v in _column(rows, column) if not math.isnan(v)]
        if not values:
            note = "no labels" if column == "correct_top1" else "undefined"
            lines.append(f"  {label:<{width}}  {'-':>8}  ({note})")
            continue
        low, high = bootstrap_ci(values, n_boot)
        lines.append(f"  {label:<{width}}  {sum(values) / len(values):8.3f}  [{low:.3f}, {high:.3f}]")
    lines.append(f"  folder: {run_dir}")
    return "\n".join(lines)


def sweep_table(sweep_dir: str | os.PathLike) -> str:
    """The report's headline table (summary.csv, one line per cell) and where the report is."""
    sweep_dir = Path(sweep_dir)
    with open(sweep_dir / "summary.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    columns = [c for c in SWEEP_HEADLINE if rows and c in rows[0]]
    if rows and "variant" in rows[0] and len({r["variant"] for r in rows}) > 1:
        columns.insert(0, "variant")
    cells = [[_short(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    lines.append(f"report: {sweep_dir / 'report.md'}")
    return "\n".join(lines)


def _short(text: str) -> str:
    """A number with 3 decimals, an empty value as '-', text as it is."""
    if text == "":
        return "-"
    try:
        number = float(text)
    except ValueError:
        return text
    return str(int(number)) if number.is_integer() and "." not in text else f"{number:.3f}"
