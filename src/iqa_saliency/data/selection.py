"""Which images of a source a run uses: the quality gate, then the train/val split (same in train and evaluate)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DatasetError
from ..models.paq2piq import ScoreNormalizer
from .images import check_choice
from .loading import resolve_num_workers
from .quality_filter import (
    SCORE_SIZES,
    QualityLoader,
    ScoringOptions,
    category_counts,
    check_categories,
    filter_by_quality,
    score_source,
    scorer_id,
    scores_from_mos_csv,
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
    split_method: str = "project"  # project | study (see data.splits.SPLIT_METHODS)
    quality_scores: str | None = None  # the study's mos.csv: scores and categories read instead of computed
    quality_score_size: str = "eval"  # full | eval: what PaQ-2-PiQ scores for the filter
    normalizer: ScoreNormalizer | None = None  # maps computed scores to categories (default: the study file's)

    def __post_init__(self) -> None:
        check_split(self.split, self.val_fraction, self.split_method)
        check_choice("dataset.quality_score_size", self.quality_score_size, SCORE_SIZES)
        self.quality_filter = check_categories(self.quality_filter)
        if self.quality_filter and not self.quality_cache and not self.quality_scores:
            raise ConfigError("dataset.quality_filter needs a cache file. Set dataset.quality_cache=PATH.")

    @classmethod
    def from_options(cls, dataset: Mapping[str, Any], seed: int, quality_checkpoint: str | None, pretrained: bool,
                     split: str | None = None) -> Selection:
        """Settings from a dataset config's plain values (keys a dataset lacks take their defaults)."""
        size = dataset.get("quality_score_size") or "eval"
        full = size == "full"
        return cls(
            split=split or dataset.get("split") or "all",
            val_fraction=dataset.get("val_fraction", 0.2),
            split_seed=dataset.get("split_seed", seed),
            quality_filter=dataset.get("quality_filter"),
            quality_scorer=scorer_id(quality_checkpoint, pretrained, None if full else dataset.get("resize"),
                                     None if full else dataset.get("crop")),
            quality_cache=dataset.get("quality_cache"),
            quality_batch_size=max(8, int(dataset.get("batch_size") or 8)),
            num_workers=resolve_num_workers(dataset.get("num_workers")),
            split_method=dataset.get("split_method") or "project",
            quality_scores=dataset.get("quality_scores") or None,
            quality_score_size=size,
        )

    def meta(self) -> dict[str, Any]:
        """Plain values (lists, str, numbers) that define which images make up train and val."""
        filtered = bool(self.quality_filter)
        computed = filtered and not self.quality_scores
        n = self.normalizer or ScoreNormalizer()
        return {"val_fraction": float(self.val_fraction), "split_seed": int(self.split_seed),
                "split_method": self.split_method,
                "quality_filter": list(self.quality_filter) if filtered else None,
                # what decides the categories: the mos.csv file, or the quality model and image size ...
                "quality_scorer": (f"file:{Path(self.quality_scores).name}" if self.quality_scores
                                   else self.quality_scorer) if filtered else None,
                # ... and the normalisation that turns its scores into categories
                "quality_normalization": f"{n.peak:.6g},{n.std_left:.6g},{n.std_right:.6g},{n.n_std:g},"
                                         f"{n.clip_max:g}" if computed else None}

    def check_against(self, meta: Mapping[str, Any] | None, checkpoint: str) -> None:
        """Refuse a train/val split that differs from the one `checkpoint` was trained with.

        A checkpoint without split metadata (a plain state_dict, the original study's Lightning files) cannot be
        checked: the split this dataset configuration defines is evaluated, and a log line says so.
        """
        if self.split == "all":
            return
        if not meta or "selection" not in meta:
            log.info("'%s' records no train/val split; evaluating the %s split that the dataset settings define "
                     "(dataset.split_method=%s, val_fraction=%s, split_seed=%s%s).", checkpoint, self.split,
                     self.split_method, self.val_fraction, self.split_seed,
                     f", quality_filter={self.quality_filter}" if self.quality_filter else "")
            return
        trained = dict(meta["selection"])
        trained.setdefault("split_method", "project")  # checkpoints written before the study's split existed
        mine = self.meta()
        names = {"val_fraction": "dataset.val_fraction", "split_seed": "dataset.split_seed",
                 "split_method": "dataset.split_method", "quality_filter": "dataset.quality_filter"}
        keys = [*names, "quality_scorer"] + (["quality_normalization"] if "quality_normalization" in trained else [])
        wrong = [k for k in keys if _norm(mine.get(k)) != _norm(trained.get(k))]
        if "quality_normalization" in wrong and ({"quality_filter", "quality_scorer"} & set(wrong)):
            wrong.remove("quality_normalization")  # named once the filter and scorer match
        if wrong:
            have = ", ".join(f"{names.get(k, k.replace('_', ' '))}={mine.get(k)}" for k in wrong)
            fixes = [f"{names[k]}={_override(trained.get(k))}" for k in wrong if k in names]
            fix = f"Set {' '.join(fixes)}" if fixes else "Use"
            if "quality_scorer" in wrong:
                fix += (f"{' and use' if fixes else ''} the quality weights and image size it was trained with "
                        f"({trained.get('quality_scorer')})")
            if "quality_normalization" in wrong:
                fix += (f"{' and use' if fixes or 'quality_scorer' in wrong else ''} the quality.normalization it "
                        f"was trained with (peak, std_left, std_right, n_std, clip: "
                        f"{trained.get('quality_normalization')})")
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
    """Apply the quality gate (scores cached, or read from dataset.quality_scores), then take the configured
    split; reports go to `report_dir`.

    With dataset.quality_scores and no dataset.quality_filter every image still needs a row in the file (as in
    the original study, whose filter selected nothing but whose dataset required every row), and all are kept.
    """
    if selection.quality_scores and not selection.quality_filter:
        scores_from_mos_csv(source, selection.quality_scores)  # every image must have a row
        log.info("Every image has a row in %s; no quality filter (dataset.quality_filter=null: all %d images, as "
                 "the original study's code used them)", selection.quality_scores, len(source))
    if selection.quality_filter:
        if selection.quality_scores:
            scores = scores_from_mos_csv(source, selection.quality_scores)
            where = f"from {selection.quality_scores}"
        else:
            if quality is None:
                raise ConfigError("dataset.quality_filter needs the quality model. Configure quality=paq2piq.")
            if selection.quality_score_size == "full":
                resize, crop = None, None
            options = ScoringOptions(resize=resize, crop=crop, batch_size=selection.quality_batch_size,
                                     num_workers=selection.num_workers)
            scores = score_source(source, quality, selection.quality_cache, selection.quality_scorer, options,
                                  normalizer=selection.normalizer)
            where = f"{scores.n_scored} scored now, the rest from {selection.quality_cache}"
        kept = filter_by_quality(source, scores, selection.quality_filter)
        counts = category_counts(scores)
        log.info("Quality categories %s; kept %d of %d images (%s; %s)",
                 counts, len(kept), len(source), "+".join(selection.quality_filter), where)
        if report_dir is not None:
            write_quality_report(Path(report_dir), counts, selection.quality_filter, len(kept), scores,
                                 source.records)
        if not len(kept):
            raise DatasetError(f"No image is rated {'/'.join(selection.quality_filter)} (counts: {counts}). "
                               "Widen dataset.quality_filter or use another dataset.")
        source = kept
    return split_source(source, selection.split, selection.val_fraction, selection.split_seed,
                        selection.split_method)
