"""Read the original study's dataset-level curves off its figures into src/iqa_saliency/study/published_curves.csv.

The study published its top-1 / top-5 accuracy and mean raw MOS per severity only as matplotlib figures:
plots/<corruption>.png (the repository's run: 7 corruptions, severities 0-3) and Report/Images/<corruption>.png
(the Report's run: 4 corruptions, severities 0-2). Each figure has three panels with a grid; this script finds
the panels' frames, their grid lines and the curve (matplotlib's default blue) in the pixels, and maps the
curve's height at each integer severity to a value through the grid lines, whose labels are given below (read
off the figures: the value of the lowest grid line found inside the frame, and the step between grid lines).
`resolution` is two pixels in data units (the curve is drawn about two pixels thick).

    python scripts/read_study_plots.py /path/to/Saliency-Maps-NR-IQA-Classification-Models
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np
from PIL import Image

OUT = Path(__file__).resolve().parents[1] / "src" / "iqa_saliency" / "study" / "published_curves.csv"
METRICS = ("top1", "top5", "mean_mos")
# figure -> per panel (top-1, top-5, mean MOS): (value of the lowest grid line inside the frame, grid step)
TICKS = {
    "plots/brightness.png": ((0.56, 0.02), (0.84, 0.01), (73.30, 0.05)),
    "plots/contrast.png": ((0.35, 0.05), (0.70, 0.05), (66.0, 2.0)),
    "plots/jpeg_compression.png": ((0.56, 0.02), (0.83, 0.01), (70.0, 0.5)),
    "plots/saturate.png": ((0.475, 0.025), (0.76, 0.02), (70.0, 1.0)),
    "plots/defocus_blur.png": ((0.30, 0.05), (0.55, 0.05), (50.0, 5.0)),
    "plots/motion_blur.png": ((0.25, 0.05), (0.50, 0.05), (50.0, 5.0)),
    "plots/zoom_blur.png": ((0.30, 0.05), (0.60, 0.05), (57.5, 2.5)),
    "Report/Images/brightness.png": ((0.584, 0.002), (0.824, 0.002), (73.56, 0.02)),
    "Report/Images/contrast.png": ((0.565, 0.005), (0.810, 0.005), (68.0, 1.0)),
    "Report/Images/jpeg_compression.png": ((0.54, 0.01), (0.80, 0.01), (70.5, 0.5)),
    "Report/Images/saturate.png": ((0.560, 0.005), (0.800, 0.005), (70.0, 1.0)),
}
SEVERITIES = {"plots": 3, "Report": 2}  # the last severity on each set's x axis
BLUE = np.array([31, 119, 180])  # matplotlib's C0
GRID_GREY = 176  # matplotlib's default grid colour, #b0b0b0


def _groups(indices: list[int]) -> list[float]:
    """Centres of runs of consecutive indices (a line a few pixels thick)."""
    runs: list[list[int]] = []
    for i in indices:
        if runs and i - runs[-1][-1] <= 2:
            runs[-1].append(i)
        else:
            runs.append([i])
    return [float(np.mean(r)) for r in runs]


def read_figure(path: Path, ticks: tuple, last_severity: int) -> list[tuple[int, str, float, float]]:
    """(severity, metric, value, resolution) for each point of the figure's three curves."""
    a = np.asarray(Image.open(path).convert("RGB")).astype(int)
    dark = a.sum(-1) < 100
    h, w = dark.shape
    xs = _groups([x for x in range(w) if dark[:, x].sum() > 0.3 * h])
    ys = _groups([y for y in range(h) if dark[y, :].sum() > 0.5 * w])
    top, bottom = int(ys[0]), int(ys[-1])
    if len(xs) != 6:
        raise SystemExit(f"{path}: found {len(xs)} vertical frame lines, not 6 (3 panels)")
    out = []
    for k, metric in enumerate(METRICS):
        left, right = int(xs[2 * k]), int(xs[2 * k + 1])
        panel = a[top + 2:bottom - 1, left + 2:right - 1]
        grey = np.abs(panel - GRID_GREY).max(-1) < 20
        hgrid = _groups([y for y in range(panel.shape[0]) if grey[y].mean() > 0.3])  # top to bottom
        vgrid = _groups([x for x in range(panel.shape[1]) if grey[:, x].mean() > 0.3])
        blue = np.abs(panel - BLUE).max(-1) < 60
        low, step = ticks[k]
        spacing = (hgrid[-1] - hgrid[0]) / (len(hgrid) - 1)
        per_severity = (len(vgrid) - 1) // last_severity
        for s in range(last_severity + 1):
            x = int(round(vgrid[s * per_severity]))
            rows = np.nonzero(blue[:, x - 1:x + 2].any(1))[0]
            value = low + (hgrid[-1] - float(rows.mean())) / spacing * step
            out.append((s, metric, value, 2 * step / spacing))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", type=Path, help="a clone of the study's repository (commit f028918)")
    args = parser.parse_args(argv)
    rows = []
    for figure, ticks in TICKS.items():
        corruption = Path(figure).stem
        for severity, metric, value, resolution in read_figure(args.study / figure, ticks,
                                                               SEVERITIES[figure.split("/")[0]]):
            rows.append([figure, corruption, severity, metric, f"{value:.4g}", f"{resolution:.2g}"])
    with open(OUT, "w", newline="") as f:
        f.write("# The study's dataset-level curves (github.com/dks2000dks/Saliency-Maps-NR-IQA-Classification-Models,"
                "\n# commit f028918), read off its figures by scripts/read_study_plots.py; resolution = two pixels.\n")
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["source", "corruption", "severity", "metric", "value", "resolution"])
        writer.writerows(rows)
    print(f"{len(rows)} points -> {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
