"""`iqa-evaluate` / `python evaluate.py`: compose the configuration, check it, build the pieces, run one cell."""

from __future__ import annotations

import gc
import logging
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from .. import profiling
from ..corruption import CLEAN, SEVERITIES, check_corruption, corruption_names
from ..errors import exit_on_user_error
from . import CONFIG_PATH
from .checks import check_output_root, check_values
from .hints import resume_command
from .hydra_patches import speed_up_hydra
from .precheck import main_precheck
from .runtime import discard_stub_folder, quiet_known_warnings, show_progress
from .schema import check_config
from .sweep import PROGRESS_FILE

# Everything that imports torch, Lightning, captum or wandb is imported inside the functions that need it, after
# the configuration has been composed and its cheap values checked: `--help`, `--cfg job`, shell completion and a
# typo answer in well under 2 s (tests/cli/test_startup.py checks that no such module is loaded on those paths).
if TYPE_CHECKING:
    from ..data.protocol import Cell, Inputs
    from ..data.selection import Selection
    from ..evaluation.settings import EvaluationModels, Explanation, GivenModels, Outputs, Speed

_existed: dict[str, Any] = {}  # the deepest output folder that existed before this command (run() sets it)
log = logging.getLogger("evaluate")

TRAIN_ONLY_GROUPS = ("recipe",)  # conf/ is shared with train.py; its own groups stay out of --help and completion
# Keys whose values shell completion lists (Hydra alone offers only the current value).
VALUE_CHOICES = {"corruption": [CLEAN, *corruption_names()], "severity": list(SEVERITIES),
                 **{key: [True, False] for key in ("pretrained", "allow_untrained_fallback", "resume")}}


def _options(node: Any) -> dict[str, Any]:
    """A config node of method options as a plain dict (an absent or empty node gives {})."""
    return dict(OmegaConf.to_container(node, resolve=True)) if node else {}


def explanation(cfg: DictConfig, given: GivenModels | None = None) -> Explanation:
    """The attribution settings, checked against the methods' constructors before any model loads (the API's
    `given` classifier's layer once it is loaded, by check_layers; its given attribution replaces the method)."""
    from ..attribution.registry import check_attribution, method_defaults
    from ..evaluation.faithfulness import Faithfulness
    from ..evaluation.settings import Explanation
    from ..evaluation.similarity import check_quality_map

    options = _options(cfg.attribution.get("options"))
    check_attribution(cfg.attribution.name, options)
    sim = cfg.similarity
    quality_saliency = sim.quality_saliency
    quality_options = _options(sim.get("quality_saliency_options"))
    if quality_saliency != "local":
        check_attribution(quality_saliency, quality_options, key="similarity.quality_saliency_options")
        if "seed" in method_defaults(quality_saliency):
            quality_options.setdefault("seed", cfg.seed)
    check_quality_map(sim.quality_map)
    if given is None or given.classifier is None:
        check_layer(str(cfg.classifier.get("arch")), options.get("layer"))
    explain = Explanation(method=cfg.attribution.name, options=options, target=cfg.attribution.target,
                          quality_saliency=quality_saliency, quality_options=quality_options,
                          quality_map=sim.quality_map,
                          faithfulness=Faithfulness(**_options(cfg.get("faithfulness"))))
    return explain if given is None or given.attribution is None else given_explanation(cfg, explain, given)


def given_explanation(cfg: DictConfig, explain: Explanation, given: GivenModels) -> Explanation:
    """The configured explanation with the caller's attribution (the API) in place of the method; the recorded
    config's attribution group then names it (given:<class or function>) and its options (attribution.given)."""
    from dataclasses import replace

    method = given.attribution
    with read_write(cfg), open_dict(cfg):
        cfg.attribution.name, cfg.attribution.options = method.name, method.options
    return replace(explain, method=method.name, options=method.options, given=method.build)


def check_layer(arch: str, layer: str | None) -> None:
    """attribution.options.layer names a module of the classifier: looked up in the architecture built without
    weights on the meta device (no memory, nothing loaded), so a typo stops the run before any model loads."""
    if layer is None:
        return
    import torch

    from ..attribution.base import resolve_layer
    from ..errors import UserError
    from ..models.classifier import build_network, wrap

    try:
        with torch.device("meta"):
            network = wrap(build_network(arch), arch)
    except UserError:
        raise
    except Exception:  # noqa: BLE001  (an architecture that cannot be built without weights: checked once loaded)
        return
    resolve_layer(network, layer)


def settings(cfg: DictConfig, run_dir: str, clean_cache_dir: str | None, processes: int,
             resume_command: str | None = None) -> tuple[Cell, Inputs, Outputs, Speed]:
    """The cell, input, output and speed settings of one run, from the configuration."""
    from ..data.loading import resolve_num_workers
    from ..data.protocol import Cell, Inputs
    from ..evaluation.settings import Outputs, Speed

    data = cfg.dataset
    cell = Cell(cfg.corruption, cfg.severity, cfg.seed)
    inputs = Inputs(resize=data.resize, crop=data.crop, corrupt_at=data.get("corrupt_at", "crop"),
                    small=data.get("small", "upscale"), max_pixels=data.get("max_pixels", Inputs.max_pixels),
                    batch_size=data.batch_size, num_workers=resolve_num_workers(data.num_workers, processes),
                    save_images=data.save_images, corruption_backend=cfg.get("corruption_backend", "numpy"))
    outputs = Outputs(run_dir=run_dir, figures=cfg.figures, save_maps=cfg.save_maps, resume=cfg.resume,
                      maps_format=cfg.get("maps_format", "npz"),
                      clean_cache_dir=clean_cache_dir, corruption_cache_dir=cfg.corruption_cache,
                      config=OmegaConf.to_container(cfg, resolve=True), resume_command=resume_command)
    return cell, inputs, outputs, Speed(channels_last=cfg.channels_last, fold_batchnorm=cfg.fold_batchnorm)


def load_models(cfg: DictConfig, selection: Selection, given: GivenModels | None = None) -> EvaluationModels:
    """PaQ-2-PiQ and the classifier (or the `given` ones), each resolved on its own: with allow_untrained_fallback,
    weights that cannot be had offline and that the user did not name become untrained ones, behind a banner naming
    each."""
    from ..data.quality_filter import scorer_id
    from ..evaluation.settings import EvaluationModels, GivenModels
    from ..models.paq2piq import PaQ2PiQWeights
    from ..models.resolution import (
        ModelWeights,
        as_given,
        classifier_request,
        load_with_fallback,
        quality_request,
    )
    from .model_reuse import reused

    quality_cfg = quality_model_config(cfg)
    given = given or GivenModels()
    allow = bool(cfg.allow_untrained_fallback)
    releases = tuple(w.value.url for w in PaQ2PiQWeights)
    if given.quality is not None:
        (quality, quality_weights), quality_resolved = given.quality, as_given("quality", given.quality[1])
    else:
        (quality, quality_weights), quality_resolved = reused(cfg, "quality", quality_cfg, lambda: load_with_fallback(
            quality_request(cfg.quality.get("checkpoint"), cfg.quality.get("pretrained", True), releases),
            lambda: instantiate(quality_cfg), lambda: instantiate(quality_cfg, pretrained=False),
            lambda loaded: loaded[1], allow))
    c = cfg.classifier
    if given.classifier is not None:
        classifier, classifier_resolved = given.classifier, as_given("classifier", given.classifier.weights)
    else:
        classifier, classifier_resolved = reused(cfg, "classifier", c, lambda: load_with_fallback(
            classifier_request(c.get("arch", ""), c.get("weights"), c.get("checkpoint"), c.get("pretrained", True)),
            lambda: instantiate(c), lambda: instantiate(c, pretrained=False, checkpoint=None),
            lambda loaded: loaded.weights, allow))
        # the cell may rename the classes (map_labels: folder order); the next cell starts from the loaded names
        classifier = replace(classifier, class_names=list(classifier.class_names), extra=dict(classifier.extra))
    weights = ModelWeights(quality_resolved, classifier_resolved)
    weights.log()
    if quality_resolved.fallback:
        full = selection.quality_score_size == "full"
        selection.quality_scorer = scorer_id(None, False, None if full else cfg.dataset.resize,
                                             None if full else cfg.dataset.crop)
    # a pyiqa metric brings its own (its score range and direction); PaQ-2-PiQ uses quality.normalization
    normalizer = getattr(quality, "score_normalizer", None) or score_normalizer(
        cfg, lambda: (quality, quality_weights), selection.quality_scorer)
    selection.normalizer = normalizer  # the quality filter's categories use it too
    return EvaluationModels(quality=quality, quality_weights=quality_weights, classifier=classifier,
                            normalizer=normalizer, weights=weights)


_banners: set[str] = set()  # the weights banners this process has shown (a sweep shows each once)


def untrained_banner(reason: str) -> None:
    """The banner saying the run goes on with untrained weights: in full once per process, then one line."""
    if reason in _banners:
        log.warning("OFFLINE: running with UNTRAINED weights, as for the cells before (see the banner above).")
        return
    _banners.add(reason)
    banner = "=" * 78
    log.warning("\n%s\nOFFLINE: %s\nRunning with UNTRAINED weights instead; every output is marked "
                "'untrained'.\n%s", banner, reason, banner)


def quality_model_config(cfg: DictConfig) -> DictConfig:
    """The quality group without quality.normalization (not an argument of the model's loader)."""
    node = OmegaConf.to_container(cfg.quality, resolve=True)
    node.pop("normalization", None)
    return OmegaConf.create(node)


def score_normalizer(cfg: DictConfig, quality: Any, scorer: str) -> Any:
    """quality.normalization as a ScoreNormalizer: study_defaults, official, or fitted on fit_dir (cached)."""
    from ..data.quality_filter import resolve_normalizer

    options = cfg.quality.get("normalization")
    return resolve_normalizer(OmegaConf.to_container(options, resolve=True) if options is not None else None,
                              quality, scorer)


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """The Hydra job's cell, in its run folder (the cells of a sweep share caches in the sweep folder)."""
    hydra_cfg = HydraConfig.get()
    sweep_dir = hydra_cfg.sweep.dir if hydra_cfg.mode == RunMode.MULTIRUN else None
    # the basic launcher runs every cell in this process: its data workers are kept for the next cell
    in_process = sweep_dir is not None and str(hydra_cfg.launcher.get("_target_", "")).endswith(".BasicLauncher")
    return evaluate_cell(cfg, hydra_cfg.runtime.output_dir, sweep_dir, resume_command=resume_command(),
                         keep_workers=in_process)


def evaluate_cell(cfg: DictConfig, run_dir: str, sweep_dir: str | None = None, source: Any = None,
                  resume_command: str | None = None, given: GivenModels | None = None,
                  keep_workers: bool = False) -> dict[str, Any]:
    """Compose the configured pieces and run one cell in `run_dir`; user errors surface before heavy work.

    `source` (an ImageSource) replaces the configured dataset and `given` the configured models: the Python API's
    images and models. `resume_command` is the command line printed to finish the run if it stops early.
    `keep_workers`: the cell's DataLoader workers stay up for the next cell of this process (a sweep's; the sweep's
    end shuts them down, see cli.sweep).
    """
    from ..io.atomic import check_writable
    from ..io.resume import check_run_folder, is_complete, launch_rank, read_summary

    check_config(cfg, "evaluate")  # every key typed (the command line checked it before Hydra; the API here)
    check_corruption(cfg.corruption, cfg.severity)
    check_values(cfg)  # seed, batch size, pinned digests
    explain = explanation(cfg, given)
    if launch_rank() == 0:  # processes a DDP launcher started share rank 0's folder
        # no overwriting; resume only with the same config
        check_run_folder(run_dir, cfg.resume, OmegaConf.to_container(cfg, resolve=True))
    if cfg.resume and is_complete(run_dir):
        log.info("%s is complete (summary.json present); resume=true skips it.", run_dir)
        return read_summary(run_dir)
    check_writable(run_dir)
    from ..data.loading import resolve_num_workers
    from ..data.selection import Selection, select_images
    from ..evaluation.cell import run_evaluation
    from ..models.classifier import read_checkpoint_meta
    from ..report.loggers import finish_logger, log_cell_summary, log_preview_table, log_run_config
    from .model_reuse import check_layers
    from .runtime import keep_wandb_inside, wandb_staging_in

    resolve_num_workers(cfg.dataset.num_workers)  # a bad value stops here, before any model is loaded
    with profiling.stage("dataset listing + selection"):
        source = instantiate(cfg.dataset.source) if source is None else source
    selection = Selection.from_options(OmegaConf.to_container(cfg.dataset, resolve=True), cfg.seed,
                                       cfg.quality.checkpoint, cfg.quality.pretrained)
    if selection.split != "all":
        selection.check_against(read_checkpoint_meta(cfg.classifier.checkpoint), cfg.classifier.checkpoint)
    if selection.quality_scores:  # every row of the study's mos.csv readable, before the models load
        from ..data.study_files import read_mos_csv

        read_mos_csv(selection.quality_scores)
    with profiling.stage("model builds + weight loads"):
        models = load_models(cfg, selection, given)
        check_layers(models, explain, cfg.dataset)  # a layer method's layer, before the run folder is marked
    with profiling.stage("dataset listing + selection"):
        source = select_images(source, selection, quality=lambda: (models.quality, models.quality_weights),
                               report_dir=run_dir, resize=cfg.dataset.resize, crop=cfg.dataset.crop)
    logger = None
    if cfg.logger and "_target_" in cfg.logger:
        if "WandbLogger" in str(cfg.logger._target_):  # wandb's cache and artifacts in the run's or sweep's folder,
            keep_wandb_inside(sweep_dir or run_dir)  # its staged table media in the cell's own (self-contained)
        group = {"group": Path(sweep_dir).name} if sweep_dir and "group" in cfg.logger else {}
        logger = instantiate(cfg.logger, **{k: v for k, v in group.items() if not cfg.logger.get(k)})
        log_run_config(logger, dashboard_config(cfg, explain, models))
    clean_cache_dir = cfg.clean_cache
    if clean_cache_dir == "auto":  # a sweep shares one clean pass between its cells
        clean_cache_dir = str(Path(sweep_dir) / ".clean_cache") if sweep_dir else None
    with profiling.stage("Trainer set-up"):
        trainer = instantiate(cfg.trainer, logger=logger if logger is not None else False,
                              callbacks=progress_callbacks(cfg))
    cell, inputs, outputs, speed = settings(cfg, run_dir, clean_cache_dir, trainer.num_devices,
                                            resume_command)
    if keep_workers:
        from ..data.loading import keep_workers as kept

        speed = replace(speed, workers=kept())
    try:
        result = run_evaluation(source, models, trainer, cell, inputs, explain, outputs, speed)
        if result.summary:
            with wandb_staging_in(run_dir):
                log_preview_table(logger, result.previews)
            log_cell_summary(logger, result.summary)
            log.info("Wrote %s (%d images, %d skipped)", run_dir, result.summary["n_images"],
                     result.summary["n_skipped"])
            if cfg.get("print_summary", True):
                from ..report.console import cell_table

                print(cell_table(run_dir, result.summary), flush=True)
    finally:
        finish_logger(logger)
    return result.summary


def progress_callbacks(cfg: DictConfig) -> list[Any]:
    """The cell's progress in images (in place of Lightning's batch bar) when trainer.enable_progress_bar is on."""
    if not cfg.trainer.get("enable_progress_bar", True):
        return []
    from ..evaluation.progress_bar import ImageProgressBar

    return [ImageProgressBar(f"{cfg.corruption} s{cfg.severity}", cfg.get("progress_interval", 30))]


def dashboard_config(cfg: DictConfig, explain: Explanation, models: EvaluationModels) -> dict[str, Any]:
    """Flat keys for grouping and filtering runs in a dashboard (the full config is in summary.json); the weights
    keys say what ran (models.resolved), not what was configured."""
    return {"corruption": cfg.corruption, "severity": int(cfg.severity), "attribution": explain.method,
            "attribution_target": explain.target, "classifier": models.classifier.arch,
            "quality_saliency": explain.quality_saliency, "quality_map": explain.quality_map,
            "precision": str(cfg.trainer.get("precision")), "seed": cfg.seed,
            "dataset": str(cfg.dataset.source.get("_target_", "")).rsplit(".", 1)[-1],
            **models.resolved.dashboard()}


def randomization_check(cfg: DictConfig) -> dict[str, Any]:
    """evaluate.py +check=randomization: the model-randomisation sanity check on the dataset's images."""
    from ..attribution.registry import check_attribution, method_defaults
    from ..evaluation.sanity import load_images, run_randomization, write_table
    from ..io.atomic import check_writable
    from ..io.provenance import provenance
    from ..io.run_writer import RunWriter
    from ..report.figures import randomization_figure

    check_config(cfg, "evaluate")
    check = cfg.check
    names = list(check.methods or [cfg.attribution.name])
    methods = {}
    for name in names:
        options = _options(cfg.attribution.get("options")) if name == cfg.attribution.name else {}
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
    randomization_figure(f"{run_dir}/randomization.png", result, check.flag_spearman)
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


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="evaluate")
def main(cfg: DictConfig) -> dict[str, Any] | None:
    """The Hydra job: one cell, or the randomisation check with +check=randomization."""
    # SIGTERM (a scheduler, `kill`) ends the run like Ctrl-C: rows on disk stay, the folder is marked INCOMPLETE.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    profiling.set_cell(f"{cfg.get('corruption')}-s{cfg.get('severity')}")
    started = time.perf_counter()
    quiet_known_warnings()
    show_progress(cfg.trainer.get("enable_progress_bar", True))
    run_dir = HydraConfig.get().runtime.output_dir

    def discard() -> None:  # a run refused by a check leaves no folder behind (nor a sweep's, if nothing ran)
        stop = _existed.get("root") or cfg.paths.output_dir
        if discard_stub_folder(run_dir, stop) and HydraConfig.get().mode == RunMode.MULTIRUN:
            discard_stub_folder(HydraConfig.get().sweep.dir, stop, ("multirun.yaml", PROGRESS_FILE))

    try:
        with exit_on_user_error(cleanup=discard):
            if cfg.get("check") is not None:
                return randomization_check(cfg)
            return evaluate(cfg)
    except KeyboardInterrupt:
        print(f"interrupted: partial results in {run_dir}; finish with: {resume_command()}", file=sys.stderr)
        sys.exit(130)
    finally:
        # The finished cell's trainer and module are held in reference cycles (Lightning's own): freed now, not
        # whenever the collector runs, so a sweep's next cell in this process does not carry them. What outlives
        # the cell (imports, the reused models) is then frozen: the next cell's collection scans only its own
        # objects (cli.model_reuse unfreezes all before it releases models).
        with profiling.stage("freeing the finished cell"):
            gc.collect()
            gc.freeze()
        profiling.add("cell", time.perf_counter() - started)
        profiling.set_cell(profiling.OUTSIDE)


def run() -> None:
    """Console entry point: check a given output folder, then hand the command line to Hydra."""
    profiling.mark("entry")  # process start + imports end here (benchmarks.profile)
    main_precheck("evaluate")  # every key (every cell of a sweep) typed and checked before anything is written
    # also a full disk or a read-only default folder, before Hydra writes there
    _existed["root"] = check_output_root(sys.argv[1:])
    speed_up_hydra(hidden_groups=TRAIN_ONLY_GROUPS, value_choices=VALUE_CHOICES)
    main()
