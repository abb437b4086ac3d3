"""`iqa-train` / `python train.py`: fine-tune a classifier (dataset=folder dataset.root=PATH, optional filter)."""

from __future__ import annotations

import gc
import logging
import sys
from dataclasses import replace
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ..errors import exit_on_user_error
from . import CONFIG_PATH
from .checks import check_output_root, check_values
from .hydra_patches import speed_up_hydra
from .precheck import main_precheck
from .runtime import discard_stub_folder, keep_wandb_inside, quiet_known_warnings, show_progress
from .schema import check_config
from .sweep import PROGRESS_FILE

# Lightning, torch and the training modules are imported in train(), after the configuration is composed and
# checked (tests/cli/test_startup.py): --help and a typo answer at once.

_existed: dict[str, Any] = {}  # the deepest output folder that existed before this command (run() sets it)
log = logging.getLogger("train")

EVALUATE_ONLY_GROUPS = ("attribution", "check", "experiment")  # conf/ is shared with evaluate.py: not for --help


def train(cfg: DictConfig) -> dict[str, Any]:
    """Check the configuration, select the images, fine-tune, and write <run>/train_summary.json."""
    check_config(cfg, "train")  # every key typed (the command line checked it before Hydra)
    check_values(cfg)
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint

    from iqa_saliency.data.loading import resolve_num_workers
    from iqa_saliency.data.selection import Selection, select_images
    from iqa_saliency.data.splits import split_source, write_split_csv
    from iqa_saliency.data.study_files import read_mos_csv
    from iqa_saliency.errors import ConfigError, DatasetError, WeightsUnavailableError, find_user_error
    from iqa_saliency.heap import reuse_freed_heap
    from iqa_saliency.io.atomic import atomic_write_text, check_writable, remove_temporary_files, strict_json
    from iqa_saliency.io.provenance import provenance
    from iqa_saliency.io.resume import launch_rank
    from iqa_saliency.models.classifier import read_checkpoint_meta
    from iqa_saliency.models.weights import fetch_weights
    from iqa_saliency.report.loggers import finish_logger
    from iqa_saliency.training.module import (
        AtomicCheckpointIO,
        ClassificationData,
        ClassifierModule,
        OptimSettings,
        build_network_for,
    )

    run_dir = HydraConfig.get().runtime.output_dir
    check_writable(run_dir)
    if launch_rank() == 0:  # half-written checkpoints of an interrupted run
        remove_temporary_files(run_dir, ("checkpoints",))
    # a URL is downloaded (hub cache) and every checkpoint read safely here, before Lightning sees the local file
    ckpt_path = str(fetch_weights(str(cfg.ckpt_path), None, "ckpt_path")[0]) if cfg.ckpt_path else None
    resume_meta = read_checkpoint_meta(ckpt_path, "ckpt_path") if ckpt_path else None
    optim = OptimSettings(
        optimizer=cfg.optimizer.name, lr=cfg.optimizer.lr, momentum=cfg.optimizer.momentum,
        nesterov=cfg.optimizer.nesterov, weight_decay=cfg.optimizer.weight_decay, scheduler=cfg.scheduler.name,
        warmup_epochs=cfg.scheduler.warmup_epochs, step_size=cfg.scheduler.step_size, gamma=cfg.scheduler.gamma,
        label_smoothing=cfg.label_smoothing,
    )
    if not isinstance(cfg.augment, bool):
        raise ConfigError(f"augment={cfg.augment!r} is not a boolean. Use augment=true or augment=false.")
    if cfg.dataset.crop is None:
        raise ConfigError("Training needs a fixed input size. Set dataset.crop=224 (or another size).")
    selection = Selection.from_options(OmegaConf.to_container(cfg.dataset, resolve=True), cfg.seed,
                                       cfg.quality.checkpoint, cfg.quality.pretrained, split="all")
    if selection.quality_scores:  # every row of the study's mos.csv readable, before any model is built
        read_mos_csv(selection.quality_scores)
    source = instantiate(cfg.dataset.source)
    if not source.class_names:
        raise DatasetError(f"Training needs labelled images, and '{cfg.dataset.root}' has no class folders. "
                           "Point dataset.root at a folder with one subfolder per class.")
    # Weights first: a missing download should fail before the images are scored.
    normalize = bool(cfg.classifier.get("normalize", True))
    from .evaluate import quality_model_config, score_normalizer, untrained_banner

    network_options = {"seed": cfg.seed, "normalize": normalize}
    try:
        network, start_weights = build_network_for(cfg.classifier.arch, len(source.class_names), cfg.pretrained,
                                                   cfg.classifier.weights, checkpoint=cfg.classifier.checkpoint,
                                                   **network_options)
    except WeightsUnavailableError as exc:
        if not cfg.get("allow_untrained_fallback", False):
            raise
        untrained_banner(str(exc))  # trains from untrained weights (recorded as such in the checkpoint)
        network, start_weights = build_network_for(cfg.classifier.arch, len(source.class_names), False, None,
                                                   checkpoint=None, **network_options)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)

    quality_cfg = quality_model_config(cfg)
    loaded: list[Any] = []

    def quality() -> Any:  # loaded once, and only if the filter or the normalisation fit needs it
        if not loaded:
            try:
                loaded.append(instantiate(quality_cfg))
            except Exception as exc:  # Hydra wraps errors raised while instantiating
                if not (cfg.get("allow_untrained_fallback")
                        and isinstance(find_user_error(exc), WeightsUnavailableError)):
                    raise
                untrained_banner(str(find_user_error(exc)))
                loaded.append(instantiate(quality_cfg, pretrained=False))
        return loaded[0]

    if selection.quality_filter and not selection.quality_scores:
        selection.normalizer = score_normalizer(cfg, quality, selection.quality_scorer)
    filtered = select_images(source, selection, quality=quality, report_dir=run_dir,
                             resize=cfg.dataset.resize, crop=cfg.dataset.crop)
    if resume_meta:  # resuming on other images or classes would silently change what the run means
        replace(selection, split="train").check_against(resume_meta, cfg.ckpt_path)
        if list(resume_meta.get("class_names") or []) != list(filtered.class_names):
            raise DatasetError(f"'{cfg.ckpt_path}' was trained on other classes than '{cfg.dataset.root}' has. "
                               "Resume on the dataset the checkpoint was trained on.")
    # the same split evaluate.py's dataset.split=train|val gives (dataset.split_method: project, or the study's)
    train_source = split_source(filtered, "train", selection.val_fraction, selection.split_seed,
                                selection.split_method)
    val_source = split_source(filtered, "val", selection.val_fraction, selection.split_seed, selection.split_method)
    write_split_csv(f"{run_dir}/split.csv", {"train": train_source, "val": val_source})
    log.info("%d classes; %d train and %d val images", len(filtered.class_names or []), len(train_source),
             len(val_source))
    data = ClassificationData(train_source, val_source, crop=cfg.dataset.crop, resize=cfg.dataset.resize,
                              batch_size=cfg.dataset.batch_size, num_workers=0,
                              small=cfg.dataset.get("small", "upscale"), augment=bool(cfg.augment))
    meta = {
        "selection": selection.meta(),
        "image_size": {"resize": cfg.dataset.resize, "crop": cfg.dataset.crop},
        "initial_weights": start_weights.as_dict() if start_weights else {"name": "untrained"},
        "seed": int(cfg.seed),
    }
    module = ClassifierModule(network, list(filtered.class_names), cfg.classifier.arch, optim, meta)

    checkpoints = f"{run_dir}/checkpoints"
    callbacks: list[Any] = [
        ModelCheckpoint(dirpath=checkpoints, filename="best", monitor="val/loss", mode="min", save_top_k=1,
                        auto_insert_metric_name=False, enable_version_counter=False),
        # last.ckpt every epoch: a checkpoint of its own, since Lightning (2.6) writes save_last only in an epoch
        # whose monitored value improved, so a resume would restart from the best epoch, not the last
        ModelCheckpoint(dirpath=checkpoints, filename="last", monitor=None, save_top_k=1,
                        auto_insert_metric_name=False, enable_version_counter=False),
    ]
    if cfg.early_stopping.patience is not None:
        callbacks.append(EarlyStopping(monitor="val/loss", mode="min", patience=int(cfg.early_stopping.patience)))
    logger = _logger(cfg)
    if logger is not None:
        callbacks.append(LearningRateMonitor(logging_interval="epoch"))
    trainer = instantiate(
        cfg.trainer, max_epochs=cfg.epochs, logger=logger if logger is not None else False, callbacks=callbacks,
        enable_checkpointing=True, use_distributed_sampler=False, inference_mode=True,
        num_sanity_val_steps=0, plugins=[AtomicCheckpointIO()],
    )
    data.num_workers = resolve_num_workers(cfg.dataset.num_workers, trainer.num_devices)  # per process
    reuse_freed_heap()
    try:
        trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)
    finally:
        finish_logger(logger)
    if not trainer.is_global_zero:
        return {}
    best = callbacks[0]
    summary = {
        "best_checkpoint": best.best_model_path,
        "best_val_loss": float(best.best_model_score) if best.best_model_score is not None else None,
        "last_checkpoint": f"{checkpoints}/last.ckpt",
        "epochs_completed": int(trainer.current_epoch),
        "n_train": len(train_source), "n_val": len(val_source), "class_names": list(filtered.class_names),
        "final_metrics": {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1},
        "meta": meta,
        "provenance": provenance(),
        "config": OmegaConf.to_container(cfg, resolve=False),
    }
    atomic_write_text(f"{run_dir}/train_summary.json", strict_json(summary, indent=2, default=str) + "\n")
    log.info("Best checkpoint %s (val loss %s)", summary["best_checkpoint"], summary["best_val_loss"])
    return summary


def _logger(cfg: DictConfig) -> Any:
    """The configured experiment logger, named for a training run (the logger configs name evaluation cells)."""
    if not cfg.logger or "_target_" not in cfg.logger:
        return None
    if cfg.logger._target_.endswith("WandbLogger"):
        hydra_cfg = HydraConfig.get()  # wandb's staging, cache and artifacts inside the run's (or sweep's) folder
        keep_wandb_inside(hydra_cfg.sweep.dir if hydra_cfg.mode.name == "MULTIRUN" else hydra_cfg.runtime.output_dir)
        return instantiate(cfg.logger, name=f"train-{cfg.classifier.arch}", job_type="train",
                           tags=["train", cfg.classifier.arch], group=None)
    return instantiate(cfg.logger)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
def main(cfg: DictConfig) -> dict[str, Any] | None:
    """The Hydra job: one training run."""
    quiet_known_warnings()
    show_progress(cfg.trainer.get("enable_progress_bar", True))
    run_dir = HydraConfig.get().runtime.output_dir

    def discard() -> None:  # a run refused by a check leaves no folder behind (nor a sweep's, if nothing ran)
        stop = _existed.get("root") or cfg.paths.output_dir
        if discard_stub_folder(run_dir, stop) and HydraConfig.get().mode == RunMode.MULTIRUN:
            discard_stub_folder(HydraConfig.get().sweep.dir, stop, ("multirun.yaml", PROGRESS_FILE))

    try:
        with exit_on_user_error(cleanup=discard):
            return train(cfg)
    finally:
        gc.collect()  # the finished run's trainer and model sit in reference cycles: free them before a sweep's next


def run() -> None:
    """Console entry point: check the output folder takes a file, then hand the command line to Hydra."""
    main_precheck("train")  # every key (every cell of a sweep) typed and checked before anything is written
    _existed["root"] = check_output_root(sys.argv[1:])
    speed_up_hydra(hidden_groups=EVALUATE_ONLY_GROUPS)
    main()
