"""Stratified train/val split and the subset source."""

from __future__ import annotations

from collections import Counter

import pytest

from iqa_saliency.data import ImageRecord, ImageSource
from iqa_saliency.errors import ConfigError
from iqa_saliency.splits import SubsetSource, split_source, stratified_split


class Fake(ImageSource):
    def __init__(self, per_class: dict[str, int]) -> None:
        self.class_names = list(per_class)
        self.records = [ImageRecord(f"{name}/{i:03d}.jpg", c) for c, (name, n) in enumerate(per_class.items())
                        for i in range(n)]

    def load(self, record):
        return record.image_id


def test_stratified_counts_disjoint_and_complete():
    src = Fake({"a": 10, "b": 5, "c": 2, "d": 1})
    train, val = stratified_split(src.records, 0.2, seed=0)
    assert set(train).isdisjoint(val) and sorted(train + val) == list(range(len(src)))
    per_class = Counter(src.records[i].label for i in val)
    # round(10*.2)=2, round(5*.2)=1, a class of 2 keeps one in each part, a class of 1 stays in train
    assert per_class == {0: 2, 1: 1, 2: 1}


def test_split_is_repeatable_and_seeded():
    src = Fake({"a": 20, "b": 20})
    assert stratified_split(src.records, 0.25, 3) == stratified_split(src.records, 0.25, 3)
    assert stratified_split(src.records, 0.25, 3)[1] != stratified_split(src.records, 0.25, 4)[1]


def test_a_class_val_part_does_not_depend_on_other_classes():
    one = Fake({"a": 12, "b": 9})
    two = Fake({"a": 12, "b": 9, "c": 30})
    ids = [{one.records[i].image_id for i in stratified_split(s.records, 0.3, 1)[1] if s.records[i].label == 0}
           for s in (one, two)]
    assert ids[0] == ids[1]


def test_split_source_parts_and_errors():
    src = Fake({"a": 10, "b": 10})
    train, val = split_source(src, "train", 0.2, 0), split_source(src, "val", 0.2, 0)
    assert isinstance(val, SubsetSource) and len(train) == 16 and len(val) == 4
    assert {r.image_id for r in train.records}.isdisjoint(r.image_id for r in val.records)
    assert val.class_names == ["a", "b"] and val.load(val.records[0]) == val.records[0].image_id
    assert split_source(src, "all", 0.2, 0) is src
    with pytest.raises(ConfigError, match="dataset.split=all, train or val"):
        split_source(src, "test", 0.2, 0)
    with pytest.raises(ConfigError, match="val_fraction"):
        split_source(src, "val", 1.5, 0)
