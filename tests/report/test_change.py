"""The change question across a sweep: first flip / first category drop per image (hand cases), the summary.csv
columns and intervals of the new per-image numbers (independent percentile bootstrap), and the report's generated
sentences on sweeps whose answer is known by construction."""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from helpers import reference as ref

from iqa_saliency.errors import ConfigError
from iqa_saliency.report.change import event_agreement, findings, first_events
from iqa_saliency.report.style import FigureStyle
from iqa_saliency.report.sweep import Cell, summarize_cells, write_report


def _cell(tmp: Path, corruption: str, severity: int, rows: pd.DataFrame, metrics: dict | None = None) -> Cell:
    summary = {"corruption": corruption, "severity": severity, "attribution": "gradcam",
               "classifier": {"arch": "resnet18"}, "n_images": len(rows), "metrics": metrics or {}}
    return Cell(tmp / f"{corruption}-{severity}", summary, rows)


def test_first_flip_and_first_category_drop_per_image(tmp_path):
    # image a: flips at 2, its category drops at 2 (same); b: flips at 1 only (drop never); c: drops at 3, flips
    # at 3 but not at 2 again... flips at 1 then not: first is 1; d: nothing; e: category rises (not a drop)
    images = ["a", "b", "c", "d", "e"]
    clean = ["Good", "Good", "Excellent", "Fair", "Fair"]
    by_severity = {
        1: ([0, 1, 1, 0, 0], ["Good", "Good", "Excellent", "Fair", "Good"]),
        2: ([1, 1, 0, 0, 0], ["Fair", "Good", "Excellent", "Fair", "Good"]),
        3: ([1, 0, 1, 0, 0], ["Fair", "Good", "Good", "Fair", "Excellent"]),
    }
    cells = [_cell(tmp_path, "fog", s, pd.DataFrame({"image": images, "flipped": f, "quality_category": q,
                                                     "quality_category_clean": clean}))
             for s, (f, q) in by_severity.items()]
    clean_cell = _cell(tmp_path, "none", 0, pd.DataFrame({"image": images, "flipped": [1] * 5, "quality_category":
                                                          ["Bad"] * 5, "quality_category_clean": clean}))
    events = first_events([cells[2], clean_cell, cells[0], cells[1]]).set_index("image")  # any order
    assert events.loc["a", "first_flip"] == 2 and events.loc["a", "first_category_drop"] == 2
    assert events.loc["b", "first_flip"] == 1 and math.isnan(events.loc["b", "first_category_drop"])
    assert events.loc["c", "first_flip"] == 1 and events.loc["c", "first_category_drop"] == 3
    assert math.isnan(events.loc["d", "first_flip"]) and math.isnan(events.loc["d", "first_category_drop"])
    assert math.isnan(events.loc["e", "first_category_drop"])
    agreement = event_agreement(events.reset_index()).iloc[0]
    assert (agreement["n_images"], agreement["n_flip"], agreement["n_category_drop"]) == (5, 3, 2)
    assert (agreement["n_either"], agreement["n_same"]) == (3, 1)
    assert agreement["coincide_rate"] == pytest.approx(1 / 3)
    nothing = event_agreement(events.reset_index().assign(first_flip=np.nan, first_category_drop=np.nan))
    assert math.isnan(nothing.iloc[0]["coincide_rate"])  # undefined, not 0


def test_summary_csv_new_columns_and_intervals(tmp_path):
    rng = np.random.default_rng(4)
    rows = pd.DataFrame({"image": [f"i{k}" for k in range(9)], "sim_cc": rng.normal(size=9),
                         "sim_cc_clean": rng.normal(size=9), "quality_stability_cc": rng.uniform(size=9),
                         "attr_stability_cc": rng.uniform(size=9), "change_cc": rng.normal(size=9),
                         "change_spearman": rng.normal(size=9), "confidence_drop": rng.normal(size=9),
                         "mos_drop": rng.normal(size=9), "flipped": rng.integers(0, 2, 9)})
    rows.loc[2, "change_cc"] = np.nan
    metrics = {"quality/stability_cc": 0.51, "change/cc": 0.12, "change/spearman": 0.13,
               "robustness/confidence_drop": 0.2, "similarity/cc_clean": 0.3,
               "correlation/quality_vs_attr_stability_spearman": 0.4,
               "correlation/mos_drop_vs_confidence_drop_spearman": None,
               "correlation/mos_drop_vs_flipped_spearman": -0.5}
    out = summarize_cells([_cell(tmp_path, "fog", 2, rows, metrics)], n_boot=300, seed=2).iloc[0]
    expected = {"quality_stability_cc": 0.51, "change_cc": 0.12, "change_spearman": 0.13, "confidence_drop": 0.2,
                "sim_cc_clean_mean": 0.3, "rho_stability": 0.4, "rho_mos_drop_flip": -0.5}
    for col, value in expected.items():
        assert out[col] == value, col
    assert math.isnan(out["rho_mos_drop_confidence_drop"])  # undefined stays undefined
    for col, per_image in {"quality_stability_cc": "quality_stability_cc", "change_cc": "change_cc",
                           "change_spearman": "change_spearman", "confidence_drop": "confidence_drop",
                           "attr_stability_cc": "attr_stability_cc", "mos_drop": "mos_drop",
                           "flip_rate": "flipped", "sim_cc_clean": "sim_cc_clean"}.items():
        want = ref.percentile_bootstrap(rows[per_image].astype(float), 300, 2, 0.95)
        assert (out[f"{col}_ci_low"], out[f"{col}_ci_high"]) == pytest.approx(want, rel=1e-12), col
    old = summarize_cells([_cell(tmp_path, "fog", 2, rows[["image", "sim_cc"]])]).iloc[0]  # a run from before
    assert math.isnan(old["change_cc"]) and math.isnan(old["change_cc_ci_low"])


# ------------------------------------------------------------------ sweeps whose answer is known by construction

N = 40


def _rows(rng: np.random.Generator, quality: float, attribution: float, change: float, mos_drop: float,
          confidence_drop: float, spread: float = 0.02) -> pd.DataFrame:
    """Per-image rows around the given means (small spread: the intervals are narrow)."""
    def around(mean: float) -> np.ndarray:
        return mean + spread * rng.standard_normal(N)

    return pd.DataFrame({"image": [f"i{k}" for k in range(N)], "quality_stability_cc": around(quality),
                         "attr_stability_cc": around(attribution), "change_cc": around(change),
                         "change_spearman": around(change), "mos_drop": around(mos_drop),
                         "confidence_drop": around(confidence_drop), "flipped": (rng.uniform(size=N) < 0.3) * 1,
                         "sim_cc": around(0.1)})


# corruption -> what happens at severity 3, by construction
DESIGN = {
    "contrast": {"quality": 0.4, "attribution": 0.3, "change": 0.6, "mos_drop": 8.0, "confidence_drop": 0.3},
    "fog": {"quality": 0.97, "attribution": 0.35, "change": 0.0, "mos_drop": 0.0, "confidence_drop": 0.4},
    "snow": {"quality": 0.5, "attribution": 0.98, "change": 0.0, "mos_drop": 6.0, "confidence_drop": 0.0},
    "pixelate": {"quality": 0.99, "attribution": 0.99, "change": 0.0, "mos_drop": 0.0, "confidence_drop": 0.0},
    "shot_noise": {"quality": 0.3, "attribution": 0.2, "change": -0.5, "mos_drop": 5.0, "confidence_drop": 0.2},
    "frost": {"quality": 0.2, "attribution": 0.25, "change": 0.0, "mos_drop": 5.0, "confidence_drop": 0.2},
}


def _sweep(tmp: Path, only: tuple[str, ...] = tuple(DESIGN)) -> list[Cell]:
    rng = np.random.default_rng(0)
    cells = []
    for corruption, d in DESIGN.items():
        if corruption not in only:
            continue
        # severity 1: nothing moved yet (the verdict reads the highest severity)
        cells.append(_cell(tmp, corruption, 1, _rows(rng, 0.99, 0.99, 0.0, 0.0, 0.0)))
        cells.append(_cell(tmp, corruption, 3, _rows(rng, d["quality"], d["attribution"], d["change"], d["mos_drop"],
                                                     d["confidence_drop"])))
    # "jpeg_compression": the intervals straddle the 0.9 line (a wide spread over few images): no claim
    wide = _rows(rng, 0.9, 0.9, 0.0, 0.0, 0.0, spread=0.5)
    cells.append(_cell(tmp, "jpeg_compression", 3, wide))
    return cells


def test_generated_sentences_say_what_was_built_in(tmp_path):
    summary = summarize_cells(_sweep(tmp_path), n_boot=500)
    said = findings(summary)
    (text,), (accuracy,) = said["change"], said["accuracy"]
    assert "Both maps moved under contrast (s3), frost (s3), shot_noise (s3)." in text
    assert "Only the attribution moved under fog (s3)." in text
    assert "Only the quality map moved under snow (s3)." in text
    assert "Neither map moved under pixelate (s3)." in text
    assert "cannot tell whether both maps moved under jpeg_compression (s3)." in text
    same = text.split("they moved in the same places")[1].split(".")[0]
    assert "contrast" in same and "shot_noise" not in same and "frost" not in same
    assert "opposite places (change CC < 0): shot_noise" in text
    assert "no link between where they moved (change CC ∋ 0): frost" in text
    assert "MOS and the classifier's confidence both fall under contrast (s3), frost (s3), shot_noise (s3)." in accuracy
    assert "MOS falls but the classifier's confidence does not clearly fall under snow (s3)." in accuracy
    assert "The classifier's confidence falls but MOS does not clearly fall under fog (s3)." in accuracy
    assert "Neither clearly falls under jpeg_compression (s3), pixelate (s3)." in accuracy
    # nothing is claimed about the corruption whose intervals decide nothing, beyond saying so
    assert text.count("jpeg_compression") == 1


def test_no_claim_from_too_few_images(tmp_path):
    # nine images that all moved together by far: a narrow bootstrap interval, but too few images to claim it
    rows = _rows(np.random.default_rng(1), 0.1, 0.1, 0.9, 9.0, 0.9).iloc[:9]
    summary = summarize_cells([_cell(tmp_path, "fog", 2, rows)], n_boot=100)
    assert summary.loc[0, "quality_stability_cc_ci_high"] < 0.9  # the interval alone would say "moved"
    said = findings(summary)
    (text,), (accuracy,) = said["change"], said["accuracy"]
    assert text == "The intervals cannot tell whether both maps moved under fog (s2)."
    assert accuracy == "Neither clearly falls under fog (s2)."
    summary = summarize_cells([_cell(tmp_path, "fog", 2, _rows(np.random.default_rng(1), 0.1, 0.1, 0.9, 9.0,
                                                                0.9).iloc[:10])], n_boot=100)
    assert findings(summary)["change"][0].startswith("Both maps moved under fog (s2).")


def test_report_has_both_questions_with_a_table_a_figure_and_the_paragraph(tmp_path):
    for k, cell in enumerate(_sweep(tmp_path / "cells", only=("fog",))):
        run = tmp_path / f"{k}_{cell.summary['corruption']}_{cell.summary['severity']}"
        run.mkdir()
        rows = cell.rows.assign(quality_category="Good", quality_category_clean="Good")
        rows.to_csv(run / "per_image.csv", index=False)
        (run / "summary.json").write_text(json.dumps(cell.summary))
    path = write_report(tmp_path, n_boot=100)
    text = path.read_text()
    first = text.index("## Does quality track accuracy?")
    second = text.index("## Do the quality map and the attribution change alike?")
    assert first < text.index("### What this sweep says") < second < text.rindex("### What this sweep says")
    assert "| corruption | severity | quality map CC [95% CI]" in text
    assert "![change](report_figures/change.png)" in text and (tmp_path / "report_figures" / "change.png").exists()
    assert "Only the attribution moved under fog (s3)." in text
    assert (tmp_path / "first_events.csv").exists()
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["findings"]["change"] and report["first_events"][0]["n_images"] == N


@pytest.mark.parametrize("fmt", ["svg", "pdf"])
def test_report_figures_in_the_chosen_format_and_resolution(tmp_path, fmt):
    run = tmp_path / "0_fog"
    run.mkdir()
    _sweep(tmp_path / "cells", only=("fog",))[1].rows.to_csv(run / "per_image.csv", index=False)
    (run / "summary.json").write_text(json.dumps({"corruption": "fog", "severity": 3, "attribution": "gradcam",
                                                  "metrics": {}}))
    write_report(tmp_path, n_boot=50, style=FigureStyle(format=fmt, dpi=72))
    made = sorted(p.name for p in (tmp_path / "report_figures").iterdir())
    assert made and all(name.endswith(f".{fmt}") for name in made), made
    head = (tmp_path / "report_figures" / f"change.{fmt}").read_bytes()[:200]
    assert (b"<svg" in head or b"<?xml" in head) if fmt == "svg" else head.startswith(b"%PDF")
    assert f"report_figures/change.{fmt}" in (tmp_path / "report.md").read_text()


def test_png_resolution_follows_dpi(tmp_path):
    from PIL import Image

    from iqa_saliency.report.figures import change_curves

    curves = summarize_cells(_sweep(tmp_path, only=("fog",)), n_boot=50)
    sizes = {}
    for dpi in (50, 100):
        with plt.rc_context(FigureStyle(dpi=dpi).rc()):
            sizes[dpi] = Image.open(change_curves(curves, tmp_path / f"c{dpi}.png")).size
    assert sizes[100][0] == pytest.approx(2 * sizes[50][0], abs=2)


@pytest.mark.parametrize(("fmt", "dpi"), [("jpg", 150), ("png", 0), ("png", 2.5)])
def test_bad_figure_settings_are_config_errors(fmt, dpi):
    with pytest.raises(ConfigError, match="report"):
        FigureStyle(format=fmt, dpi=dpi)


def test_map_grids_share_one_colour_scale_per_row(tmp_path, monkeypatch):
    from iqa_saliency.report import figures

    rng = np.random.default_rng(7)
    cells, quality, attribution = [], {}, {}
    for s in (1, 3):
        run = tmp_path / f"fog-{s}"
        (run / "maps").mkdir(parents=True)
        quality[s], attribution[s] = rng.normal(40 - 5 * s, 2, (20, 20)), rng.gamma(1.0, s, (32, 32))
        if s == 1:
            quality[0], attribution[0] = rng.normal(45, 1, (20, 20)), rng.gamma(1.0, 0.5, (32, 32))
        np.savez(run / "maps" / "a.npz", quality_map=quality[s], attribution=attribution[s],
                 quality_map_clean=quality[0], attribution_clean=attribution[0])
        rows = pd.DataFrame({"image": ["a"], "maps": ["maps/a.npz"], "pred_name": [f"class{s}"], "mos": [30.0 + s]})
        cells.append(_cell(tmp_path, "fog", s, rows))
    shown = []
    monkeypatch.setattr(figures, "save_figure", lambda fig, path: shown.append(fig) or path)
    (path,) = figures.map_grids(cells, tmp_path / "out")
    assert path.name == "maps_fog_a.png"
    (fig,) = shown
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 6  # 2 rows x severities 0, 1, 3
    for row, maps in ((panels[:3], quality), (panels[3:], attribution)):
        lo, hi = min(m.min() for m in maps.values()), max(m.max() for m in maps.values())
        for ax in row:
            assert ax.images[0].get_clim() == pytest.approx((lo, hi))
    titles = [ax.get_title() for ax in panels[:3]]
    assert titles[0] == "clean" and "class1" in titles[1] and "class3" in titles[2] and "MOS 33.0" in titles[2]
    np.testing.assert_array_equal(panels[0].images[0].get_array(), quality[0])
    np.testing.assert_array_equal(panels[5].images[0].get_array(), attribution[3])
    plt.close(fig)


def _study_cell(tmp: Path, corruption: str, severity: int, rng: np.random.Generator, save_image: bool = True) -> Cell:
    run = tmp / f"{corruption}-{severity}"
    (run / "maps").mkdir(parents=True)
    (run / "images").mkdir()
    rows = []
    for index, image in ((4, "other"), (5, "kitchen")):
        stem = f"{index:06d}_{image}"
        np.savez(run / "maps" / f"{stem}.npz", quality_map=rng.normal(50, 5, (20, 20)),
                 attribution=rng.gamma(1.0, size=(32, 32)))
        if save_image:
            from PIL import Image

            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(run / "images" / f"{stem}.png")
        rows.append({"index": index, "image": image, "maps": f"maps/{stem}.npz", "pred_name": f"{corruption} class",
                     "mos": 40.0 + severity, "quality_category": "Fair"})
    return _cell(tmp, corruption, severity, pd.DataFrame(rows))


def test_study_figure_set_per_corruption_at_the_chosen_severity(tmp_path, monkeypatch):
    from iqa_saliency.report import figures
    from iqa_saliency.report.style import StudyFigures

    rng = np.random.default_rng(2)
    cells = [_study_cell(tmp_path, c, s, rng) for c in ("contrast", "brightness") for s in (1, 2)]
    shown = []
    monkeypatch.setattr(figures, "save_figure", lambda fig, path: shown.append(fig) or path)
    for pick in (5, "kitchen"):  # the dataset position (the study's val position 5) or the image id
        assert figures.study_figure(cells, tmp_path / "study.png", StudyFigures(True, pick, 2)) is not None
        fig = shown.pop()
        titles = [ax.get_title() for ax in fig.axes]
        assert titles[0] == "brightness s2: brightness class" and titles[3] == "contrast s2: contrast class"
        assert titles[1] == "PaQ-2-PiQ local map · MOS 42.0 (Fair)" and titles[2] == "gradcam · brightness class"
        assert "kitchen (index 5)" in fig._suptitle.get_text()
        plt.close(fig)
    assert figures.study_figure(cells, tmp_path / "s.png", StudyFigures(True, "absent", 2)) is None
    unsaved = [_study_cell(tmp_path / "u", "fog", 2, rng, save_image=False)]
    assert figures.study_figure(unsaved, tmp_path / "s.png", StudyFigures(True, 5, 2)) is None
    with pytest.raises(ConfigError, match="report.study_severity"):
        StudyFigures.from_config({"study_severity": 0})


@pytest.mark.parametrize("column", ["mos_mean", "sim_cc_mean", "change_cc"])
def test_every_curve_gets_its_interval_as_error_bars(column):
    """summary.csv names an interval after the column (mos_mean_ci_low, change_cc_ci_low) or after the metric of a
    mean (sim_cc_ci_low for sim_cc_mean): either way the curve is drawn with it, whiskers from the CI's ends."""
    from iqa_saliency.report.figures import errorbar_line

    base = "sim_cc" if column == "sim_cc_mean" else column
    rows = pd.DataFrame({"severity": [0, 1, 2], column: [0.5, 0.4, 0.2],
                         f"{base}_ci_low": [0.45, 0.3, 0.1], f"{base}_ci_high": [0.6, 0.5, 0.25]})
    fig, ax = plt.subplots()
    errorbar_line(ax, rows, column, 0, "contrast")
    (bars,) = ax.containers[0].lines[2]  # the vertical whiskers
    ends = [tuple(np.round(seg[:, 1], 6)) for seg in bars.get_segments()]
    plt.close(fig)
    assert ends == [(0.45, 0.6), (0.3, 0.5), (0.1, 0.25)]


def test_report_figures_carry_the_untrained_mark_only_when_a_model_was_untrained(tmp_path):
    """A cell whose summary.json says a model ran untrained: every report figure's title starts with the warning,
    naming that model; trained weights everywhere: no mark."""
    import matplotlib.pyplot as plt

    from iqa_saliency.report import figures
    from iqa_saliency.report.style import untrained_mark

    trained = {"weights": {"quality": {"untrained": False}, "classifier": {"untrained": False}}}
    one = {"weights": {"quality": {"untrained": False}, "classifier": {"untrained": True}}}
    assert untrained_mark([trained, trained]) is None
    mark = untrained_mark([trained, one])
    assert mark.startswith("UNTRAINED weights (classifier)")
    titles = []
    for suptitle in ("contrast", None):
        with figures.marked(mark):
            fig, _ = plt.subplots()
            if suptitle:
                fig.suptitle(suptitle)
            figures.save_figure(fig, tmp_path / f"{suptitle}.png")  # closes the figure; its title stays readable
        titles.append(fig._suptitle.get_text())
    assert titles == [f"{mark}\ncontrast", mark]
    fig, _ = plt.subplots()
    figures.save_figure(fig, tmp_path / "after.png")  # outside the block: no mark
    assert fig._suptitle is None
