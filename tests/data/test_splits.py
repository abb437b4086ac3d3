"""Stratified train/val split and the subset source."""

from __future__ import annotations

from collections import Counter

import pytest

from iqa_saliency.data.sources import ImageRecord, ImageSource
from iqa_saliency.data.splits import SubsetSource, split_source, stratified_split
from iqa_saliency.errors import ConfigError


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


def test_selection_refuses_a_split_other_than_the_checkpoints():
    from iqa_saliency.data.selection import Selection

    trained = Selection(val_fraction=0.2, split_seed=0, quality_filter=["Good", "Excellent"], quality_cache="c",
                        quality_scorer="w|resize=256|crop=224")
    meta = {"selection": trained.meta()}
    same = Selection(split="val", val_fraction=0.2, split_seed=0, quality_filter=["excellent", "good"],
                     quality_cache="other.csv", quality_scorer="w|resize=256|crop=224")
    same.check_against(meta, "best.ckpt")  # the cache file may differ; the images chosen do not
    other = Selection(split="val", val_fraction=0.3, split_seed=1)
    with pytest.raises(ConfigError, match=r"'best.ckpt'.*Set dataset.val_fraction=0.2 dataset.split_seed=0 "
                                          r"dataset.quality_filter=\[Good,Excellent\] and use the quality weights "
                                          r"and image size it was trained with \(w\|resize=256\|crop=224\)\.$"):
        other.check_against(meta, "best.ckpt")
    Selection(split="all", val_fraction=0.3).check_against(meta, "best.ckpt")  # all images: no split to match
    Selection(split="val").check_against({"arch": "resnet18"}, "plain.pth")  # no split recorded: nothing to check
