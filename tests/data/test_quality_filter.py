"""The quality gate: scores cached by file path, size and mtime; categories kept; reports written."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from iqa_saliency.data.quality_filter import ScoringOptions, check_categories, score_source
from iqa_saliency.data.selection import Selection, select_images
from iqa_saliency.data.sources import ImageFolder
from iqa_saliency.errors import ConfigError
from iqa_saliency.models.weights import WeightsIdentity

# Raw MOS -> category, by hand from the study's normaliser (peak 72, std_left 7.798.., std_right 4.118.., 3.5):
# 40 -> 72 + 72*(40-72)/27.29 < 0 -> 0 Bad; 60 -> 40.35 Fair; 72 -> 72 Good; 80 -> 72 + 28*8/14.41 = 87.5 Excellent
MOS_CATEGORY = {40: "Bad", 60: "Fair", 72: "Good", 80: "Excellent"}


class MeanScore(torch.nn.Module):
    """Stands in for PaQ-2-PiQ: the global score is the image's mean pixel value (0-255); counts its calls."""

    def __init__(self) -> None:
        super().__init__()
        self.images_seen = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.images_seen += len(x)
        return (x.mean(dim=(1, 2, 3)) * 255).round()[:, None].repeat(1, 401)


def write_flat(path, value: int, size=(40, 36)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)


@pytest.fixture
def scored_folder(tmp_path):
    root = tmp_path / "data"
    for cls in ["x", "y"]:
        for mos in MOS_CATEGORY:
            write_flat(root / cls / f"m{mos}.png", mos)  # the same scores in both classes
    return root


def loader_for(model):
    calls = []

    def load():
        calls.append(1)
        return model, WeightsIdentity("fake")
    return load, calls


def test_categories_and_cache_reuse(scored_folder, tmp_path):
    source = ImageFolder(scored_folder)
    model = MeanScore()
    load, calls = loader_for(model)
    cache = tmp_path / "cache.csv"
    first = score_source(source, load, cache, "fake|r", ScoringOptions(None, None, batch_size=3, device="cpu"))
    assert first.n_scored == 8 and model.images_seen == 8
    expect = [MOS_CATEGORY[int(r.image_id.split("/m")[1][:-4])] for r in source.records]
    assert first.category == expect
    assert first.mos == [float(int(r.image_id.split("/m")[1][:-4])) for r in source.records]

    second = score_source(source, load, cache, "fake|r", ScoringOptions(None, None, device="cpu"))
    assert second.n_scored == 0 and len(calls) == 1 and model.images_seen == 8  # the model was not even loaded
    assert second.category == first.category and second.mos == first.mos

    # Another scorer (weights or image preparation) does not reuse these scores.
    third = score_source(source, load, cache, "other|r", ScoringOptions(None, None, device="cpu"))
    assert third.n_scored == 8


def test_changed_file_is_rescored(scored_folder, tmp_path):
    source = ImageFolder(scored_folder)
    model = MeanScore()
    load, _ = loader_for(model)
    cache = tmp_path / "cache.csv"
    score_source(source, load, cache, "s", ScoringOptions(None, None, device="cpu"))
    changed = scored_folder / "x" / "m40.png"
    write_flat(changed, 80, size=(44, 36))  # now Excellent
    st = changed.stat()
    os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    again = score_source(source, load, cache, "s", ScoringOptions(None, None, device="cpu"))
    assert again.n_scored == 1 and model.images_seen == 9
    index = [r.image_id for r in source.records].index("x/m40.png")
    assert again.category[index] == "Excellent"
    rows = cache.read_text().splitlines()
    assert len(rows) == 1 + 8  # the stale row was replaced, not kept beside the new one


def test_select_keeps_chosen_categories_and_reports(scored_folder, tmp_path):
    source = ImageFolder(scored_folder)
    load, _ = loader_for(MeanScore())
    selection = Selection(quality_filter=["good", "Excellent"], quality_cache=str(tmp_path / "c.csv"),
                          quality_scorer="s")
    kept = select_images(source, selection, load, report_dir=tmp_path / "run", resize=None, crop=None)
    assert sorted(r.image_id for r in kept.records) == ["x/m72.png", "x/m80.png", "y/m72.png", "y/m80.png"]
    assert kept.class_names == ["x", "y"]
    report = json.loads((tmp_path / "run" / "quality_filter.json").read_text())
    assert report["counts"] == {"Bad": 2, "Poor": 0, "Fair": 2, "Good": 2, "Excellent": 2}
    assert report["n_kept"] == 4 and report["keep"] == ["Good", "Excellent"]
    assert (tmp_path / "run" / "quality_categories.png").stat().st_size > 0
    val = select_images(source, Selection(split="val", val_fraction=0.5, quality_filter=["Good", "Excellent"],
                                          quality_cache=str(tmp_path / "c.csv"), quality_scorer="s"), load)
    assert len(val) == 2 and {r.label for r in val.records} == {0, 1}


def test_unknown_category_is_a_config_error():
    with pytest.raises(ConfigError, match=r"Unknown quality category \['Great'\].*dataset.quality_filter="):
        check_categories(["Good", "Great"])
    assert check_categories(["excellent", "GOOD"]) == ["Good", "Excellent"]
    assert check_categories(None) is None
