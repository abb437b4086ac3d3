"""One evaluation cell, end to end: checks first, then the Lightning pass, then the run folder's files."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from .. import profiling
from ..caches.clean import CleanCache
from ..caches.corruption import CachedCorruption, torch_backend_id
from ..corruption import apply_corruption
from ..corruption.backends import BackendChoice, choose_backend
from ..data.loading import fixed_batches
from ..data.pairs import CorruptedPairs
from ..data.protocol import Cell, Inputs
from ..data.sources import NO_LABEL, ImageSource
from ..errors import ConfigError, DatasetError, InputError, OutputError, find_in_chain
from ..heap import reuse_freed_heap
from ..io.lock import RunLock
from ..io.maps import check_maps_format
from ..io.provenance import provenance
from ..io.resume import DATASET_FILE, launch_rank, start_run
from ..io.run_writer import RunWriter
from ..io.schema import INCOMPLETE, PER_IMAGE, SKIPPED, SUMMARY
from ..models.classifier import FOLDER_ORDER, Classifier
from ..models.paq2piq import quality_map_kind
from .metrics import summarize_rows
from .module import EvaluationModule, PairData, Preview
from .settings import EvaluationModels, Explanation, Inference, Outputs, Speed

log = logging.getLogger(__name__)


@dataclass
class EvaluationResult:
    """The summary written to summary.json (empty on non-zero ranks) and the figure previews."""

    summary: dict[str, Any]
    previews: list[Preview] = field(default_factory=list)


def _canonical(name: str) -> str:
    return name.strip().lower().replace("_", " ").replace("-", " ")


def map_labels(source: ImageSource, classifier: Classifier) -> tuple[list[int], str]:
    """Source labels as classifier class indices, and how they were matched.

    Raises DatasetError when the classifier was trained on named classes that the dataset lacks.
    """
    raw = [r.label for r in source.records]
    if source.imagenet_labels:
        if classifier.imagenet_classes:
            outside = sorted({lbl for lbl in raw if lbl != NO_LABEL and not 0 <= lbl < classifier.num_classes})
            if outside:  # never counted as wrong predictions
                raise InputError(f"Labels {outside[:5]} are not classes of the classifier (0-"
                                 f"{classifier.num_classes - 1}). Pass its class indices, or -1 for no label.")
            return raw, "imagenet"
        log.warning("The sample labels are ImageNet classes but the classifier is not; accuracy is left blank.")
        return [NO_LABEL] * len(raw), "none"
    if not source.class_names:
        return raw, "none"
    if classifier.extra.get("label_order") == FOLDER_ORDER:  # e.g. the study's checkpoints: ImageFolder numbering
        if len(source.class_names) != classifier.num_classes:
            raise DatasetError(
                f"The classifier has {classifier.num_classes} classes but the dataset has {len(source.class_names)} "
                "class folders. Evaluate the checkpoint on the dataset it was trained on."
            )
        classifier.class_names = list(source.class_names)  # class i is the i-th folder in sorted order
        return raw, "folder order"
    trained_on = classifier.extra.get("class_names")
    if trained_on:
        if list(source.class_names) != list(trained_on):
            missing = sorted(set(trained_on) - set(source.class_names))
            extra = sorted(set(source.class_names) - set(trained_on))
            raise DatasetError(
                f"The dataset's classes do not match the checkpoint's ({len(source.class_names)} vs "
                f"{len(trained_on)}; missing {missing[:5]}, unexpected {extra[:5]}). Evaluate the checkpoint "
                "on a dataset with the classes it was trained on."
            )
        return raw, "checkpoint"
    if not classifier.imagenet_classes and len(source.class_names) != classifier.num_classes:
        raise DatasetError(
            f"The classifier has {classifier.num_classes} classes but the dataset has {len(source.class_names)} "
            "class folders. Evaluate the checkpoint on a dataset with the classes it was trained on."
        )
    lookup = {_canonical(n): i for i, n in enumerate(classifier.class_names)}
    mapping = {i: lookup.get(_canonical(n)) for i, n in enumerate(source.class_names)}
    unmatched = [source.class_names[i] for i, j in mapping.items() if j is None]
    if unmatched:
        log.warning("Folder classes %s are not classifier classes; their images are evaluated without labels.",
                    unmatched[:10])
    return [NO_LABEL if mapping.get(lbl) is None else mapping[lbl] for lbl in raw], "class names"


def check_target(target: str, labels: list[int]) -> None:
    """attribution.target=label needs every image labelled."""
    if target not in ("pred", "label"):
        raise ConfigError(f"attribution.target={target!r} is not valid. Use attribution.target=pred or label.")
    if target == "label" and any(lbl == NO_LABEL for lbl in labels):
        raise ConfigError("attribution.target=label needs a label for every image, and some have none. "
                          "Use attribution.target=pred, or a dataset with class folders.")


def _clean_cache(models: EvaluationModels, cell: Cell, inputs: Inputs, explain: Explanation, labels: list[int],
                 folder: str | Path | None, source: ImageSource | None = None,
                 numerics: dict[str, Any] | None = None) -> CleanCache | None:
    """The clean-pass cache, keyed by everything that changes the clean outputs, the numerics included
    (`numerics`: device type, precision, memory format, BatchNorm folding and batch size all change the models'
    float results)."""
    if folder is None:
        return None
    return CleanCache(folder, {
        "quality": models.quality_weights.as_dict(), "classifier": models.classifier.weights.as_dict(),
        "arch": models.classifier.arch, "attribution": explain.method, "options": explain.options,
        "target": explain.target, "resize": inputs.resize, "crop": inputs.crop, "seed": cell.seed,
        "labels": labels if explain.target == "label" else None,
        # the clean image also depends on these (the corruption order does not change it); keys of the default
        # settings are left out, so caches written before they existed stay valid
        **({"small": inputs.small} if inputs.small != "upscale" else {}),
        **({"decode": _decode(source)} if _decode(source) not in (None, "oriented") else {}),
        "corrupt_at": inputs.corrupt_at, **(numerics or {}),
    })


def _numerics(trainer: pl.Trainer, speed: Speed, inputs: Inputs) -> dict[str, Any]:
    """What changes the models' numbers besides weights and inputs (the clean cache's key, compared on resume)."""
    return {"device": trainer.strategy.root_device.type, "precision": str(trainer.precision),
            "channels_last": speed.channels_last, "fold_batchnorm": speed.fold_batchnorm,
            "batch_size": inputs.batch_size}


def _output_error(exc: BaseException, run_dir: Path, hint: str | None = None) -> OutputError | None:
    """A full or read-only disk as one line (the rows on disk are kept)."""
    found = find_in_chain(exc, OSError)  # a chain can loop (an exception in its own context): walk it once
    if found is None or found.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
        return None
    return OutputError(f"Cannot write {found.filename or run_dir} ({found.strerror}); the rows computed so far are "
                       f"kept. Free space, then finish with: {hint or f'resume=true hydra.run.dir={run_dir}'}")


def _decode(source: ImageSource) -> str | None:
    """How the source decodes files (dataset.decode), looking through subsets."""
    while hasattr(source, "base") and not hasattr(source, "decode"):
        source = source.base
    return getattr(source, "decode", None)


def _pairs(source: ImageSource, cell: Cell, inputs: Inputs, labels: list[int], outputs: Outputs,
           backend: BackendChoice, device_type: str, cached_clean: Any) -> CorruptedPairs:
    """The dataset: corrupting in its workers (numpy), or leaving the corruption to the evaluation step (torch;
    the workers then only decode, resize and crop, and look the corruption cache up)."""
    cache_dir = outputs.corruption_cache_dir
    if backend.used == "torch":
        lookup = CachedCorruption(cache_dir, torch_backend_id(device_type)).lookup if cache_dir else None
        return CorruptedPairs(source, cell, inputs, labels, corrupt_fn=None, cached_clean=cached_clean,
                              corrupt_lookup=lookup)
    corrupt_fn = CachedCorruption(cache_dir) if cache_dir else apply_corruption
    return CorruptedPairs(source, cell, inputs, labels, corrupt_fn=corrupt_fn, cached_clean=cached_clean)


def run_evaluation(source: ImageSource, models: EvaluationModels, trainer: pl.Trainer, cell: Cell, inputs: Inputs,
                   explain: Explanation, outputs: Outputs, speed: Speed | None = None, infer: Inference | None = None
                   ) -> EvaluationResult:
    """Evaluate one (corruption, severity) cell and write the run folder (summary.json last).

    outputs.resume finishes an interrupted run in outputs.run_dir: images already on disk are not computed again.
    `infer` replaces the model calls (the benchmark's host-side bound); None runs the models.
    """
    reuse_freed_heap()
    # the process that launched the run holds the folder's lock (DDP ranks it starts work under it)
    lock = RunLock(outputs.run_dir).acquire() if launch_rank() == 0 else None
    try:
        return _run_locked(source, models, trainer, cell, inputs, explain, outputs, speed or Speed(), infer)
    except Exception as exc:
        if lock is not None and isinstance(find_in_chain(exc, ConfigError), ConfigError):
            _leave_no_run(Path(outputs.run_dir))
        raise
    finally:
        if lock is not None:
            lock.release()


def _leave_no_run(run_dir: Path) -> None:
    """After a configuration error: a folder in which nothing was computed is not left marked as a run to resume,
    so the corrected command runs there (rows computed earlier keep the marker and their resume)."""
    writer = RunWriter(run_dir)
    if (run_dir / SUMMARY).exists() or writer.read_rows(PER_IMAGE) or writer.read_rows(SKIPPED):
        return
    for path in [run_dir / INCOMPLETE, run_dir / DATASET_FILE, *writer.parts(PER_IMAGE), *writer.parts(SKIPPED)]:
        path.unlink(missing_ok=True)


def _run_locked(source: ImageSource, models: EvaluationModels, trainer: pl.Trainer, cell: Cell, inputs: Inputs,
                explain: Explanation, outputs: Outputs, speed: Speed, infer: Inference | None) -> EvaluationResult:
    started = time.time()
    set_up = time.perf_counter()
    run_dir, config = Path(outputs.run_dir), outputs.config
    if outputs.resume and (run_dir / SUMMARY).exists():
        log.info("%s already holds a complete run; nothing to do.", run_dir)
        return EvaluationResult(json.loads((run_dir / SUMMARY).read_text()) if launch_rank() == 0 else {})
    classifier = models.classifier
    labels, label_source = map_labels(source, classifier)
    check_target(explain.target, labels)
    writer = RunWriter(run_dir, background_writes=4)
    numerics = _numerics(trainer, speed, inputs)
    identity = {"weights": {"quality": models.quality_weights.as_dict(), "classifier": classifier.weights.as_dict()},
                **numerics}
    todo = start_run(writer, [r.image_id for r in source.records], outputs.resume, config,
                     stamps=[source.stamp(r) for r in source.records], identity=identity)
    clean_cache = _clean_cache(models, cell, inputs, explain, labels, outputs.clean_cache_dir, source, numerics)
    device_type = trainer.strategy.root_device.type
    backend = choose_backend(inputs.corruption_backend, cell.corruption, cell.severity, device_type)
    check_maps_format(outputs.maps_format, inputs.crop)
    dataset = _pairs(source, cell, inputs, labels, outputs, backend, device_type,
                     clean_cache.read if clean_cache else None)
    module = EvaluationModule(models, explain, cell, inputs, outputs, speed, writer, clean_cache=clean_cache,
                              infer=infer)
    # a batch with any image left is computed whole, so the resumed images see the batch they would have seen
    left = set(todo)
    batches = [b for b in fixed_batches(len(dataset), inputs.batch_size) if left.intersection(b)]
    workers = speed.workers if trainer.world_size == 1 else None  # DDP ranks start their own per cell
    data = PairData(dataset, batch_size=inputs.batch_size, num_workers=inputs.num_workers,
                    pin_memory=trainer.accelerator.__class__.__name__ != "CPUAccelerator", batches=batches,
                    workers=workers)
    pl.seed_everything(cell.seed, workers=True, verbose=False)
    profiling.add("run start: labels, run folder, caches, module", time.perf_counter() - set_up)
    try:
        with profiling.stage("Lightning test loop"):
            if todo:
                trainer.test(module, datamodule=data, verbose=False)
        with profiling.stage("waiting for background writes"):
            writer.wait()
        trainer.strategy.barrier()
    except BaseException as exc:  # Ctrl-C, SIGTERM (see cli.evaluate) or an error: keep what was computed
        if workers is not None:
            workers.close()  # stopped mid-epoch: not reused, and no worker outlives an interrupted sweep
        with contextlib.suppress(Exception):
            writer.wait()  # rows whose files are all on disk are committed; the rest is redone on resume
        if launch_rank() == 0:
            interrupted = isinstance(exc, (KeyboardInterrupt, SystemExit))
            with contextlib.suppress(OSError):  # a full disk: the marker written at the start says the same
                writer.write_status("interrupted" if interrupted else "failed",
                                    reason=f"{type(exc).__name__}: {exc}",
                                    rows_on_disk=len(writer.read_rows("per_image.csv")), config=config or {})
            log.error("Run %s: partial results are kept in %s. Finish it with: %s",
                      "interrupted" if interrupted else "failed", run_dir, outputs.finish_hint())
        output_error = _output_error(exc, run_dir, outputs.finish_hint())
        if output_error is not None:
            raise output_error from None
        raise
    finally:
        writer.close()  # its threads would otherwise outlive the run: 4 more per cell in a sweep's process
    module.report_profile()
    if not trainer.is_global_zero:
        return EvaluationResult({}, [])
    world = trainer.world_size
    with profiling.stage("merge rows + summary"):
        rows, skipped = writer.merge(world)
    for row in skipped:
        log.warning("Skipped %s: %s", row["image"], row["reason"])
    if not rows:
        writer.write_status("failed", reason="no usable image", config=config or {})
        raise DatasetError(
            f"No image of the {len(dataset)} in the dataset could be used (see {run_dir}/skipped.csv). "
            "Check the dataset's files."
        )
    summary: dict[str, Any] = {
        "corruption": cell.corruption,
        "severity": cell.severity,
        "seed": cell.seed,
        "attribution": explain.method,
        "attribution_target": explain.target,
        "quality_saliency": explain.quality_saliency,
        "quality_map": explain.quality_map,
        "n_images": len(rows),
        "n_skipped": len(skipped),
        "label_source": label_source,
        # from the merged rows, so a resumed or multi-process run summarises exactly like a single one
        "metrics": {k: (None if isinstance(v, float) and math.isnan(v) else v)
                    for k, v in summarize_rows(rows, module.metrics.mean_columns).items()},
        "weights": models.resolved.summary(),  # requested and resolved, per model; "untrained" if any ran so
        "explained_layer": module.explained_layers(),  # layer methods: the module path each map explains
        "classifier": {"arch": classifier.arch, "num_classes": classifier.num_classes},
        "corruption_backend": backend.as_dict(),  # requested, what really ran (and why), imagecorruptions
        "score_normalizer": asdict(models.normalizer),
        "quality_map_kind": quality_map_kind(models.quality),
        "quality_lower_better": bool(getattr(models.quality, "lower_better", False)),
        "clean_cache": clean_cache.stats() if clean_cache else None,
        "world_size": world,
        "resumed": len(todo) < len(dataset),
        "device": str(module.device),
        "seconds": round(time.time() - started, 3),
        "model_seconds": round(module.model_seconds, 3),  # inside the model calls, process 0
        "corruption_seconds": round(module.corruption_seconds, 3),  # corrupting in the step (torch), process 0
        "provenance": provenance(),
        "config": config or {},
    }
    with profiling.stage("merge rows + summary"):
        writer.write_summary(summary)
        writer.remove_parts(world)
    return EvaluationResult(summary, module.previews)
