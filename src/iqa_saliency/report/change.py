"""The study's second question across a sweep: do the quality map and the attribution change alike?

Per image over a sweep: the lowest severity at which the prediction flips and at which the MOS category drops,
and how often the two coincide; per corruption: a verdict read from the cells' 95% bootstrap intervals, turned into
the report's "what this sweep says" sentences, which claim only what the intervals support.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..models.paq2piq import CATEGORIES

CLEAN = "none"  # the corruption name of clean cells
# A map "moved" when the whole 95% CI of its stability CC (clean vs corrupted) lies below this, "held" when the
# whole CI lies at or above it; otherwise the sweep cannot tell.
STABLE_CC = 0.9
# Under this many images a percentile bootstrap interval is too narrow to trust: the cell is judged "unclear".
MIN_IMAGES = 10
EVENT_COLUMNS = ["variant", "corruption", "image", "first_flip", "first_category_drop"]
AGREEMENT_COLUMNS = ["variant", "corruption", "n_images", "n_flip", "n_category_drop", "n_either", "n_same",
                     "coincide_rate"]


def first_events(cells: Sequence[Any]) -> pd.DataFrame:
    """Per (variant, corruption, image): the lowest swept severity (1-5) at which the prediction flipped and at
    which the MOS category fell below the clean image's; NaN when it never happened in the sweep."""
    records: dict[tuple[str, str, str], dict[str, Any]] = {}
    rank = {name: i for i, name in enumerate(CATEGORIES)}
    for cell in sorted(cells, key=lambda c: int(c.summary["severity"])):
        corruption, severity = cell.summary["corruption"], int(cell.summary["severity"])
        rows = cell.rows
        if corruption == CLEAN or severity < 1 or "quality_category_clean" not in rows:
            continue
        for r in rows.itertuples():
            key = (cell.variant, corruption, str(r.image))
            rec = records.setdefault(key, {"variant": key[0], "corruption": key[1], "image": key[2],
                                           "first_flip": math.nan, "first_category_drop": math.nan})
            if math.isnan(rec["first_flip"]) and _truthy(r.flipped):
                rec["first_flip"] = severity
            now, clean = rank.get(r.quality_category), rank.get(r.quality_category_clean)
            if math.isnan(rec["first_category_drop"]) and now is not None and clean is not None and now < clean:
                rec["first_category_drop"] = severity
    return pd.DataFrame(list(records.values()), columns=EVENT_COLUMNS)


def _truthy(value: Any) -> bool:
    return isinstance(value, (int, float, np.number, bool)) and not math.isnan(float(value)) and float(value) > 0


def event_agreement(events: pd.DataFrame) -> pd.DataFrame:
    """Per (variant, corruption): how many images flipped, dropped a category, either, and both at the same lowest
    severity; coincide_rate = same / either (NaN when neither event happened to any image)."""
    out = []
    for (variant, corruption), rows in events.groupby(["variant", "corruption"], sort=True):
        flip, drop = rows["first_flip"], rows["first_category_drop"]
        either = int((flip.notna() | drop.notna()).sum())
        same = int((flip.notna() & (flip == drop)).sum())
        out.append({"variant": variant, "corruption": corruption, "n_images": len(rows),
                    "n_flip": int(flip.notna().sum()), "n_category_drop": int(drop.notna().sum()),
                    "n_either": either, "n_same": same, "coincide_rate": same / either if either else math.nan})
    return pd.DataFrame(out, columns=AGREEMENT_COLUMNS)


@dataclass(frozen=True)
class Verdict:
    """What one corruption does at its highest swept severity, each part read from a 95% CI."""

    corruption: str
    severity: int
    quality_map: str  # "moved" | "held" | "unclear"
    attribution: str
    together: str  # "same places" | "opposite places" | "unrelated" | "" (not both moved)
    mos: str  # "falls" | "rises" | "unclear"
    confidence: str
    change_cc: tuple[float, float, float]


def _moved(low: float, high: float) -> str:
    if math.isnan(low) or math.isnan(high):
        return "unclear"
    return "moved" if high < STABLE_CC else "held" if low >= STABLE_CC else "unclear"


def _sign(low: float, high: float, positive: str, negative: str) -> str:
    if math.isnan(low) or math.isnan(high):
        return "unclear"
    return positive if low > 0 else negative if high < 0 else "unclear"


def verdicts(summary: pd.DataFrame) -> dict[str, list[Verdict]]:
    """Per variant, one Verdict per corruption at its highest swept severity (summary.csv rows with CIs)."""
    out: dict[str, list[Verdict]] = {}
    for (variant, corruption), rows in summary.groupby(["variant", "corruption"], sort=True):
        if corruption == CLEAN:
            continue
        r = rows.sort_values("severity").iloc[-1]

        few = not float(r.get("n", 0)) >= MIN_IMAGES

        def ci(col: str, r: pd.Series = r, few: bool = few) -> tuple[float, float]:
            if few:
                return math.nan, math.nan
            return float(r.get(f"{col}_ci_low", math.nan)), float(r.get(f"{col}_ci_high", math.nan))

        quality, attribution = _moved(*ci("quality_stability_cc")), _moved(*ci("attr_stability_cc"))
        together = ""
        if quality == attribution == "moved":
            together = _sign(*ci("change_cc"), "same places", "opposite places")
            together = "unrelated" if together == "unclear" else together
        out.setdefault(variant, []).append(Verdict(
            str(corruption), int(r["severity"]), quality, attribution, together,
            _sign(*ci("mos_drop"), "falls", "rises"), _sign(*ci("confidence_drop"), "falls", "rises"),
            (float(r.get("change_cc", math.nan)), *ci("change_cc"))))
    return out


def _names(items: Sequence[Verdict]) -> str:
    return ", ".join(f"{v.corruption} (s{v.severity})" for v in items)


def findings(summary: pd.DataFrame) -> dict[str, list[str]]:
    """The report's "what this sweep says" paragraphs, one per variant for each question (`accuracy`: does quality
    track the classifier, `change`: do the maps change alike); each says only what the 95% intervals support."""
    out: dict[str, list[str]] = {"accuracy": [], "change": []}
    by_variant = verdicts(summary)
    for variant, items in by_variant.items():
        head = f"**{variant}**: " if len(by_variant) > 1 else ""
        for question, said in (("accuracy", _accuracy_sentences(items)), ("change", _change_sentences(items))):
            out[question].append(head + (" ".join(said) if said else "No corrupted cell to judge."))
    return out


def _accuracy_sentences(items: Sequence[Verdict]) -> list[str]:
    both = [v for v in items if v.mos == v.confidence == "falls"]
    mos_only = [v for v in items if v.mos == "falls" and v.confidence != "falls"]
    conf_only = [v for v in items if v.confidence == "falls" and v.mos != "falls"]
    neither = [v for v in items if v.mos != "falls" and v.confidence != "falls"]
    said = []
    for vs, text in ((both, "MOS and the classifier's confidence both fall under"),
                     (mos_only, "MOS falls but the classifier's confidence does not clearly fall under"),
                     (conf_only, "The classifier's confidence falls but MOS does not clearly fall under"),
                     (neither, "Neither clearly falls under")):
        if vs:
            said.append(f"{text} {_names(vs)}.")
    return said


def _change_sentences(items: Sequence[Verdict]) -> list[str]:
    groups = {
        "Both maps moved under": [v for v in items if v.quality_map == v.attribution == "moved"],
        "Only the quality map moved under": [v for v in items if v.quality_map == "moved" and v.attribution == "held"],
        "Only the attribution moved under": [v for v in items if v.attribution == "moved" and v.quality_map == "held"],
        "Neither map moved under": [v for v in items if v.quality_map == v.attribution == "held"],
    }
    said = [f"{head} {_names(vs)}." for head, vs in groups.items() if vs]
    unclear = [v for v in items if "unclear" in (v.quality_map, v.attribution)]
    if unclear:
        said.append(f"The intervals cannot tell whether both maps moved under {_names(unclear)}.")
    for kind, text in (("same places", "they moved in the same places (change CC > 0)"),
                       ("opposite places", "they moved in opposite places (change CC < 0)"),
                       ("unrelated", "the intervals show no link between where they moved (change CC ∋ 0)")):
        vs = [v for v in items if v.together == kind]
        if vs:
            said.append(f"Where both moved, {text}: " + ", ".join(
                f"{v.corruption} {v.change_cc[0]:.2f} [{v.change_cc[1]:.2f}, {v.change_cc[2]:.2f}]" for v in vs) + ".")
    return said
