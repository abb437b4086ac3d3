"""The train/val split against its written definition (per class: sorted by id, round(n·f) clamped to [1, n−1],
the first ones of numpy's default_rng([seed, label]) permutation go to val), the subset source's order and
the split CSV's rows."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from helpers import reference as ref

from iqa_saliency.data.sources import ImageRecord, ImageSource
from iqa_saliency.data.splits import SubsetSource, split_source, stratified_split, write_split_csv
from iqa_saliency.errors import ConfigError, DatasetError


class Fake(ImageSource):
    def __init__(self, per_class: dict[str, int]) -> None:
        self.class_names = list(per_class)
        # ids deliberately not in index order within a class, classes interleaved
        self.records = []
        for i in range(max(per_class.values())):
            for c, (name, n) in enumerate(per_class.items()):
                if i < n:
                    self.records.append(ImageRecord(f"{name}/{(7 * i) % n:03d}-{i}.jpg", c))

    def load(self, record):
        return record.image_id


def reference_split(records, fraction, seed):
    return ref.stratified_split([(r.image_id, r.label) for r in records], fraction, seed)


@pytest.mark.parametrize(("per_class", "fraction", "seed"), [
    ({"a": 10, "b": 5, "c": 2, "d": 1}, 0.2, 0), ({"a": 13, "b": 7}, 0.5, 3), ({"x": 4, "y": 9, "z": 3}, 0.9, 11),
    ({"a": 30}, 0.05, 2)])
def test_stratified_split_is_its_definition(per_class, fraction, seed):
    src = Fake(per_class)
    assert stratified_split(src.records, fraction, seed) == reference_split(src.records, fraction, seed)


def test_hand_counts_per_class():
    src = Fake({"a": 10, "b": 5, "c": 2, "d": 1, "e": 3})
    _, val = stratified_split(src.records, 0.5, 1)
    counts = {c: sum(src.records[i].label == c for i in val) for c in range(5)}
    # round(5)=5 -> 5; round(2.5)=2 -> 2; round(1)=1 -> clamped to 1; a single image: round(0.5)=0; round(1.5)=2
    assert counts == {0: 5, 1: 2, 2: 1, 3: 0, 4: 2}


def test_split_source_parts_and_subset_order():
    src = Fake({"a": 6, "b": 4})
    train_idx, val_idx = reference_split(src.records, 0.25, 9)
    train = split_source(src, "train", 0.25, 9)
    val = split_source(src, "val", 0.25, 9)
    assert isinstance(train, SubsetSource) and isinstance(val, SubsetSource)
    assert train.indices == train_idx and val.indices == val_idx
    assert [r.image_id for r in val.records] == [src.records[i].image_id for i in val_idx]
    assert val.class_names == src.class_names
    assert split_source(src, "all", 0.25, 9) is src
    unsorted = SubsetSource(src, [5, 1, 3])
    assert unsorted.indices == [1, 3, 5] and unsorted.load(unsorted.records[0]) == src.records[1].image_id


def test_split_errors():
    src = Fake({"a": 1})
    with pytest.raises(DatasetError, match="val split of 1 images is empty"):
        split_source(src, "val", 0.2, 0)
    for bad in (0, 1, 1.5, True, "0.2"):
        with pytest.raises(ConfigError):
            split_source(src, "val", bad, 0)
    with pytest.raises(ConfigError):
        split_source(src, "test", 0.2, 0)


def test_write_split_csv(tmp_path):
    src = Fake({"a": 2, "b": 1})
    src.records.append(ImageRecord("nolabel.jpg", -1))
    path = tmp_path / "split.csv"
    write_split_csv(path, {"train": src, "val": SubsetSource(src, [0])})
    with path.open() as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["image", "label", "split"]
    assert rows[1:] == ([[r.image_id, ["a", "b"][r.label] if r.label >= 0 else "", "train"] for r in src.records]
                        + [[src.records[0].image_id, "a", "val"]])


# ------------------------------------------------------------------------------ the original study's split


class Recording(Fake):
    """Fake that records which calls reach it (a subset source must pass them through unchanged)."""

    imagenet_labels = True

    def load_reduced(self, record, min_side):
        return ("reduced", record.image_id, min_side)

    def stamp(self, record):
        return f"stamp:{record.image_id}"


def test_study_split_is_sklearn_train_test_split_in_its_order():
    from sklearn.model_selection import train_test_split

    from iqa_saliency.data.splits import study_split

    src = Fake({"a": 10, "b": 6, "c": 5})
    labels = [r.label for r in src.records]
    train, val = train_test_split(np.arange(len(labels)), test_size=0.2, stratify=labels, random_state=32)
    assert study_split(src.records) == (train.tolist(), val.tolist())  # defaults: 0.2 and the study's 32
    train, val = train_test_split(np.arange(len(labels)), test_size=0.3, stratify=labels, random_state=5)
    assert study_split(src.records, 0.3, 5) == (train.tolist(), val.tolist())
    part = split_source(src, "val", 0.3, 5, method="study")
    assert part.indices == val.tolist()  # the study's order, not sorted
    assert [r.image_id for r in part.records] == [src.records[i].image_id for i in val]
    assert split_source(src, "train", 0.3, 5, method="study").indices == train.tolist()
    with pytest.raises(DatasetError, match="cannot be drawn from these 22 images"):
        study_split(src.records + [ImageRecord("lonely.jpg", 7)], 0.3, 5)


def test_subset_source_passes_the_base_through():
    src = Recording({"a": 3, "b": 2})
    sub = SubsetSource(src, [4, 0, 2], keep_order=True)
    assert sub.indices == [4, 0, 2] and sub.imagenet_labels is True and sub.class_names == ["a", "b"]
    assert sub.load_reduced(sub.records[0], 64) == ("reduced", src.records[4].image_id, 64)
    assert sub.stamp(sub.records[1]) == f"stamp:{src.records[0].image_id}"
    assert SubsetSource(src, [4, 0, 2]).indices == [0, 2, 4]


def test_split_messages():
    src = Fake({"a": 4})
    with pytest.raises(ConfigError, match=r"dataset.split='test' is not valid. Use dataset.split=all, train or val."):
        split_source(src, "test", 0.2, 0)
    with pytest.raises(ConfigError, match=r"dataset.split_method='sklearn' is not valid"):
        split_source(src, "val", 0.2, 0, method="sklearn")
    with pytest.raises(ConfigError, match=r"out of range. Use a number between 0 and 1, e.g. dataset.val_fraction=0.2"):
        split_source(src, "val", 1.5, 0)
    with pytest.raises(DatasetError, match="Use more images or another dataset.val_fraction."):
        split_source(Fake({"a": 1}), "val", 0.2, 0)


def test_split_csv_bytes_and_out_of_range_labels(tmp_path):
    src = Fake({"a": 1})
    src.records.append(ImageRecord("odd.jpg", 1))  # a label one past the class names: no name
    path = tmp_path / "split.csv"
    write_split_csv(path, {"all": src})
    assert path.read_bytes() == b"image,label,split\na/000-0.jpg,a,all\nodd.jpg,,all\n"


def test_check_split_defaults_to_the_project_method_and_study_needs_sklearn(monkeypatch):
    from iqa_saliency.data.splits import check_split, study_split

    check_split("val", 0.2)  # the default method is valid
    monkeypatch.setitem(__import__("sys").modules, "sklearn.model_selection", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"^dataset.split_method=study needs scikit-learn. Install it: pip install "
                                          r"scikit-learn.$"):
        study_split(Fake({"a": 4, "b": 4}).records)
