"""Evaluate one (corruption, severity) cell: python evaluate.py corruption=motion_blur severity=2."""

from __future__ import annotations

import logging
import signal
import sys
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

    from iqa_saliency.attribution.registry import build_attribution, check_attribution, method_defaults
    from iqa_saliency.corruption import check_corruption
    from iqa_saliency.data.loading import resolve_num_workers
    from iqa_saliency.data.quality_filter import scorer_id
    from iqa_saliency.data.selection import Selection, select_images
    from iqa_saliency.errors import WeightsUnavailableError, find_user_error
    from iqa_saliency.evaluation.cell import run_evaluation
    from iqa_saliency.evaluation.similarity import check_quality_map
    from iqa_saliency.io.atomic import check_writable
    from iqa_saliency.io.resume import check_run_folder, is_complete, launch_rank, read_summary
    from iqa_saliency.models.classifier import read_checkpoint_meta
    from iqa_saliency.report.loggers import finish_logger, log_preview_table

    check_corruption(cfg.corruption, cfg.severity)
    options = OmegaConf.to_container(cfg.attribution.get("options") or {}, resolve=True)
    check_attribution(cfg.attribution.name, options)
    # quality.saliency: `local` (the 20x20 local scores) or an attribution method explaining the global score
    quality_cfg = OmegaConf.to_container(cfg.quality, resolve=True)
    quality_saliency = quality_cfg.pop("saliency", "local")
    quality_options = quality_cfg.pop("saliency_options", None) or {}
    if quality_saliency != "local":
        check_attribution(quality_saliency, quality_options, key="quality.saliency_options")
        if "seed" in method_defaults(quality_saliency):
            quality_options.setdefault("seed", cfg.seed)
    quality_map = cfg.get("similarity", {}).get("quality_map", "raw")
    check_quality_map(quality_map)
    hydra_cfg = HydraConfig.get()
    run_dir = hydra_cfg.runtime.output_dir
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    config = OmegaConf.to_container(cfg, resolve=True)
    if launch_rank() == 0:  # processes a DDP launcher started share rank 0's folder
        check_run_folder(run_dir, cfg.resume, config)  # no overwriting; resume only with the same config
    if cfg.resume and is_complete(run_dir):
        log.info("%s is complete (summary.json present); resume=true skips it.", run_dir)
        return read_summary(run_dir)
    check_writable(run_dir)
    resolve_num_workers(cfg.dataset.num_workers)  # a bad value stops here, before any model is loaded
    source = instantiate(cfg.dataset.source)
    selection = Selection.from_options(OmegaConf.to_container(cfg.dataset, resolve=True), cfg.seed,
                                       cfg.quality.checkpoint, cfg.quality.pretrained)
    if selection.split != "all":
        selection.check_against(read_checkpoint_meta(cfg.classifier.checkpoint), cfg.classifier.checkpoint)

    try:
        quality = instantiate(quality_cfg)
        classifier = instantiate(cfg.classifier)
    except Exception as exc:  # Hydra wraps errors raised while instantiating
        if not (cfg.allow_untrained_fallback and isinstance(find_user_error(exc), WeightsUnavailableError)):
            raise
        exc = find_user_error(exc)
        banner = "=" * 78
        log.warning("\n%s\nOFFLINE: %s\nRunning with UNTRAINED weights instead; every output is marked "
                    "'untrained'.\n%s", banner, exc, banner)
        quality = instantiate(quality_cfg, pretrained=False)
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
            num_workers=resolve_num_workers(cfg.dataset.num_workers, trainer.num_devices),
            target=cfg.attribution.target,
            n_figures=cfg.figures,
            save_images=cfg.dataset.save_images,
            save_maps=cfg.save_maps,
            config=config,
            resume=cfg.resume,
            clean_cache_dir=clean_cache_dir,
            corruption_cache_dir=cfg.corruption_cache,
            channels_last=cfg.channels_last,
            fold_batchnorm=cfg.fold_batchnorm,
            attribution_options=options,
            quality_attribution_factory=partial(build_attribution, quality_saliency, **quality_options)
            if quality_saliency != "local" else None,
            quality_saliency=quality_saliency,
            quality_map=quality_map,
        )
        if result.summary:
            log_preview_table(logger, result.previews)
            log.info("Wrote %s (%d images, %d skipped)", run_dir, result.summary["n_images"],
                     result.summary["n_skipped"])
    finally:
        finish_logger(logger)
    return result.summary


def check_output_dir(argv: list[str]) -> None:
    """Hydra creates the run folder before the job starts: check a user-given one first, for a one-line error."""
    from iqa_saliency.errors import exit_on_user_error
    from iqa_saliency.io.atomic import check_writable

    key = "hydra.sweep.dir=" if ("-m" in argv or "--multirun" in argv) else "hydra.run.dir="
    given = [arg[len(key):].strip("'\"") for arg in argv if arg.startswith(key)]
    if given and "${" not in given[-1]:
        with exit_on_user_error():
            check_writable(given[-1])


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def randomization_check(cfg: DictConfig) -> dict[str, Any]:
    """python evaluate.py +check=randomization: the model-randomisation sanity check on the dataset's images."""
    from hydra.utils import instantiate

    from iqa_saliency.attribution.registry import check_attribution, method_defaults
    from iqa_saliency.evaluation.sanity import load_images, run_randomization, write_table
    from iqa_saliency.io.atomic import check_writable
    from iqa_saliency.io.provenance import provenance
    from iqa_saliency.io.run_writer import RunWriter
    from iqa_saliency.report.figures import randomization_figure as save_figure

    check = cfg.check
    names = list(check.methods or [cfg.attribution.name])
    methods = {}
    for name in names:
        options = (OmegaConf.to_container(cfg.attribution.get("options") or {}, resolve=True)
                   if name == cfg.attribution.name else {})
        check_attribution(name, options)
        if "seed" in method_defaults(name):
            options.setdefault("seed", cfg.seed)
        methods[name] = options
    run_dir = HydraConfig.get().runtime.output_dir
    check_writable(run_dir)
    images = load_images(instantiate(cfg.dataset.source), check.max_images, cfg.dataset.resize, cfg.dataset.crop)
    classifier = instantiate(cfg.classifier)
    result = run_randomization(classifier.model, images, methods, layers=check.layers, seed=cfg.seed,
                               flag_spearman=check.flag_spearman, batch_size=cfg.dataset.batch_size)
    write_table(f"{run_dir}/randomization.csv", result.rows)
    save_figure(f"{run_dir}/randomization.png", result, check.flag_spearman)
    for name in result.flagged:
        log.warning("%s: maps barely change when the whole classifier is randomised (Spearman |map| >= %s); "
                    "they do not reflect what the model learned.", name, check.flag_spearman)
    summary = {"check": "randomization", "methods": methods, "layers": result.layers, "flagged": result.flagged,
               "flag_spearman": check.flag_spearman, "seed": cfg.seed, "n_images": len(images),
               "weights": classifier.weights.as_dict(), "table": result.rows, "provenance": provenance(),
               "config": OmegaConf.to_container(cfg, resolve=True)}
    RunWriter(run_dir).write_summary(summary)
    log.info("Wrote %s (flagged: %s)", run_dir, ", ".join(result.flagged) or "none")
    return summary


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> dict[str, Any] | None:
    from iqa_saliency.errors import exit_on_user_error

    # SIGTERM (a scheduler, `kill`) ends the run like Ctrl-C: rows on disk stay, the folder is marked INCOMPLETE.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        with exit_on_user_error():
            if cfg.get("check") is not None:
                return randomization_check(cfg)
            return evaluate(cfg)
    except KeyboardInterrupt:
        run_dir = HydraConfig.get().runtime.output_dir
        print(f"interrupted: partial results in {run_dir}; finish with resume=true hydra.run.dir={run_dir}",
              file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    check_output_dir(sys.argv[1:])
    main()
