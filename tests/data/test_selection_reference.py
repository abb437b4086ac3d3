"""Which images a run uses (data/selection.py) against values known by construction: plain dataset settings, the
metadata a checkpoint records, the exact refusal of another split, and the quality gate on flat images whose
score is their pixel value."""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest
import torch
from PIL import Image

from iqa_saliency.data.selection import Selection, select_images
from iqa_saliency.data.sources import ImageFolder
from iqa_saliency.errors import ConfigError, DatasetError
from iqa_saliency.models.paq2piq import ScoreNormalizer
from iqa_saliency.models.weights import WeightsIdentity

# A flat image's score is its value; with the study's normaliser (peak 72, 3.5 sigma): 40 -> Bad, 60 -> Fair,
# 72 -> Good, 80 -> Excellent (worked by hand in test_quality_filter.py)
VALUES = {40: "Bad", 60: "Fair", 72: "Good", 80: "Excellent"}


class ValueScore(torch.nn.Module):
    """A quality model whose global score is the image's mean pixel value (0-255); records each batch's shape."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(x.shape))
        self.inputs.append(x.clone())
        return (x.mean(dim=(1, 2, 3)) * 255).round()[:, None].repeat(1, 401)


@pytest.fixture
def flat(tmp_path):
    """Two classes of 40 x 36 flat images, one per value."""
    root = tmp_path / "data"
    for cls in ("x", "y"):
        (root / cls).mkdir(parents=True)
        for v in VALUES:
            Image.fromarray(np.full((36, 40, 3), v, np.uint8)).save(root / cls / f"v{v}.png")
    return root


def _loader(model):
    return lambda: (model, WeightsIdentity("value"))


def _mos_csv(path, rows):
    lines = ["image_path,global_score,normalized_global_score,category"]
    lines += [f"{image},{mos},{norm},{cat}" for image, mos, norm, cat in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


# --- settings ------------------------------------------------------------------------------------------------


def test_a_dataset_without_keys_takes_the_documented_defaults():
    sel = Selection.from_options({}, 3, "/w/q.pth", True)
    assert (sel.split, sel.val_fraction, sel.split_seed, sel.split_method) == ("all", 0.2, 3, "project")
    assert (sel.quality_filter, sel.quality_cache, sel.quality_scores) == (None, None, None)
    assert (sel.quality_batch_size, sel.num_workers, sel.quality_score_size) == (8, 0, "eval")
    assert sel.quality_scorer == "/w/q.pth|resize=None|crop=None"
    assert sel.normalizer is None


def test_dataset_values_reach_the_selection():
    dataset = {"split": "val", "val_fraction": 0.35, "split_seed": 11, "quality_filter": ["excellent"],
               "quality_cache": "/c.csv", "batch_size": 12, "num_workers": "2", "split_method": "study",
               "quality_scores": "", "quality_score_size": None, "resize": 300, "crop": 256}
    sel = Selection.from_options(dataset, 3, "/w/q.pth", True)
    assert (sel.split, sel.val_fraction, sel.split_seed, sel.split_method) == ("val", 0.35, 11, "study")
    assert (sel.quality_filter, sel.quality_cache, sel.quality_scores) == (["Excellent"], "/c.csv", None)
    assert (sel.quality_batch_size, sel.num_workers, sel.quality_score_size) == (12, 2, "eval")
    assert sel.quality_scorer == "/w/q.pth|resize=300|crop=256"
    # an explicit split wins over the dataset's; a small batch still scores 8 at a time; untrained weights
    other = Selection.from_options({**dataset, "batch_size": 3, "quality_score_size": "full"}, 3, "/w/q.pth", False,
                                   split="train")
    assert (other.split, other.quality_batch_size, other.quality_score_size) == ("train", 8, "full")
    assert other.quality_scorer == "untrained|resize=None|crop=None"
    assert Selection.from_options({"quality_scores": "/s/mos.csv"}, 0, None, False).quality_scores == "/s/mos.csv"


def test_a_filter_without_scores_or_cache_is_refused():
    expected = "dataset.quality_filter needs a cache file. Set dataset.quality_cache=PATH."
    with pytest.raises(ConfigError, match=f"^{re.escape(expected)}$"):
        Selection(quality_filter=["Good"])
    Selection(quality_filter=["Good"], quality_scores="mos.csv")  # the study's file needs no cache
    expected = "dataset.quality_score_size='half' is not valid. Use dataset.quality_score_size=full or eval."
    with pytest.raises(ConfigError, match=f"^{re.escape(expected)}$"):
        Selection(quality_score_size="half")
    with pytest.raises(ConfigError, match=r"^dataset\.split='test' is not valid"):
        Selection(split="test")
    with pytest.raises(ConfigError, match=r"^dataset\.split_method='random' is not valid"):
        Selection(split_method="random")
    with pytest.raises(ConfigError, match=r"^dataset\.val_fraction=1\.5 is out of range"):
        Selection(val_fraction=1.5)


def test_meta_records_the_normaliser_that_turns_computed_scores_into_categories():
    sel = Selection(val_fraction=0.25, split_seed=7, quality_filter=["fair", "Bad"], quality_cache="q.csv",
                    quality_scorer="w|resize=None|crop=None",
                    normalizer=ScoreNormalizer(peak=70.5, std_left=8.25, std_right=4.0, n_std=4.0, clip_max=100.0))
    meta = sel.meta()
    assert meta == {"val_fraction": 0.25, "split_seed": 7, "split_method": "project", "quality_filter": ["Bad", "Fair"],
                    "quality_scorer": "w|resize=None|crop=None", "quality_normalization": "70.5,8.25,4,4,100"}
    assert type(meta["val_fraction"]) is float and type(meta["split_seed"]) is int
    # scores read from the study's file: the file decides, no normalisation is applied
    read = Selection(quality_filter=["Good"], quality_scores="/s/mos.csv", quality_scorer="w").meta()
    assert (read["quality_scorer"], read["quality_normalization"]) == ("file:mos.csv", None)
    # no filter: neither the file nor the scorer decides anything
    plain = Selection(quality_scores="/s/mos.csv", quality_scorer="w", split_method="study").meta()
    assert (plain["quality_filter"], plain["quality_scorer"], plain["quality_normalization"]) == (None, None, None)
    assert plain["split_method"] == "study"


# --- a checkpoint's split -------------------------------------------------------------------------------------


def _trained(**changes):
    meta = {"val_fraction": 0.2, "split_seed": 4, "split_method": "project", "quality_filter": ["Good"],
            "quality_scorer": "w|resize=256|crop=224", "quality_normalization": "72,7.79827,4.11805,3.5,99.9"}
    meta.update(changes)
    return {"selection": meta}


def _mine(**changes):
    settings = {"split": "val", "val_fraction": 0.2, "split_seed": 4, "quality_filter": ["Good"],
                "quality_cache": "q.csv", "quality_scorer": "w|resize=256|crop=224"}
    settings.update(changes)
    return Selection(**settings)


def _refusal(have: str, fix: str, split: str = "val") -> str:
    message = f"dataset.split={split} would not be the split 'b.ckpt' was trained with ({have}). {fix}."
    return f"^{re.escape(message)}$"


def test_the_same_split_passes_and_floats_compare_to_nine_digits():
    _mine().check_against(_trained(), "b.ckpt")
    _mine(val_fraction=0.2 + 3e-10).check_against(_trained(), "b.ckpt")  # rounds to the same 9 digits
    with pytest.raises(ConfigError, match=r"dataset\.val_fraction=0\.200000003"):
        _mine(val_fraction=0.200000003).check_against(_trained(), "b.ckpt")


def test_a_checkpoint_from_before_the_study_split_was_split_by_the_project_method():
    old = _trained()
    del old["selection"]["split_method"]
    _mine().check_against(old, "b.ckpt")
    with pytest.raises(ConfigError, match=_refusal("dataset.split_method=study", "Set dataset.split_method=project")):
        _mine(split_method="study").check_against(old, "b.ckpt")


def test_each_differing_setting_is_named_with_the_value_to_set():
    with pytest.raises(ConfigError, match=_refusal("dataset.val_fraction=0.3, dataset.split_seed=5",
                                                   "Set dataset.val_fraction=0.2 dataset.split_seed=4", "train")):
        _mine(split="train", val_fraction=0.3, split_seed=5).check_against(_trained(), "b.ckpt")


def test_another_filter_names_the_list_to_set_and_a_missing_one_as_null():
    # the filter differs, so the normalisation (also different) is not named on top of it
    with pytest.raises(ConfigError, match=_refusal("dataset.quality_filter=['Fair', 'Good']",
                                                   "Set dataset.quality_filter=[Good]")):
        _mine(quality_filter=["Good", "Fair"],
              normalizer=ScoreNormalizer(peak=60.0)).check_against(_trained(), "b.ckpt")
    unfiltered = _trained(quality_filter=None, quality_scorer=None, quality_normalization=None)
    with pytest.raises(ConfigError, match=_refusal(
            "dataset.quality_filter=['Good'], quality scorer=w|resize=256|crop=224",
            "Set dataset.quality_filter=null and use the quality weights and image size it was trained with "
            "(None)")):
        _mine().check_against(unfiltered, "b.ckpt")


def test_another_scorer_names_the_weights_and_size_it_was_trained_with():
    with pytest.raises(ConfigError, match=_refusal(
            "quality scorer=v|resize=256|crop=224",
            "Use the quality weights and image size it was trained with (w|resize=256|crop=224)")):
        _mine(quality_scorer="v|resize=256|crop=224").check_against(_trained(), "b.ckpt")


def test_another_normalisation_names_the_one_it_was_trained_with():
    norm = ScoreNormalizer(peak=60.0, n_std=4.0)
    with pytest.raises(ConfigError, match=_refusal(
            "quality normalization=60,7.79827,4.11805,4,99.9",
            "Use the quality.normalization it was trained with (peak, std_left, std_right, n_std, clip: "
            "72,7.79827,4.11805,3.5,99.9)")):
        _mine(normalizer=norm).check_against(_trained(), "b.ckpt")
    with pytest.raises(ConfigError, match=_refusal(
            "dataset.split_seed=9, quality normalization=60,7.79827,4.11805,4,99.9",
            "Set dataset.split_seed=4 and use the quality.normalization it was trained with (peak, std_left, "
            "std_right, n_std, clip: 72,7.79827,4.11805,3.5,99.9)")):
        _mine(split_seed=9, normalizer=norm).check_against(_trained(), "b.ckpt")
    # another scorer: the normalisation is named only once the scorer matches
    with pytest.raises(ConfigError, match=_refusal(
            "quality scorer=v", "Use the quality weights and image size it was trained with (w)")):
        _mine(quality_scorer="v", normalizer=norm).check_against(_trained(quality_scorer="w"), "b.ckpt")
    # a checkpoint that recorded no normalisation is not held to one
    older = _trained()
    del older["selection"]["quality_normalization"]
    _mine(normalizer=norm).check_against(older, "b.ckpt")


def test_a_checkpoint_without_split_metadata_is_logged_not_checked(caplog):
    with caplog.at_level(logging.INFO, logger="iqa_saliency.data.selection"):
        _mine(split_method="study", val_fraction=0.3, split_seed=6).check_against({"arch": "resnet18"}, "s.ckpt")
        Selection(split="train").check_against(None, "p.pth")
        Selection(split="all", val_fraction=0.5).check_against(_trained(), "b.ckpt")  # all images: nothing to log
    assert [r.getMessage() for r in caplog.records] == [
        "'s.ckpt' records no train/val split; evaluating the val split that the dataset settings define "
        "(dataset.split_method=study, val_fraction=0.3, split_seed=6, quality_filter=['Good']).",
        "'p.pth' records no train/val split; evaluating the train split that the dataset settings define "
        "(dataset.split_method=project, val_fraction=0.2, split_seed=0)."]


# --- the quality gate -----------------------------------------------------------------------------------------


def test_the_gate_scores_at_the_evaluated_size_in_batches_and_logs_what_it_kept(flat, tmp_path, caplog):
    source = ImageFolder(flat)
    model = ValueScore()
    sel = Selection(quality_filter=["Good", "Excellent"], quality_cache=str(tmp_path / "c.csv"), quality_scorer="s",
                    quality_batch_size=3)
    with caplog.at_level(logging.INFO, logger="iqa_saliency.data.selection"):
        kept = select_images(source, sel, _loader(model), resize=30, crop=24)
    assert model.shapes == [(3, 3, 24, 24), (3, 3, 24, 24), (2, 3, 24, 24)]
    assert [r.image_id for r in kept.records] == ["x/v72.png", "x/v80.png", "y/v72.png", "y/v80.png"]
    assert f"Quality categories {{'Bad': 2, 'Poor': 0, 'Fair': 2, 'Good': 2, 'Excellent': 2}}; kept 4 of 8 images " \
           f"(Good+Excellent; 8 scored now, the rest from {tmp_path / 'c.csv'})" in caplog.messages
    assert not (tmp_path / "run").exists()


def test_the_gate_scores_at_256_then_224_unless_told(tmp_path):
    # a 256 x 256 image needs no resize to 256, so the model must see exactly its centre 224 x 224 (offset 16)
    noise = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    for cls in ("a", "b"):
        (tmp_path / "data" / cls).mkdir(parents=True)
        Image.fromarray(noise).save(tmp_path / "data" / cls / "n.png")
    model = ValueScore()
    sel = Selection(quality_filter=["Bad", "Poor", "Fair", "Good", "Excellent"], quality_cache=str(tmp_path / "c.csv"))
    select_images(ImageFolder(tmp_path / "data"), sel, _loader(model))
    (x,) = model.inputs
    assert x.shape == (2, 3, 224, 224)
    for image in (x * 255).round().to(torch.uint8):
        np.testing.assert_array_equal(image.permute(1, 2, 0).numpy(), noise[16:240, 16:240])


def test_the_gate_resizes_before_it_crops(tmp_path):
    # 512 x 512 at 40 with a 224 x 224 centre at 200: cropped at full size the model sees only the centre (200);
    # resized to 256 first, the centre shrinks to 112 x 112 of the 224 x 224 crop: 1/4 * 200 + 3/4 * 40 = 80
    a = np.full((512, 512, 3), 40, np.uint8)
    a[144:368, 144:368] = 200
    (tmp_path / "data" / "a").mkdir(parents=True)
    Image.fromarray(a).save(tmp_path / "data" / "a" / "s.png")
    Image.fromarray(a).save(tmp_path / "data" / "a" / "t.png")
    model = ValueScore()
    sel = Selection(quality_filter=["Excellent"], quality_cache=str(tmp_path / "c.csv"))
    select_images(ImageFolder(tmp_path / "data"), sel, _loader(model), resize=256, crop=224)
    (x,) = model.inputs
    assert x.shape == (2, 3, 224, 224)
    assert (x.mean(dim=(1, 2, 3)) * 255).tolist() == pytest.approx([80, 80], abs=0.5)


class WorkerFolder(ImageFolder):
    """An image folder that leaves a mark when it decodes an image in a DataLoader worker process."""

    mark: str = ""

    def load(self, record):  # noqa: ANN001, ANN201
        if torch.utils.data.get_worker_info() is not None:
            open(self.mark, "a").close()
        return super().load(record)


def test_the_gate_decodes_in_the_configured_workers(flat, tmp_path):
    source = WorkerFolder(flat)
    source.mark = str(tmp_path / "in-a-worker")
    sel = Selection(quality_filter=["Good"], quality_cache=str(tmp_path / "c.csv"), num_workers=1)
    kept = select_images(source, sel, _loader(ValueScore()), resize=None, crop=None)
    assert [r.image_id for r in kept.records] == ["x/v72.png", "y/v72.png"]
    assert (tmp_path / "in-a-worker").exists()


def test_full_size_scoring_sees_the_decoded_image(flat, tmp_path):
    model = ValueScore()
    sel = Selection(quality_filter=["Bad"], quality_cache=str(tmp_path / "c.csv"), quality_score_size="full",
                    quality_batch_size=8)
    kept = select_images(ImageFolder(flat), sel, _loader(model), report_dir=tmp_path / "run", resize=30, crop=24)
    assert model.shapes == [(8, 3, 36, 40)]
    assert [r.image_id for r in kept.records] == ["x/v40.png", "y/v40.png"]
    assert (tmp_path / "run" / "quality_filter.json").is_file()


def test_the_selections_normaliser_decides_the_categories(flat, tmp_path):
    # peak 30, right side 70 * (x - 30) / 35: 40 -> 50 Fair, 60 -> 90 and 72, 80 -> clipped 100: Excellent
    norm = ScoreNormalizer(peak=30.0, std_left=10.0, std_right=35.0, n_std=1.0, clip_max=100.0)
    sel = Selection(quality_filter=["Fair"], quality_cache=str(tmp_path / "c.csv"), normalizer=norm)
    kept = select_images(ImageFolder(flat), sel, _loader(ValueScore()), resize=None, crop=None)
    assert [r.image_id for r in kept.records] == ["x/v40.png", "y/v40.png"]


def test_the_gate_without_a_quality_model_or_without_a_kept_image_is_refused(flat, tmp_path):
    sel = Selection(quality_filter=["Good"], quality_cache=str(tmp_path / "c.csv"))
    expected = "dataset.quality_filter needs the quality model. Configure quality=paq2piq."
    with pytest.raises(ConfigError, match=f"^{re.escape(expected)}$"):
        select_images(ImageFolder(flat), sel)
    poor = Selection(quality_filter=["Poor"], quality_cache=str(tmp_path / "c.csv"))
    expected = ("No image is rated Poor (counts: {'Bad': 2, 'Poor': 0, 'Fair': 2, 'Good': 2, 'Excellent': 2}). "
                "Widen dataset.quality_filter or use another dataset.")
    with pytest.raises(DatasetError, match=f"^{re.escape(expected)}$"):
        select_images(ImageFolder(flat), poor, _loader(ValueScore()), report_dir=tmp_path / "run",
                      resize=None, crop=None)
    assert (tmp_path / "run" / "quality_filter.json").is_file()  # the report says why, before the refusal
    rows = [(f"{c}/v{v}.png", v, 10.0, "Bad") for c in ("x", "y") for v in VALUES]
    expected = ("No image is rated Good/Excellent (counts: {'Bad': 8, 'Poor': 0, 'Fair': 0, 'Good': 0, "
                "'Excellent': 0}). Widen dataset.quality_filter or use another dataset.")
    with pytest.raises(DatasetError, match=f"^{re.escape(expected)}$"):
        select_images(ImageFolder(flat), Selection(quality_filter=["Excellent", "Good"],
                                                   quality_scores=str(_mos_csv(tmp_path / "bad.csv", rows))))


def test_without_filter_or_scores_every_image_is_kept_without_a_file(flat, caplog):
    source = ImageFolder(flat)
    with caplog.at_level(logging.INFO, logger="iqa_saliency.data.selection"):
        assert select_images(source, Selection()) is source
    assert caplog.messages == []


def test_the_studys_file_decides_the_categories_and_every_image_needs_a_row(flat, tmp_path, caplog):
    # the file's categories, not the pixel values: x/v40 is rated Good here, the rest Bad
    rows = [(f"C:\\study\\images\\{c}\\v{v}.png", v, 10.0, "Good" if (c, v) == ("x", 40) else "bad")
            for c in ("x", "y") for v in VALUES]
    mos = _mos_csv(tmp_path / "mos.csv", rows)
    sel = Selection(quality_filter=["Good"], quality_scores=str(mos))
    with caplog.at_level(logging.INFO, logger="iqa_saliency.data.selection"):
        kept = select_images(ImageFolder(flat), sel)  # no quality model needed
    assert [r.image_id for r in kept.records] == ["x/v40.png"]
    assert caplog.messages == [f"Quality categories {{'Bad': 7, 'Poor': 0, 'Fair': 0, 'Good': 1, 'Excellent': 0}}; "
                               f"kept 1 of 8 images (Good; from {mos})"]
    # without a filter every image is kept, but each must still have a row
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="iqa_saliency.data.selection"):
        everything = select_images(ImageFolder(flat), Selection(quality_scores=str(mos)))
    assert len(everything) == 8
    assert caplog.messages == [f"Every image has a row in {mos}; no quality filter (dataset.quality_filter=null: all "
                               "8 images, as the original study's code used them)"]
    short = _mos_csv(tmp_path / "short.csv", rows[1:])
    with pytest.raises(DatasetError, match=r"^x/v40\.png has no row in "):
        select_images(ImageFolder(flat), Selection(quality_scores=str(short)))


def _project_val(ids: list[str], labels: list[int], fraction: float, seed: int) -> list[str]:
    """The project's split restated: per label, round(n * fraction) (at least 1, at most n - 1) of the class's
    ids, sorted, drawn by numpy's permutation seeded with (seed, label); val in the listing's order."""
    val = set()
    for label in sorted(set(labels)):
        members = sorted(i for i, lab in zip(ids, labels, strict=True) if lab == label)
        n_val = min(max(round(len(members) * fraction), 1), len(members) - 1)
        val.update(members[j] for j in np.random.default_rng([seed, label]).permutation(len(members))[:n_val])
    return [i for i in ids if i in val]


def test_the_split_is_taken_of_the_kept_images_with_the_configured_method(flat, tmp_path):
    from sklearn.model_selection import train_test_split

    rows = [(f"{c}/v{v}.png", v, 10.0, "Bad" if v == 40 else "Good") for c in ("x", "y") for v in VALUES]
    mos = _mos_csv(tmp_path / "mos.csv", rows)
    kept = ["x/v60.png", "x/v72.png", "x/v80.png", "y/v60.png", "y/v72.png", "y/v80.png"]
    labels = [0, 0, 0, 1, 1, 1]

    def part(split, method, seed):
        sel = Selection(split=split, val_fraction=0.5, split_seed=seed, split_method=method, quality_filter=["Good"],
                        quality_scores=str(mos))
        return [r.image_id for r in select_images(ImageFolder(flat), sel).records]

    for seed in (1, 2):
        # the study's: scikit-learn's stratified draw, in the order it returns the indices
        train, val = train_test_split(np.arange(6), test_size=0.5, stratify=labels, random_state=seed)
        assert part("val", "study", seed) == [kept[i] for i in val]
        assert part("train", "study", seed) == [kept[i] for i in train]
        want = _project_val(kept, labels, 0.5, seed)
        assert part("val", "project", seed) == want
        assert part("train", "project", seed) == [i for i in kept if i not in want]
