"""The quality gate and the split as plumbing: which model, size, cache row and normalisation decide each image's
category, and which split settings a checkpoint's metadata must match. Scores come from the region quality model
(tests/helpers/plumbing_models.py), recomputed here with PIL/numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import plumbing_reference as pr
from helpers import reference as ref
from helpers.plumbing_models import load_quality
from PIL import Image

from iqa_saliency.data.quality_filter import QualityCache, ScoringOptions, filter_by_quality, score_source
from iqa_saliency.data.selection import Selection
from iqa_saliency.data.sources import ImageFolder
from iqa_saliency.errors import ConfigError
from iqa_saliency.models.paq2piq import NORMALIZATIONS

GREENS = [30, 80, 120, 165, 240]  # the top half's green: one image per category, Bad to Excellent


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "data"
    for i, g in enumerate(GREENS):
        a = np.full((44 + 2 * i, 40, 3), 120, np.uint8)
        a[:22, :, 1] = g
        (root / ("a" if i % 2 else "b")).mkdir(parents=True, exist_ok=True)
        Image.fromarray(a).save(root / ("a" if i % 2 else "b") / f"{i}.png")
    (root / "b" / "zz.png").write_bytes(b"broken")
    return root


def _expected(source, resize, crop, normalise=ref.paq_normalise) -> list[tuple[float, str]]:
    out = []
    for r in source.records:
        try:
            x = pr.as_unit(pr.prepare(pr.decode(r.path), resize, crop))
        except Exception:  # noqa: BLE001 - unreadable
            out.append((math.nan, ""))
            continue
        score = pr.region_quality(x)[0]
        out.append((score, ref.paq_category(normalise(score))))
    return out


def test_scores_at_the_evaluated_size_cached_per_file_and_scorer(folder, tmp_path):
    source = ImageFolder(folder)
    cache = tmp_path / "q.csv"
    opts = ScoringOptions(resize=40, crop=32, batch_size=2, device="cpu")
    scores = score_source(source, load_quality, cache, "scorer-A", opts)
    want = _expected(source, 40, 32)
    assert scores.n_scored == len(source.records)
    for got_mos, got_cat, (mos, cat) in zip(scores.mos, scores.category, want, strict=True):
        assert (math.isnan(got_mos) and math.isnan(mos)) or got_mos == pytest.approx(mos, abs=1e-4)
        assert got_cat == cat
    assert sorted(c for c in scores.category) == sorted(["", "Bad", "Poor", "Fair", "Good", "Excellent"])

    def no_model():
        raise AssertionError("a cached score was computed again")

    again = score_source(source, no_model, cache, "scorer-A", opts)
    assert again.n_scored == 0 and again.category == scores.category
    other = score_source(source, load_quality, cache, "scorer-B", ScoringOptions(resize=None, crop=None, device="cpu"))
    assert other.n_scored == len(source.records)  # another scorer: its own rows
    assert [c for _, c in _expected(source, None, None)] == other.category
    rows = QualityCache(cache).rows
    assert {s for _, s in rows} == {"scorer-A", "scorer-B"} and len(rows) == 2 * len(source.records)


def test_the_normaliser_given_decides_the_categories(folder, tmp_path):
    source = ImageFolder(folder)
    official = NORMALIZATIONS["official"]

    def official_normalise(mos: float) -> float:  # the PaQ-2-PiQ authors' inference code: 4 sigma, clip 0-100
        peak = 72.59696108881171
        if mos < peak:
            v = peak + peak * (mos - peak) / (4.0 * ref.PAQ_STD_LEFT)
        else:
            v = peak + (100 - peak) * (mos - peak) / (4.0 * ref.PAQ_STD_RIGHT)
        return min(max(v, 0.0), 100.0)

    scores = score_source(source, load_quality, tmp_path / "q.csv", "s", ScoringOptions(40, 32, device="cpu"),
                          normalizer=official)
    assert scores.category == [c for _, c in _expected(source, 40, 32, official_normalise)]
    kept = filter_by_quality(source, scores, ["Good", "Excellent"])
    assert [r.image_id for r in kept.records] == [
        r.image_id for r, c in zip(source.records, scores.category, strict=True) if c in ("Good", "Excellent")]


def test_a_checkpoints_split_settings_must_match():
    mine = Selection(split="val", val_fraction=0.3, split_seed=4, split_method="project")
    meta = {"selection": {"val_fraction": 0.2, "split_seed": 4, "split_method": "project", "quality_filter": None,
                          "quality_scorer": None}}
    with pytest.raises(ConfigError, match=r"dataset\.val_fraction=0\.3\)\. Set dataset\.val_fraction=0\.2\."):
        mine.check_against(meta, "best.ckpt")
    Selection(split="val", val_fraction=0.2, split_seed=4).check_against(meta, "best.ckpt")
    with pytest.raises(ConfigError, match=r"Set dataset\.split_seed=4 dataset\.split_method=project"):
        Selection(split="train", val_fraction=0.2, split_seed=5, split_method="study").check_against(meta, "b.ckpt")
    Selection(split="all", val_fraction=0.5).check_against(meta, "b.ckpt")  # all images: nothing to match
    Selection(split="val").check_against(None, "study.ckpt")  # no metadata: the configured split, logged


def test_meta_records_what_defines_the_split():
    sel = Selection(val_fraction=0.25, split_seed=2, quality_filter=["good"], quality_cache="q.csv",
                    quality_scorer="w|resize=256|crop=224")
    assert sel.meta() == {"val_fraction": 0.25, "split_seed": 2, "split_method": "project",
                          "quality_filter": ["Good"], "quality_scorer": "w|resize=256|crop=224",
                          "quality_normalization": "72,7.79827,4.11805,3.5,99.9"}
    assert Selection(quality_filter=["Bad"], quality_scores="/x/mos.csv").meta()["quality_scorer"] == "file:mos.csv"
    assert Selection().meta()["quality_scorer"] is None and Selection().meta()["quality_normalization"] is None
