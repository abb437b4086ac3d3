"""Lightning pieces of an evaluation: the data module (sharded, unpadded) and the per-batch work."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from .. import profiling
from ..attribution.layer_check import explained_layer
from ..caches.clean import CLEAN_FIELDS, CleanCache
from ..caches.corruption import CachedCorruption, torch_backend_id
from ..corruption import is_clean
from ..corruption.torch_backend import corrupt_batch
from ..data.loading import BatchShards, WorkerPool, fixed_batches
from ..data.pairs import collate_pairs, crop_batch
from ..data.protocol import Cell, Inputs
from ..heap import release_free_heap
from ..io.maps import ZarrMaps
from ..io.run_writer import RunWriter
from ..io.schema import safe_name
from ..models.folding import explains_folded_output
from ..models.paq2piq import GlobalScore, ScoreNormalizer, quality_map_kind
from ..models.reuse import fold_once
from ..report.comparison import Preview, save_comparison_figure
from .attribution_checks import CHECK_MEAN_COLUMNS, AttributionChecks
from .metrics import RunMetrics
from .settings import EvaluationModels, Explanation, Inference, Outputs, Speed
from .similarity import compare_changes, compare_maps, pearson_cc, pool_to_grid, select_quality_map

# per-image columns filled only when the quality model is explained too (quality.saliency != local)
QATTR_MEAN_COLUMNS = {"sim_cc_local": "similarity/cc_local", "sim_cc_qattr": "similarity/cc_qattr"}


class PairData(pl.LightningDataModule):
    """Serves a CorruptedPairs dataset in fixed batches (data.loading.fixed_batches); the batches a process
    computes are chosen once its rank is known. `batches`: those left to do (a resumed run), default all."""

    def __init__(self, dataset: Dataset, batch_size: int = 8, num_workers: int = 2, pin_memory: bool = False,
                 batches: Sequence[Sequence[int]] | None = None, workers: WorkerPool | None = None):
        super().__init__()
        self.dataset = dataset
        self.batches = fixed_batches(len(dataset), batch_size) if batches is None else batches
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.workers = workers  # kept across a sweep's cells (data.loading.WorkerPool); None: started per cell

    def test_dataloader(self) -> Iterable[Any]:
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        shards = BatchShards(self.batches, rank, world)
        if self.workers is not None:
            kept = self.workers.loader(self.dataset, shards, self.num_workers, collate_pairs, self.pin_memory)
            if kept is not None:
                return kept
        return DataLoader(
            self.dataset,
            batch_sampler=shards,
            num_workers=self.num_workers,
            collate_fn=collate_pairs,
            pin_memory=self.pin_memory,
            persistent_workers=False,
        )

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """Keep the batch on the host: the module stacks images per size group and copies them once
        (`EvaluationModule._to_float`); the uint8 images also feed the CPU-side writing."""
        return batch


# Trimming has a price (freed pages fault in again when reused), so it is done every so many batches.
TRIM_EVERY_BATCHES = 32


def _with_explainer(model: torch.nn.Module, factory: Callable[[torch.nn.Module], Any], fold: bool
                    ) -> tuple[torch.nn.Module, Any]:
    """The model to run (BatchNorm folded when asked) in eval mode and its explainer built on it.

    A map over a folded convolution's output would take in its BatchNorm too, so then the model stays unfolded.
    """
    if fold:
        folded = fold_once(model)  # once per model a sweep reuses (models.reuse)
        explainer = factory(folded)
        if not explains_folded_output(explainer):
            return folded.eval(), explainer
    return model.eval(), factory(model)


class EvaluationModule(pl.LightningModule):
    """Runs quality model, classifier and attribution on clean + corrupted images in one pass."""

    def __init__(self, models: EvaluationModels, explain: Explanation, cell: Cell, inputs: Inputs, outputs: Outputs,
                 speed: Speed, writer: RunWriter, clean_cache: CleanCache | None = None,
                 infer: Inference | None = None) -> None:
        super().__init__()
        self.classifier_info = models.classifier
        self.classifier, self.attribution = _with_explainer(models.classifier.model, explain.classifier_factory(),
                                                            speed.fold_batchnorm)
        # explains the global score (B, 1), target 0; shares the quality model's modules, so it moves with them
        quality_attribution = explain.quality_factory()
        quality_factory = ((lambda model: quality_attribution(GlobalScore(model)))
                           if quality_attribution is not None else (lambda model: None))
        self.quality, self.quality_attribution = _with_explainer(models.quality, quality_factory,
                                                                 speed.fold_batchnorm)
        self.writer = writer
        self.explain, self.cell, self.inputs, self.outputs, self.speed = explain, cell, inputs, outputs, speed
        self.normalizer = models.normalizer
        self.mos_sign = -1.0 if getattr(models.quality, "lower_better", False) else 1.0  # drop = loss of quality
        self.weights_columns = {**models.resolved.columns(), "quality_map_kind": quality_map_kind(models.quality)}
        self.figure_mark = models.resolved.figure_mark()  # "untrained" on every figure
        self.metrics = RunMetrics({**QATTR_MEAN_COLUMNS, **CHECK_MEAN_COLUMNS})
        self.checks = AttributionChecks(self.classifier, explain.faithfulness)
        self.clean_cache = clean_cache
        self.infer = infer or self._infer
        self.previews: list[Preview] = []
        self.model_seconds = 0.0  # wall time inside the model calls (this process): the rest is host-side work
        self.corruption_seconds = 0.0  # wall time corrupting on the device (corruption_backend=torch)
        self.zarr_maps: ZarrMaps | None = None  # maps_format=zarr: this process's store
        self.corruption_cache: CachedCorruption | None = None
        # where the test loop's wall time goes (profiling): waiting for the workers, the steps, their writing
        self.step_seconds = {"waiting for data (workers: decode, corrupt)": 0.0, "step": 0.0,
                             "writing: rows, maps queued (main process)": 0.0, "figures": 0.0}
        self._last_batch_end = 0.0

    def explained_layers(self) -> dict[str, str | None]:
        """The module path each layer method explains (None: a pixel method or the local quality scores)."""
        return {"classifier": explained_layer(self.attribution),
                "quality": explained_layer(self.quality_attribution) if self.quality_attribution else None}

    def on_test_start(self) -> None:
        self.writer.rank = self.global_rank
        if self.outputs.save_maps and self.outputs.maps_format == "zarr":
            length = len(self.trainer.datamodule.dataset)
            self.zarr_maps = ZarrMaps(self.writer.run_dir, self.global_rank, length, self.inputs.batch_size)
        if self.outputs.corruption_cache_dir:  # entries of the images corrupted here (corruption_backend=torch)
            self.corruption_cache = CachedCorruption(self.outputs.corruption_cache_dir,
                                                     torch_backend_id(self.device.type))
        if self.speed.channels_last:
            self.quality.to(memory_format=torch.channels_last)
            self.classifier.to(memory_format=torch.channels_last)

    def on_test_epoch_start(self) -> None:
        self._last_batch_end = time.perf_counter()

    def on_test_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        now = time.perf_counter()
        self.step_seconds["waiting for data (workers: decode, corrupt)"] += now - self._last_batch_end
        self._last_batch_end = now

    def on_test_batch_end(self, *args: Any) -> None:
        now = time.perf_counter()
        self.step_seconds["step"] += now - self._last_batch_end
        self._last_batch_end = now

    def report_profile(self) -> None:
        """Add this run's model, corruption and test-loop times to the process's profile (iqa_saliency.profiling)."""
        profiling.add("model compute (quality, classifier, attribution)", self.model_seconds)
        profiling.add("corruption in the step (torch backend)", self.corruption_seconds)
        for name, seconds in self.step_seconds.items():
            profiling.add(name, seconds)

    def test_step(self, batch: dict[str, list[dict[str, Any]]], batch_idx: int) -> None:
        self.writer.append_skipped(
            {"index": it["index"], "image": it["image_id"], "reason": it["error"]}
            for it in batch["skipped"] if it["index"] not in self.writer.finished
        )
        for group in batch["groups"]:  # one per image size (collate_pairs)
            self._evaluate(group)
        if batch_idx % TRIM_EVERY_BATCHES == TRIM_EVERY_BATCHES - 1:
            release_free_heap()

    def _to_float(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) images on the device as floats in [0, 1]."""
        stacked = images
        if self.device.type == "cuda" and stacked.device.type == "cpu" and not stacked.is_pinned():
            stacked = stacked.pin_memory()
        stacked = stacked.to(self.device, non_blocking=True)
        fmt = torch.channels_last if self.speed.channels_last else torch.contiguous_format
        return stacked.float().div_(255.0).contiguous(memory_format=fmt)

    def _infer(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Quality scores and maps, class probabilities and attribution maps for a batch of [0,1] images."""
        with torch.no_grad():
            q_global, q_local = self.quality.split(self.quality(x).float())
        by_label = self.explain.target == "label"
        # the prediction comes from the (possibly folded) classifier; layer methods take it from their own pass
        logits, attr = self.attribution.predict_and_attribute(x, labels if by_label else None, forward=self.classifier)
        probs = logits.float().softmax(dim=1)
        return {"q_global": q_global, "q_local": q_local, "probs": probs, "attribution": attr.float().detach(),
                "logits": logits.float()}

    def _evaluate(self, group: dict[str, Any]) -> None:
        items = group["items"]
        n = len(items)
        clean_only, by_label = is_clean(self.cell.corruption, self.cell.severity), self.explain.target == "label"
        labels = torch.tensor([it["label"] for it in items], device=self.device)
        # Clean and corrupted images go through the models in separate passes of the whole group, so each image's
        # numbers depend only on its fixed batch (data.loading.fixed_batches), never on what the clean-pass cache
        # held: a model's float results change in the last digits with the batch's composition.
        clean, x_clean = self._clean_pass(group, labels)
        x_clean = self._to_float(group["clean"]) if x_clean is None else x_clean  # served by the clean cache
        corrupted = self._corrupted(group)  # uint8: from the workers (numpy), or corrupted here (torch)
        if clean_only:
            corr, x_corr = clean, x_clean
        else:
            x_corr = self._to_float(corrupted)
            with self._model_clock():
                corr = self.infer(x_corr, labels)

        mos_clean, mos = clean["q_global"], corr["q_global"]
        qmap, attr_clean, attr_corr = corr["q_local"], clean["attribution"], corr["attribution"]
        probs_c = corr["probs"]
        clean_pred, pred_c = clean["probs"].argmax(dim=1), probs_c.argmax(dim=1)
        qattr = None
        if self.quality_attribution is not None:  # the corrupted images only: that is what is compared
            with torch.enable_grad(), self._model_clock():
                qattr = self.quality_attribution.attribute(x_corr.requires_grad_(True), target=0).float().detach()
        compared = select_quality_map(self.explain.quality_map, qmap, clean["q_local"])
        sims = compare_maps(compared, attr_corr)
        nan = torch.full((n,), math.nan, device=self.device, dtype=torch.float64)
        like_with_like: dict[str, torch.Tensor] = {}  # quality model not explained: the columns stay empty
        if qattr is not None:
            grid = compared.shape[-1]
            like_with_like = {"sim_cc_local": sims["cc"],
                              "sim_cc_qattr": pearson_cc(pool_to_grid(qattr, grid), pool_to_grid(attr_corr, grid))}
        q_clean = clean["q_local"]
        stability, q_stability = pearson_cc(attr_clean, attr_corr), pearson_cc(q_clean, qmap)
        if clean_only:  # the same maps: exactly 1 (not 1 - 1e-16, whose rounding noise would correlate)
            stability, q_stability = (torch.where(torch.isnan(s), s, torch.ones_like(s))
                                      for s in (stability, q_stability))
        compared_clean = select_quality_map(self.explain.quality_map, q_clean, q_clean)
        changes = compare_changes(q_clean, qmap, attr_clean, attr_corr)
        p_clean = clean["probs"].gather(1, clean_pred[:, None])[:, 0].double()
        has_label = labels >= 0
        safe_labels = labels.clamp_min(0)
        top5 = probs_c.topk(min(5, probs_c.shape[1]), dim=1).indices
        correct1 = torch.where(has_label, (pred_c == safe_labels).double(), nan)
        correct5 = torch.where(has_label, (top5 == safe_labels[:, None]).any(dim=1).double(), nan)
        values = {
            "mos": mos.double(), "mos_clean": mos_clean.double(),
            "mos_drop": (mos_clean - mos).double() * self.mos_sign,
            "mos_normalized": self.normalizer(mos).double(),
            "pred_prob": probs_c.gather(1, pred_c[:, None])[:, 0].double(),
            "clean_pred_prob": probs_c.gather(1, clean_pred[:, None])[:, 0].double(),
            "flipped": (pred_c != clean_pred).double(),
            "correct_top1": correct1, "correct_top5": correct5,
            **{f"sim_{k}": v.double() for k, v in sims.items()},
            **{k: v.double() for k, v in like_with_like.items()},
            "attr_stability_cc": stability.double(),
            "quality_stability_cc": q_stability.double(),
            "change_cc": changes["cc"].double(), "change_spearman": changes["spearman"].double(),
            "sim_cc_clean": pearson_cc(compared_clean, pool_to_grid(attr_clean, compared_clean.shape[-1])).double(),
            "confidence_drop": p_clean - probs_c.gather(1, clean_pred[:, None])[:, 0].double(),
            "mos_normalized_clean": self.normalizer(mos_clean).double(),
        }
        with self._model_clock():
            values.update(self.checks.columns(x_clean, clean, x_corr, corr, labels if by_label else None))
        self.metrics.update(values)
        extra_maps = {"quality_map_clean": q_clean, "attribution_clean": attr_clean}
        if qattr is not None:
            extra_maps["quality_attribution"] = qattr
        started = time.perf_counter()
        self._write(items, corrupted, values, pred_c, clean_pred, qmap, attr_corr, extra_maps)
        self.step_seconds["writing: rows, maps queued (main process)"] += time.perf_counter() - started

    def _corrupted(self, group: dict[str, Any]) -> torch.Tensor:
        """The group's corrupted uint8 images: as the workers made them, or corrupted here, on the device, with
        each image's seed (corruption_backend=torch; CorruptedPairs(corrupt_fn=None)). Under full_size the decoded
        images (any sizes) are corrupted per size and then cropped as the workers crop (data.pairs.crop_batch);
        images found in the corruption cache arrive corrupted, the others' entries are written here."""
        if "corrupted" in group:
            return group["corrupted"]
        items, found, full, clean = group["items"], group["found"], group.get("full"), group["clean"]
        out = torch.empty(clean.shape, dtype=torch.uint8, device=self.device)
        by_size: dict[tuple[int, ...], list[int]] = {}
        for i, done in enumerate(found):
            if done is not None:
                out[i] = done.to(self.device)
            else:
                by_size.setdefault(tuple((full[i] if full is not None else clean[i]).shape), []).append(i)
        c, started = self.cell, time.perf_counter()
        for rows in by_size.values():
            source = torch.stack([full[i] if full is not None else clean[i] for i in rows])
            done = corrupt_batch(source.to(self.device, non_blocking=True), c.corruption, c.severity,
                                 [items[i]["seed"] for i in rows])
            if self.corruption_cache is not None:
                host = done.permute(0, 2, 3, 1).cpu().numpy()
                for j, i in enumerate(rows):
                    self.writer.submit(self.corruption_cache.store, source[j].permute(1, 2, 0).numpy(),
                                       c.corruption, c.severity, items[i]["seed"], host[j])
            out[rows] = crop_batch(done, self.inputs) if full is not None else done
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.corruption_seconds += time.perf_counter() - started
        return out

    @contextlib.contextmanager
    def _model_clock(self) -> Iterator[None]:
        """Add the wall time of the block to model_seconds (waiting for the GPU to finish it)."""
        started = time.perf_counter()
        yield
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.model_seconds += time.perf_counter() - started

    def _clean_pass(self, group: dict[str, Any], labels: torch.Tensor
                    ) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        """The clean outputs of a group and its clean images on the device (None when served by the cache).

        The cache (looked up by the DataLoader workers, CorruptedPairs(cached_clean=...)) serves a group only when
        it holds every image of it; otherwise the whole group is computed, as an uncached run does, and the new
        entries are written (by the writer's threads; the run waits for them before it ends)."""
        items = group["items"]
        cached = group.get("cached_clean") if self.clean_cache else None
        if cached is not None and bool(cached["found"].all()):
            self.clean_cache.count(len(items), len(items))
            return {k: cached[k].to(self.device, non_blocking=True) for k in CLEAN_FIELDS}, None
        x = self._to_float(group["clean"])
        with self._model_clock():
            out = self.infer(x, labels)
        if self.clean_cache is not None:
            self.clean_cache.count(0, len(items))
            host = {k: v.cpu().numpy() for k, v in out.items()}
            for i, it in enumerate(items):
                self.writer.submit(self.clean_cache.put, it["image_id"], {k: v[i] for k, v in host.items()},
                                   group["clean"][i].permute(1, 2, 0).numpy(), it.get("stamp", ""))
        return out, x

    def _write(self, items, corrupted, values, pred, clean_pred, qmap, attr, extra_maps) -> None:  # noqa: ANN001
        names = self.classifier_info.class_names
        save_maps = self.outputs.save_maps
        zarr_maps = self.zarr_maps  # opened by on_test_start only when maps are saved in zarr
        if self.inputs.save_images or items[0]["index"] < self.outputs.figures:
            corrupted = corrupted.cpu()  # corrupted on the device (torch): one copy for the PNGs and figures
        cpu = {k: v.cpu().numpy() for k, v in values.items()}
        pred, clean_pred = pred.cpu().numpy(), clean_pred.cpu().numpy()
        qmap_np, attr_np = qmap.cpu().numpy(), attr.cpu().numpy()
        extra_np = {k: v.cpu().numpy() for k, v in extra_maps.items()}
        rows = []
        if zarr_maps is not None:  # the whole batch, finished images too (same numbers), as one chunk
            zarr_maps_np = {"quality_map": qmap_np, "attribution": attr_np, **extra_np}
            self.writer.submit(zarr_maps.write, [it["index"] for it in items], zarr_maps_np)
        for i, it in enumerate(items):
            if it["index"] in self.writer.finished:  # on disk already: its batch ran again only to keep its numbers
                continue
            stem = f"{it['index']:06d}_{safe_name(it['image_id'])}"
            maps_rel = f"maps/{stem}.npz" if save_maps else ""
            if zarr_maps is not None:
                maps_rel = zarr_maps.ref(it["index"])
            elif save_maps:
                self.writer.save_maps(maps_rel, quality_map=qmap_np[i], attribution=attr_np[i],
                                      **{k: v[i] for k, v in extra_np.items()})
            label = int(it["label"])
            norm = float(cpu["mos_normalized"][i])
            row = {
                "index": it["index"], "image": it["image_id"],
                "label": label if label >= 0 else None,
                "label_name": names[label] if 0 <= label < len(names) else None,
                "corruption": self.cell.corruption, "severity": self.cell.severity,
                **{k: float(v[i]) for k, v in cpu.items()},
                "quality_category": ScoreNormalizer.category(norm),
                "quality_category_clean": ScoreNormalizer.category(float(cpu["mos_normalized_clean"][i])),
                "pred": int(pred[i]), "pred_name": names[int(pred[i])],
                "clean_pred": int(clean_pred[i]), "flipped": bool(cpu["flipped"][i]),
                "maps": maps_rel, **self.weights_columns,
            }
            rows.append(row)
            corrupted_u8 = corrupted[i].permute(1, 2, 0).numpy()
            if self.inputs.save_images:
                self.writer.save_png(f"images/{stem}.png", corrupted_u8)
            if it["index"] < self.outputs.figures:
                self._figure(stem, corrupted_u8, qmap_np[i], attr_np[i], row)
        self.writer.commit_rows(rows)  # appended once the files above are on disk

    def _figure(self, stem: str, image: np.ndarray, qmap: np.ndarray, attr: np.ndarray, row: dict) -> None:
        started = time.perf_counter()
        self._draw_figure(stem, image, qmap, attr, row)
        seconds = time.perf_counter() - started
        self.step_seconds["figures"] += seconds
        self.step_seconds["writing: rows, maps queued (main process)"] -= seconds  # _write's time holds it

    def _draw_figure(self, stem: str, image: np.ndarray, qmap: np.ndarray, attr: np.ndarray, row: dict) -> None:
        c, quality_map = self.cell, self.explain.quality_map
        cell = "clean" if is_clean(c.corruption, c.severity) else f"{c.corruption} s{c.severity}"
        cc = "CC" if quality_map == "raw" else f"CC ({quality_map})"
        titles = (
            f"{row['image']} · {cell}",
            f"MOS {row['mos']:.1f} ({row['quality_category']}) · clean {row['mos_clean']:.1f}",
            f"{self.explain.method}: {row['pred_name']} {row['pred_prob']:.2f} · {cc} {row['sim_cc']:.2f}",
        )
        # drawn by a writer thread while the models go on; the row is committed once its figure is on disk too
        self.writer.submit(save_comparison_figure, self.writer.run_dir / "figures" / f"{stem}.png", image, qmap,
                           attr, titles, self.figure_mark)
        self.previews.append(Preview(row, image, qmap, attr))

    def on_test_epoch_end(self) -> None:
        # what the loggers (wandb) receive; summary.json is made from the merged rows (evaluation.cell)
        loggable = {k: v for k, v in self.metrics.compute().items() if not math.isnan(v)}
        if loggable:
            self.log_dict(loggable, rank_zero_only=True)
