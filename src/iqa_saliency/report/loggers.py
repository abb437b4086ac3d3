"""Experiment-logger output beyond scalars: the per-image preview table, and closing runs."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

from pytorch_lightning.loggers import WandbLogger as _LightningWandbLogger

from ..io.atomic import jsonable

log = logging.getLogger(__name__)


class WandbLogger(_LightningWandbLogger):
    """Lightning's WandbLogger without the `anonymous=None` it always passes to wandb.init (wandb >= 0.19 warns
    on the console that the setting has no effect). Configured in conf/logger/wandb.yaml."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self._wandb_init.get("anonymous") is None:
            self._wandb_init.pop("anonymous", None)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Lightning's metrics without the undefined ones (NaN, inf): wandb would write them into the run's
        wandb-summary.json as bare NaN, which strict JSON parsers refuse; an undefined value is simply not logged."""
        super().log_metrics(finite(metrics), step)


def finite(values: Mapping[str, Any]) -> dict[str, Any]:
    """`values` without NaN or infinite numbers (and without None)."""
    out = {}
    for key, value in values.items():
        number = value.item() if hasattr(value, "item") and getattr(value, "ndim", 1) == 0 else value
        if number is None or (isinstance(number, float) and not math.isfinite(number)):
            continue
        out[key] = value
    return out

TABLE_NUMBERS = ("mos", "mos_normalized", "quality_category", "mos_clean", "pred_name", "pred_prob",
                 "clean_pred", "flipped", "correct_top1", "sim_cc", "sim_sim", "sim_kld", "sim_spearman",
                 "attr_stability_cc", "quality_stability_cc", "change_cc", "change_spearman", "sim_cc_clean",
                 "confidence_drop", "attr_ris", "attr_ros", "deletion_auc_clean", "deletion_auc", "insertion_auc_clean",
                 "insertion_auc")


def log_preview_table(logger: Any, previews: Sequence[Any]) -> None:
    """Log a wandb Table (image, quality overlay, attribution overlay, numbers) when logging to wandb; offline, the
    images as run media and the table with the numbers (see `in_run_files`)."""
    if logger is None or type(logger).__name__ != "WandbLogger" or not previews:
        return
    import wandb

    run = logger.experiment
    numbers = [jsonable([p.row.get(k) for k in TABLE_NUMBERS]) for p in previews]
    if not run.offline:
        table = wandb.Table(columns=["image_id", "image", "quality_overlay", "attribution_overlay", *TABLE_NUMBERS])
        for p, values in zip(previews, numbers, strict=True):
            table.add_data(p.row["image"], wandb.Image(p.image), wandb.Image(p.quality_overlay),
                           wandb.Image(p.attribution_overlay), *values)
        run.log({"per_image": table})
        return
    table = wandb.Table(columns=["image_id", *TABLE_NUMBERS],
                        data=[[p.row["image"], *values] for p, values in zip(previews, numbers, strict=True)])
    media = {f"preview/{name}": [wandb.Image(getattr(p, name), caption=str(p.row["image"])) for p in previews]
             for name in ("image", "quality_overlay", "attribution_overlay")}
    run.log(in_run_files(run, {"per_image": table, **media}))


def in_run_files(run: Any, logged: dict[str, Any]) -> dict[str, Any]:
    """Offline: each table in `logged` (a wandb Table, or a custom chart's) bound to the run's own files before it
    is logged, so wandb writes it under files/media/table, named relative to the run, and makes no artifact of it.

    wandb logs an unbound table as an artifact whose files its records name by absolute path (in its staging
    folder): an offline run moved before `wandb sync` would lose them. A bound table keeps scalars only (media in
    it would be written as their type name), so images are logged as run media beside it.
    """
    if not run.offline:
        return logged
    import wandb

    for key, value in logged.items():
        table = value if isinstance(value, wandb.Table) else getattr(value, "table", None)
        if isinstance(table, wandb.Table) and not table.is_bound():
            table.bind_to_run(run, key if table is value else f"{key}_table", run.step)
    return logged


def log_run_config(logger: Any, flat: dict[str, Any]) -> None:
    """Flat keys (corruption, severity, attribution, classifier, ...) in the run's config, for grouping and
    filtering runs in a dashboard."""
    if logger is not None:
        logger.log_hyperparams(flat)


def log_cell_summary(logger: Any, summary: dict[str, Any]) -> None:
    """The cell's metrics (from the merged rows, as in summary.json) in the wandb run's summary."""
    if logger is None or type(logger).__name__ != "WandbLogger" or not summary:
        return
    values = finite(jsonable(summary.get("metrics") or {}))
    values.update({"n_images": summary.get("n_images"), "n_skipped": summary.get("n_skipped"),
                   "untrained": (summary.get("weights") or {}).get("untrained")})
    logger.experiment.summary.update(values)


def finish_logger(logger: Any) -> None:
    """Close the logger's run so the next job of a sweep starts a fresh one."""
    if logger is None:
        return
    try:
        logger.finalize("success")
    except Exception:  # a logger that cannot finalise must not hide the run's own result
        log.exception("Closing the experiment logger failed")
    if type(logger).__name__ == "WandbLogger":
        import wandb

        wandb.finish()
