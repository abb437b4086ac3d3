"""Evaluate one (corruption, severity) cell: python evaluate.py corruption=motion_blur severity=2."""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("evaluate")


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Compose the configured pieces and run one cell; user errors surface before heavy work."""
    from hydra.utils import instantiate

    from iqa_saliency.attribution import build_attribution, check_attribution_name
    from iqa_saliency.corruption import check_corruption
    from iqa_saliency.errors import WeightsUnavailableError, find_user_error
    from iqa_saliency.models.classifier import read_checkpoint_meta
    from iqa_saliency.outputs import check_writable, is_complete, read_summary
    from iqa_saliency.pipeline import run_evaluation
    from iqa_saliency.quality_filter import scorer_id
    from iqa_saliency.reporting import finish_logger, log_preview_table
    from iqa_saliency.selection import Selection, select_images

    check_corruption(cfg.corruption, cfg.severity)
    check_attribution_name(cfg.attribution.name)
    hydra_cfg = HydraConfig.get()
    run_dir = hydra_cfg.runtime.output_dir
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    if cfg.resume and is_complete(run_dir):
        log.info("%s is complete (summary.json present); resume=true skips it.", run_dir)
        return read_summary(run_dir)
    check_writable(run_dir)
    source = instantiate(cfg.dataset.source)
    selection = Selection.from_options(OmegaConf.to_container(cfg.dataset, resolve=True), cfg.seed,
                                       cfg.quality.checkpoint, cfg.quality.pretrained)
    if selection.split != "all":
        selection.check_against(read_checkpoint_meta(cfg.classifier.checkpoint), cfg.classifier.checkpoint)

    try:
        quality = instantiate(cfg.quality)
        classifier = instantiate(cfg.classifier)
    except Exception as exc:  # Hydra wraps errors raised while instantiating
        if not (cfg.allow_untrained_fallback and isinstance(find_user_error(exc), WeightsUnavailableError)):
            raise
        exc = find_user_error(exc)
        banner = "=" * 78
        log.warning("\n%s\nOFFLINE: %s\nRunning with UNTRAINED weights instead; every output is marked "
                    "'untrained'.\n%s", banner, exc, banner)
        quality = instantiate(cfg.quality, pretrained=False)
        classifier = instantiate(cfg.classifier, pretrained=False, checkpoint=None)
        selection.quality_scorer = scorer_id(None, False, cfg.dataset.resize, cfg.dataset.crop)

    source = select_images(source, selection, quality=lambda: quality, report_dir=run_dir,
                           resize=cfg.dataset.resize, crop=cfg.dataset.crop)
    logger = None
    if cfg.logger and "_target_" in cfg.logger:
        group = {"group": Path(hydra_cfg.sweep.dir).name} if multirun and "group" in cfg.logger else {}
        logger = instantiate(cfg.logger, **{k: v for k, v in group.items() if not cfg.logger.get(k)})
    clean_cache_dir = cfg.clean_cache
    if clean_cache_dir == "auto":  # a sweep shares one clean pass between its cells
        clean_cache_dir = str(Path(hydra_cfg.sweep.dir) / ".clean_cache") if multirun else None
    trainer = instantiate(cfg.trainer, logger=logger if logger is not None else False)
    options = OmegaConf.to_container(cfg.attribution.get("options") or {}, resolve=True)
    try:
        result = run_evaluation(
            source=source,
            quality=quality,
            classifier=classifier,
            attribution_factory=partial(build_attribution, cfg.attribution.name, **options),
            attribution_name=cfg.attribution.name,
            trainer=trainer,
            run_dir=run_dir,
            corruption=cfg.corruption,
            severity=cfg.severity,
            seed=cfg.seed,
            resize=cfg.dataset.resize,
            crop=cfg.dataset.crop,
            batch_size=cfg.dataset.batch_size,
            num_workers=cfg.dataset.num_workers,
            target=cfg.attribution.target,
            n_figures=cfg.figures,
            save_images=cfg.dataset.save_images,
            config=OmegaConf.to_container(cfg, resolve=True),
            clean_cache_dir=clean_cache_dir,
            corruption_cache_dir=cfg.corruption_cache,
            channels_last=cfg.channels_last,
            attribution_options=options,
        )
        if result.summary:
            log_preview_table(logger, result.previews)
            log.info("Wrote %s (%d images, %d skipped)", run_dir, result.summary["n_images"],
                     result.summary["n_skipped"])
    finally:
        finish_logger(logger)
    return result.summary


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> dict[str, Any] | None:
    from iqa_saliency.errors import exit_on_user_error

    with exit_on_user_error():
        return evaluate(cfg)


if __name__ == "__main__":
    main()
