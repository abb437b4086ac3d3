"""How a cell is put together around the models: which classifier index each image's label becomes (and how the
run says it matched them), when explaining the true class is allowed, and what the clean-pass cache's key holds."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from iqa_saliency.data.protocol import Cell, Inputs
from iqa_saliency.data.sources import NO_LABEL, ImageRecord, ImageSource
from iqa_saliency.errors import ConfigError, DatasetError
from iqa_saliency.evaluation import cell as cell_mod
from iqa_saliency.evaluation.settings import EvaluationModels, Explanation
from iqa_saliency.models.classifier import Classifier
from iqa_saliency.models.weights import WeightsIdentity


class Source(ImageSource):
    def __init__(self, labels: list[int], class_names: list[str] | None = None, imagenet: bool = False,
                 decode: str | None = None) -> None:
        self.records = [ImageRecord(f"img{i}", lbl) for i, lbl in enumerate(labels)]
        self.class_names = class_names
        self.imagenet_labels = imagenet
        if decode is not None:
            self.decode = decode


def _classifier(names: list[str], imagenet: bool = False, extra: dict | None = None) -> Classifier:
    return Classifier(torch.nn.Identity(), "arch", list(names), WeightsIdentity("w"), extra=dict(extra or {}),
                      imagenet_classes=imagenet)


def test_imagenet_labels_kept_for_an_imagenet_classifier_blank_otherwise():
    src = Source([281, NO_LABEL, 967], imagenet=True)
    assert cell_mod.map_labels(src, _classifier(["x"] * 1000, imagenet=True)) == ([281, NO_LABEL, 967], "imagenet")
    assert cell_mod.map_labels(src, _classifier(["a", "b"])) == ([NO_LABEL] * 3, "none")


def test_an_unlabelled_source_keeps_its_blank_labels():
    assert cell_mod.map_labels(Source([NO_LABEL, NO_LABEL]), _classifier(["a", "b"])) == ([NO_LABEL] * 2, "none")


def test_folder_order_classifier_takes_the_folder_names():
    clf = _classifier(["0", "1", "2"], extra={"label_order": "folders"})
    src = Source([2, 0, 1], ["kitchen", "bar", "attic"])
    assert cell_mod.map_labels(src, clf) == ([2, 0, 1], "folder order")
    assert clf.class_names == ["kitchen", "bar", "attic"]  # class i is the i-th folder
    with pytest.raises(DatasetError, match="3 classes but the dataset has 2 class folders"):
        cell_mod.map_labels(Source([0, 1], ["a", "b"]), _classifier(["0", "1", "2"], extra={"label_order": "folders"}))


def test_checkpoint_classes_must_be_the_folders_in_order():
    clf = _classifier(["a", "b", "c"], extra={"class_names": ["a", "b", "c"]})
    assert cell_mod.map_labels(Source([1, 2, 0], ["a", "b", "c"]), clf) == ([1, 2, 0], "checkpoint")
    with pytest.raises(DatasetError, match=r"missing \['c'\], unexpected \['d'\]"):
        cell_mod.map_labels(Source([0], ["a", "b", "d"]), clf)
    with pytest.raises(DatasetError, match="do not match"):  # the same names in another order
        cell_mod.map_labels(Source([0], ["b", "a", "c"]), clf)


def test_classes_matched_by_name_in_the_classifiers_own_order():
    clf = _classifier(["Red Wine", "espresso", "tabby-cat"])
    src = Source([0, 1, 2, 1, NO_LABEL], ["Espresso", "red_wine", "tabby cat"])
    # folder 0 (Espresso) is class 1, folder 1 (red_wine) class 0, folder 2 class 2; a blank label stays blank
    assert cell_mod.map_labels(src, clf) == ([1, 0, 2, 0, NO_LABEL], "class names")
    some = Source([0, 1, 2], ["espresso", "latte", "tabby_cat"])
    assert cell_mod.map_labels(some, clf) == ([1, NO_LABEL, 2], "class names")  # latte is no class of it


def test_class_count_must_match_a_named_non_imagenet_classifier():
    with pytest.raises(DatasetError, match="2 classes but the dataset has 3 class folders"):
        cell_mod.map_labels(Source([0], ["a", "b", "c"]), _classifier(["a", "b"]))
    imagenet = _classifier(["a", "b"], imagenet=True)  # an ImageNet classifier takes any subset of its classes
    assert cell_mod.map_labels(Source([2, 0], ["a", "b", "c"]), imagenet) == ([NO_LABEL, 0], "class names")


def test_check_target():
    cell_mod.check_target("pred", [NO_LABEL])
    cell_mod.check_target("label", [0, 3])
    with pytest.raises(ConfigError, match="needs a label for every image"):
        cell_mod.check_target("label", [0, NO_LABEL])
    with pytest.raises(ConfigError, match="attribution.target='gradient' is not valid"):
        cell_mod.check_target("gradient", [0])


def _models() -> EvaluationModels:
    return EvaluationModels(quality=None, quality_weights=WeightsIdentity("q", "q.pth", "aa"),
                            classifier=Classifier(torch.nn.Identity(), "resnet9", [], WeightsIdentity("c", None, "bb")))


SNOW = Cell("snow", 3, 5)


def _key(tmp_path, explain=None, inputs=None, cell=SNOW, labels=(1, 2), source=None, numerics=None) -> dict:  # noqa: ANN001
    """The key.json of the clean cache a cell with these settings uses."""
    explain, inputs = explain or Explanation(), inputs or Inputs()
    cache = cell_mod._clean_cache(_models(), cell, inputs, explain, list(labels), tmp_path, source, numerics)
    return json.loads((cache.dir / "key.json").read_text())


def test_the_clean_cache_key_holds_what_changes_the_clean_outputs(tmp_path):
    numerics = {"device": "cpu", "precision": "32-true", "channels_last": False, "fold_batchnorm": True,
                "batch_size": 8}
    key = _key(tmp_path, Explanation("saliency", {"reduce": "max_abs"}), Inputs(resize=300, crop=200),
               numerics=numerics)
    assert key == {"quality": {"name": "q", "source": "q.pth", "sha256": "aa"},
                   "classifier": {"name": "c", "source": None, "sha256": "bb"}, "arch": "resnet9",
                   "attribution": "saliency", "options": {"reduce": "max_abs"}, "target": "pred", "resize": 300,
                   "crop": 200, "seed": 5, "labels": None, "corrupt_at": "crop", **numerics, "entry_format": 5}
    # the corruption is not in it: every cell of a sweep shares the clean pass
    assert _key(tmp_path, cell=Cell("fog", 1, 5)) == _key(tmp_path, cell=Cell("snow", 3, 5))


def test_the_clean_cache_key_holds_labels_padding_and_decoding_only_when_they_matter(tmp_path):
    assert _key(tmp_path, Explanation(target="label"), labels=[4, 2])["labels"] == [4, 2]
    assert "small" not in _key(tmp_path) and _key(tmp_path, inputs=Inputs(small="pad"))["small"] == "pad"
    assert "decode" not in _key(tmp_path, source=Source([0], decode="oriented"))
    assert _key(tmp_path, source=Source([0], decode="imagefolder"))["decode"] == "imagefolder"
    assert _key(tmp_path, inputs=Inputs(corrupt_at="full_size"))["corrupt_at"] == "full_size"


def test_the_clean_cache_is_off_without_a_folder(tmp_path):
    assert cell_mod._clean_cache(_models(), Cell("snow", 3), Inputs(), Explanation(), [], None) is None


def test_numerics_read_the_trainer_and_settings():
    trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("cpu")), precision="bf16-mixed")
    from iqa_saliency.evaluation.settings import Speed

    assert cell_mod._numerics(trainer, Speed(channels_last=True, fold_batchnorm=False), Inputs(batch_size=6)) == {
        "device": "cpu", "precision": "bf16-mixed", "channels_last": True, "fold_batchnorm": False, "batch_size": 6}


def test_the_source_decode_is_found_through_subsets():
    from iqa_saliency.data.splits import SubsetSource

    base = Source([0, 0], decode="imagefolder")
    assert cell_mod._decode(SubsetSource(SubsetSource(base, [1]), [0])) == "imagefolder"
    assert cell_mod._decode(Source([0])) is None
