"""Stratified train/val splits and a source restricted to a subset of another source's images."""

from __future__ import annotations

import io
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image

from ..errors import ConfigError, DatasetError
from ..io.atomic import atomic_write_text
from ..io.csv_safe import SafeWriter
from .sources import ImageRecord, ImageSource

SPLITS = ("all", "train", "val")
# dataset.split_method: how train and val are drawn
#   project: per class, round(n * val_fraction) images drawn with dataset.split_seed (stratified_split)
#   study:   the original study's sklearn train_test_split(arange(n), test_size=val_fraction, stratify=labels,
#            random_state=split_seed) over the images in folder order, parts in the order sklearn returns them
SPLIT_METHODS = ("project", "study")
STUDY_RANDOM_STATE = 32  # datasets.py:94 of the study


class SubsetSource(ImageSource):
    """The images of `base` at `indices` (in the base's order, or as given with keep_order=True), with the base's
    classes, loader and file stamps."""

    def __init__(self, base: ImageSource, indices: Sequence[int], keep_order: bool = False) -> None:
        self.base = base
        self.indices = [int(i) for i in indices] if keep_order else sorted(int(i) for i in indices)
        self.records = [base.records[i] for i in self.indices]
        self.class_names = base.class_names
        self.imagenet_labels = base.imagenet_labels

    def load(self, record: ImageRecord) -> Image.Image:
        return self.base.load(record)

    def load_reduced(self, record: ImageRecord, min_side: int | None) -> Image.Image:
        return self.base.load_reduced(record, min_side)

    def stamp(self, record: ImageRecord) -> str:
        return self.base.stamp(record)

    def content_id(self, record: ImageRecord) -> str:
        return self.base.content_id(record)


def check_split(split: str, val_fraction: float, method: str = "project") -> None:
    """Raise ConfigError for an unknown split name or method, or a fraction outside (0, 1)."""
    if split not in SPLITS:
        raise ConfigError(f"dataset.split={split!r} is not valid. Use dataset.split=all, train or val.")
    if method not in SPLIT_METHODS:
        raise ConfigError(f"dataset.split_method={method!r} is not valid. Use dataset.split_method=project or study.")
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


def study_split(records: Sequence[ImageRecord], val_fraction: float = 0.2,
                random_state: int = STUDY_RANDOM_STATE) -> tuple[list[int], list[int]]:
    """(train indices, val indices) as the original study draws them (datasets.py:94): scikit-learn's
    train_test_split(np.arange(n), test_size=val_fraction, stratify=labels, random_state=random_state), the
    indices in the order it returns them (the study's evaluation order). Validation size: ceil(n * val_fraction).
    """
    try:
        from sklearn.model_selection import train_test_split
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise ConfigError("dataset.split_method=study needs scikit-learn. Install it: pip install scikit-learn."
                          ) from exc
    labels = [r.label for r in records]
    try:
        train, val = train_test_split(np.arange(len(labels)), test_size=val_fraction, stratify=labels,
                                      random_state=random_state)
    except ValueError as exc:  # e.g. a class with a single image cannot be stratified
        raise DatasetError(f"The study's split cannot be drawn from these {len(labels)} images: {exc}") from exc
    return [int(i) for i in train], [int(i) for i in val]


def split_source(source: ImageSource, split: str, val_fraction: float, seed: int,
                 method: str = "project") -> ImageSource:
    """The source itself (split=all) or its stratified train or val part (see SPLIT_METHODS)."""
    check_split(split, val_fraction, method)
    if split == "all":
        return source
    if method == "study":
        train, val = study_split(source.records, val_fraction, seed)
    else:
        train, val = stratified_split(source.records, val_fraction, seed)
    chosen = train if split == "train" else val
    if not chosen:
        raise DatasetError(f"The {split} split of {len(source)} images is empty. Use more images or another "
                           "dataset.val_fraction.")
    return SubsetSource(source, chosen, keep_order=method == "study")


def write_split_csv(path: str | os.PathLike, parts: Mapping[str, ImageSource]) -> None:
    """A CSV of every image with its class name and the part (e.g. train, val) it belongs to."""
    buf = io.StringIO()
    writer = SafeWriter(buf, lineterminator="\n")
    writer.writerow(["image", "label", "split"])
    for part, source in parts.items():
        names = source.class_names or []
        writer.writerows([r.image_id, names[r.label] if 0 <= r.label < len(names) else "", part]
                         for r in source.records)
    atomic_write_text(path, buf.getvalue())
