"""Stratified train/val splits and a source restricted to a subset of another source's images."""

from __future__ import annotations

import csv
import io
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image

from ..errors import ConfigError, DatasetError
from ..io.atomic import atomic_write_text
from .sources import ImageRecord, ImageSource

SPLITS = ("all", "train", "val")


class SubsetSource(ImageSource):
    """The images of `base` at `indices` (in the base's order), with the base's classes and loader."""

    def __init__(self, base: ImageSource, indices: Sequence[int]) -> None:
        self.base = base
        self.indices = sorted(int(i) for i in indices)
        self.records = [base.records[i] for i in self.indices]
        self.class_names = base.class_names
        self.imagenet_labels = base.imagenet_labels

    def load(self, record: ImageRecord) -> Image.Image:
        return self.base.load(record)


def check_split(split: str, val_fraction: float) -> None:
    """Raise ConfigError for an unknown split name or a fraction outside (0, 1)."""
    if split not in SPLITS:
        raise ConfigError(f"dataset.split={split!r} is not valid. Use dataset.split=all, train or val.")
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 < val_fraction < 1:
        raise ConfigError(f"dataset.val_fraction={val_fraction!r} is out of range. Use a number between 0 and 1, "
                          "e.g. dataset.val_fraction=0.2.")


def stratified_split(records: Sequence[ImageRecord], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train indices, val indices): per label, round(n * val_fraction) images drawn with `seed` go to val.

    Each class with at least two images keeps one in each part. Which images a class sends to val
    depends only on that class's image ids, the fraction and the seed, not on the other classes.
    """
    by_label: dict[int, list[int]] = defaultdict(list)
    for i, record in enumerate(records):
        by_label[record.label].append(i)
    val: list[int] = []
    for label, members in by_label.items():
        members = sorted(members, key=lambda i: records[i].image_id)
        n = len(members)
        n_val = int(round(n * val_fraction))
        if n >= 2:
            n_val = min(max(n_val, 1), n - 1)
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, label & 0xFFFFFFFF])
        val.extend(members[j] for j in rng.permutation(n)[:n_val])
    val_set = set(val)
    return [i for i in range(len(records)) if i not in val_set], sorted(val_set)


def split_source(source: ImageSource, split: str, val_fraction: float, seed: int) -> ImageSource:
    """The source itself (split=all) or its stratified train or val part."""
    check_split(split, val_fraction)
    if split == "all":
        return source
    train, val = stratified_split(source.records, val_fraction, seed)
    chosen = train if split == "train" else val
    if not chosen:
        raise DatasetError(f"The {split} split of {len(source)} images is empty. Use more images or another "
                           "dataset.val_fraction.")
    return SubsetSource(source, chosen)


def write_split_csv(path: str | os.PathLike, parts: Mapping[str, ImageSource]) -> None:
    """A CSV of every image with its class name and the part (e.g. train, val) it belongs to."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["image", "label", "split"])
    for part, source in parts.items():
        names = source.class_names or []
        writer.writerows([r.image_id, names[r.label] if 0 <= r.label < len(names) else "", part]
                         for r in source.records)
    atomic_write_text(path, buf.getvalue())
