"""Which images of a source a run uses: the quality gate, then the train/val split (same in train and evaluate)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DatasetError
from .loading import resolve_num_workers
from .quality_filter import (
    QualityLoader,
    category_counts,
    check_categories,
    filter_by_quality,
    score_source,
    scorer_id,
    write_quality_report,
)
from .sources import ImageSource
from .splits import check_split, split_source

log = logging.getLogger(__name__)


@dataclass
class Selection:
    """The filter and split settings; `meta()` is what a training checkpoint records of them."""

    split: str = "all"
    val_fraction: float = 0.2
    split_seed: int = 0
    quality_filter: list[str] | None = None
    quality_scorer: str = ""  # scorer_id(...) of the quality model that decides the categories
    quality_cache: str | None = None
    quality_batch_size: int = 32
    num_workers: int = 0

    def __post_init__(self) -> None:
        check_split(self.split, self.val_fraction)
        self.quality_filter = check_categories(self.quality_filter)
        if self.quality_filter and not self.quality_cache:
            raise ConfigError("dataset.quality_filter needs a cache file. Set dataset.quality_cache=PATH.")

    @classmethod
    def from_options(cls, dataset: Mapping[str, Any], seed: int, quality_checkpoint: str | None, pretrained: bool,
                     split: str | None = None) -> Selection:
        """Settings from a dataset config's plain values (keys a dataset lacks take their defaults)."""
        return cls(
            split=split or dataset.get("split") or "all",
            val_fraction=dataset.get("val_fraction", 0.2),
            split_seed=dataset.get("split_seed", seed),
            quality_filter=dataset.get("quality_filter"),
            quality_scorer=scorer_id(quality_checkpoint, pretrained, dataset.get("resize"), dataset.get("crop")),
            quality_cache=dataset.get("quality_cache"),
            quality_batch_size=max(8, int(dataset.get("batch_size") or 8)),
            num_workers=resolve_num_workers(dataset.get("num_workers")),
        )

    def meta(self) -> dict[str, Any]:
        """Plain values (lists, str, numbers) that define which images make up train and val."""
        return {"val_fraction": float(self.val_fraction), "split_seed": int(self.split_seed),
                "quality_filter": list(self.quality_filter) if self.quality_filter else None,
                "quality_scorer": self.quality_scorer if self.quality_filter else None}

    def check_against(self, meta: Mapping[str, Any] | None, checkpoint: str) -> None:
        """Refuse a train/val split that differs from the one `checkpoint` was trained with."""
        if self.split == "all" or not meta or "selection" not in meta:
            return
        trained = meta["selection"]
        mine = self.meta()
        names = {"val_fraction": "dataset.val_fraction", "split_seed": "dataset.split_seed",
                 "quality_filter": "dataset.quality_filter"}
        wrong = [k for k in (*names, "quality_scorer") if _norm(mine.get(k)) != _norm(trained.get(k))]
        if wrong:
            have = ", ".join(f"{names.get(k, 'quality scorer')}={mine.get(k)}" for k in wrong)
            fixes = [f"{names[k]}={_override(trained.get(k))}" for k in wrong if k in names]
            fix = f"Set {' '.join(fixes)}" if fixes else "Use"
            if "quality_scorer" in wrong:
                fix += (f"{' and use' if fixes else ''} the quality weights and image size it was trained with "
                        f"({trained.get('quality_scorer')})")
            raise ConfigError(f"dataset.split={self.split} would not be the split '{checkpoint}' was trained with "
                              f"({have}). {fix}.")


def _norm(value: Any) -> Any:
    return round(value, 9) if isinstance(value, float) else value


def _override(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, list):
        return "[" + ",".join(map(str, value)) + "]"
    return str(value)


def select_images(
    source: ImageSource,
    selection: Selection,
    quality: QualityLoader | None = None,
    report_dir: str | os.PathLike | None = None,
    resize: int | None = 256,
    crop: int | None = 224,
) -> ImageSource:
    """Apply the quality gate (scores cached), then take the configured split; reports go to `report_dir`."""
    if selection.quality_filter:
        if quality is None:
            raise ConfigError("dataset.quality_filter needs the quality model. Configure quality=paq2piq.")
        scores = score_source(source, quality, selection.quality_cache, selection.quality_scorer, resize=resize,
                              crop=crop, batch_size=selection.quality_batch_size, num_workers=selection.num_workers)
        kept = filter_by_quality(source, scores, selection.quality_filter)
        counts = category_counts(scores)
        log.info("Quality categories %s; kept %d of %d images (%s; %d scored now, the rest from %s)",
                 counts, len(kept), len(source), "+".join(selection.quality_filter), scores.n_scored,
                 selection.quality_cache)
        if report_dir is not None:
            write_quality_report(Path(report_dir), counts, selection.quality_filter, len(kept), scores,
                                 source.records)
        if not len(kept):
            raise DatasetError(f"No image is rated {'/'.join(selection.quality_filter)} (counts: {counts}). "
                               "Widen dataset.quality_filter or use another dataset.")
        source = kept
    return split_source(source, selection.split, selection.val_fraction, selection.split_seed)
