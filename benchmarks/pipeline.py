"""Throughput benchmark: the per-image baseline loop, the pipeline end to end, and its parts, on the same images.

    python -m iqa_saliency.bench --images 64 --batch-size 16            # CPU, motion_blur s2, Grad-CAM, 224 px
    python -m iqa_saliency.bench --device cuda --images 4096 --batch-size 256 --warm-cache
    python -m iqa_saliency.bench --scaling --scaling-images 100,1000,5000 --scaling-sizes 224,512,1024
    python -m benchmarks.pipeline --compare-backends --corruption zoom_blur --images 32 --repeats 2
    python -m benchmarks.pipeline --memory-trace --images 1600 --workers 2   # peak RSS by quarter of one run

Weights are untrained (timing does not depend on their values). Prints a markdown table; --out writes JSON.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from iqa_saliency.attribution.registry import build_attribution
from iqa_saliency.corruption import apply_corruption, image_seed
from iqa_saliency.data.images import prepare_image
from iqa_saliency.data.pairs import CorruptedPairs, collate_pairs
from iqa_saliency.data.protocol import Cell, Inputs
from iqa_saliency.data.sources import SAMPLE_IMAGES, ImageRecord, ImageSource, SampleImages
from iqa_saliency.evaluation.similarity import compare_maps, pearson_cc
from iqa_saliency.heap import reuse_freed_heap
from iqa_saliency.io.run_writer import RunWriter
from iqa_saliency.models.classifier import load_classifier
from iqa_saliency.models.folding import fold_batchnorm
from iqa_saliency.models.paq2piq import load_paq2piq


class CycledSamples(ImageSource):
    """`n` images cycling through the bundled samples, each with its own id (so its own corruption seed)."""

    imagenet_labels = True

    def __init__(self, n: int) -> None:
        base = SampleImages()
        self._base = {r.image_id: r for r in base.records}
        names = list(SAMPLE_IMAGES)
        self.records = [ImageRecord(f"{names[k % len(names)]}#{k}", self._base[names[k % len(names)]].label)
                        for k in range(n)]
        self._loader = base

    def _sample(self, record: ImageRecord) -> ImageRecord:
        return self._base[record.image_id.split("#")[0]]

    def load(self, record: ImageRecord) -> Image.Image:
        return self._loader.load(self._sample(record))

    def stamp(self, record: ImageRecord) -> str:
        return self._loader.stamp(self._sample(record))


@dataclass
class Timing:
    name: str
    images: int
    seconds: float
    model_seconds: float | None = None  # pipeline runs: the part spent inside the model calls

    @property
    def rate(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("nan")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(name: str, images: int, fn: Callable[[], Any], device: torch.device) -> Timing:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return Timing(name, images, time.perf_counter() - start)


class Models:
    """The three models of an evaluation, on one device."""

    def __init__(self, device: torch.device, method: str, channels_last: bool = False, plain: bool = False) -> None:
        self.device = device
        self.quality = load_paq2piq(pretrained=False)[0].to(device)
        self.classifier = load_classifier(pretrained=False)
        self.clf = self.classifier.model.to(device)
        if plain:  # the study's PaQ-2-PiQ: torchvision roi_pool over all 401 boxes, each box scored
            self.quality.fast_pool, self.quality.share_scores = False, False
        else:  # as the pipeline runs them (fold_batchnorm=true)
            self.quality, self.clf = fold_batchnorm(self.quality), fold_batchnorm(self.clf)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if channels_last:
            self.quality.to(memory_format=torch.channels_last)
            self.clf.to(memory_format=torch.channels_last)
        self.attribution = build_attribution(method, self.clf)
        # the study's saliency_maps.py: pytorch-grad-cam's GradCAM on layer4[-1], whose call runs the model, takes
        # the predicted class and back-propagates through the whole network (loss.backward(), every weight's
        # gradient), then scales the map on the host; captum's layer gradient stops at the explained layer
        self.study_cam = _study_grad_cam(self.clf, self.attribution.layer) if plain and method == "gradcam" else None

    def run(self, x: torch.Tensor) -> None:
        """The pipeline's model work for a float batch in [0, 1]: quality, then prediction + attribution."""
        x = x.contiguous(memory_format=self.memory_format)
        with torch.no_grad():
            self.quality(x)
        self.attribution.predict_and_attribute(x)

    def run_plain(self, x: torch.Tensor) -> None:
        """The original study's model work: quality, classifier, then the attribution's own forward pass."""
        with torch.no_grad():
            self.quality(x)
        self.run_plain_classifier(x)

    def close(self) -> None:
        """Remove pytorch-grad-cam's hooks now (its __del__ at interpreter exit fails once torch is torn down)."""
        if self.study_cam is not None:
            self.study_cam.activations_and_grads.release()

    def run_plain_classifier(self, x: torch.Tensor) -> None:
        with torch.no_grad():
            pred = self.clf(x).argmax(dim=1)
        if self.study_cam is not None:
            self.study_cam(x, targets=None)  # None: the predicted class, as the study called it
            return
        with torch.enable_grad():
            self.attribution.attribute(x.requires_grad_(True), target=pred)


def _study_grad_cam(model: torch.nn.Module, layer: torch.nn.Module) -> Any:
    """pytorch-grad-cam's GradCAM on the layer the project's Grad-CAM explains (the study's `layer4[-1]`)."""
    try:
        from pytorch_grad_cam import GradCAM
    except ModuleNotFoundError:
        raise SystemExit("the study's loop runs pytorch-grad-cam, as the study did: pip install -e '.[dev]'") from None
    return GradCAM(model=model, target_layers=[layer])


def baseline_loop(models: Models, source: ImageSource, n: int, corruption: str, severity: int, size: int,
                  seed: int = 0) -> None:
    """The original study's per-cell loop: image by image, batch 1, corrupt then quality model, classifier and
    attribution on the corrupted image, models loaded once (the clean images were a run of their own)."""
    for record in source.records[:n]:
        clean = np.array(prepare_image(source.load(record), None if size != 224 else 256, size), dtype=np.uint8)
        corrupted = apply_corruption(clean, corruption, severity, image_seed(seed, record.image_id, corruption,
                                                                              severity))
        x = torch.from_numpy(corrupted).permute(2, 0, 1)[None].float().div(255).to(models.device)
        models.run_plain(x)


def load_pairs(dataset: CorruptedPairs, batch_size: int, workers: int) -> list[dict[str, Any]]:
    """Every batch of the dataset through the DataLoader worker pool (this is the corruption stage)."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers,
                                         collate_fn=collate_pairs)
    return list(loader)


def _stack(batch: dict[str, Any], device: torch.device, keys: tuple[str, ...] = ("clean", "corrupted")
           ) -> tuple[torch.Tensor, int]:
    groups = batch["groups"]
    x = torch.cat([g[key] for key in keys for g in groups])
    return x.to(device, non_blocking=True).float().div_(255), sum(len(g["items"]) for g in groups)


def bench_parts(models: Models, batches: list[dict[str, Any]], device: torch.device, n: int) -> list[Timing]:
    """Quality model, classifier + attribution, similarity + writing, and all models together (no I/O)."""
    tensors = [_stack(b, device) for b in batches]
    corrupted_only = [_stack(b, device, ("corrupted",))[0] for b in batches]
    timings = []

    def quality() -> None:
        with torch.no_grad():
            for x, _ in tensors:
                models.quality(x.contiguous(memory_format=models.memory_format))

    def classify_and_attribute() -> None:
        for x, _ in tensors:
            x = x.contiguous(memory_format=models.memory_format)
            models.attribution.predict_and_attribute(x)

    def models_only() -> None:
        for x, _ in tensors:
            models.run(x)

    def models_only_corrupted() -> None:
        for x in corrupted_only:
            models.run(x)

    timings.append(timed("quality model (PaQ-2-PiQ), clean + corrupted", n, quality, device))
    timings.append(timed(f"classifier + {models.attribution.name}, clean + corrupted", n, classify_and_attribute,
                         device))
    timings.append(timed("models only, clean + corrupted (no I/O)", n, models_only, device))
    timings.append(timed("models only, corrupted (no I/O; clean pass cached)", n, models_only_corrupted, device))

    out = Path(tempfile.mkdtemp(prefix="iqa-bench-write-"))
    try:
        writer = RunWriter(out)
        grid = torch.rand(2 * tensors[0][1], 20, 20, device=device)
        attr = torch.rand(2 * tensors[0][1], *tensors[0][0].shape[-2:], device=device)

        def similarity_and_writing() -> None:
            for batch, (_, m) in zip(batches, tensors, strict=True):
                q, a = grid[:m], attr[:m]
                sims = compare_maps(q, a)
                pearson_cc(a, attr[m:2 * m])
                sims = {k: v.cpu().numpy() for k, v in sims.items()}
                q_np, a_np = q.cpu().numpy(), a.cpu().numpy()
                rows = []
                for i, it in enumerate(it for g in batch["groups"] for it in g["items"]):
                    writer.save_maps(f"maps/{it['index']:06d}.npz", quality_map=q_np[i], attribution=a_np[i])
                    rows.append({"index": it["index"], "image": it["image_id"],
                                 **{f"sim_{k}": float(v[i]) for k, v in sims.items()}})
                writer.append_rows(rows)

        timings.append(timed("similarity + writing", n, similarity_and_writing, device))
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return timings


def fixed_outputs(grid: int, num_classes: int) -> Callable[[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]:
    """A stand-in for the model calls: outputs of the right shapes and kinds, without running a model."""

    def infer(x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        batch, _, height, width = x.shape
        g = torch.Generator(device=x.device).manual_seed(batch)
        logits = torch.rand(batch, num_classes, generator=g, device=x.device)
        return {"q_global": torch.rand(batch, generator=g, device=x.device),
                "q_local": torch.rand(batch, grid, grid, generator=g, device=x.device),
                "probs": logits.softmax(1), "logits": logits,
                "attribution": torch.rand(batch, height, width, generator=g, device=x.device)}

    return infer


def pipeline_run(n: int, corruption: str, severity: int, method: str, size: int, batch_size: int, workers: int,
                 accelerator: str, precision: str, corruption_cache: str | None, channels_last: bool,
                 clean_cache: str | None = None, host_only: bool = False, corruption_backend: str = "numpy",
                 callbacks: list[Any] | None = None) -> Timing:
    """The project's pipeline (run_evaluation with a Lightning Trainer), end to end into a temporary folder.

    host_only: the model calls return fixed outputs instead (everything else runs): the host side's own bound.
    """
    import pytorch_lightning as pl

    from iqa_saliency.evaluation.cell import run_evaluation
    from iqa_saliency.evaluation.settings import EvaluationModels, Explanation, Outputs, Speed

    source = CycledSamples(n)
    quality, quality_weights = load_paq2piq(pretrained=False)
    models = EvaluationModels(quality, quality_weights, load_classifier(pretrained=False))
    out = Path(tempfile.mkdtemp(prefix="iqa-bench-run-"))
    try:
        trainer = pl.Trainer(accelerator=accelerator, devices=1, precision=precision, logger=False,
                             inference_mode=False, use_distributed_sampler=False, enable_checkpointing=False,
                             enable_model_summary=False, enable_progress_bar=False, callbacks=callbacks)
        infer = fixed_outputs(quality.grid, models.classifier.num_classes) if host_only else None
        start = time.perf_counter()
        result = run_evaluation(
            source, models, trainer, Cell(corruption, severity, seed=0),
            Inputs(resize=256 if size == 224 else None, crop=size, batch_size=batch_size, num_workers=workers,
                   corruption_backend=corruption_backend),
            Explanation(method), Outputs(out, figures=0, clean_cache_dir=clean_cache,
                                         corruption_cache_dir=corruption_cache),
            Speed(channels_last=channels_last), infer=infer)
        seconds = time.perf_counter() - start
    finally:
        shutil.rmtree(out, ignore_errors=True)
    used = result.summary["corruption_backend"]["used"]
    name = "pipeline end to end" + (f" (corruption: {used})" if corruption_backend != "numpy" else "")
    return Timing(name, n, seconds, result.summary["model_seconds"])


def compare_backends(args: argparse.Namespace) -> dict[str, Any]:
    """One cell end to end with corruption_backend=numpy (in the workers) and torch (in the step), same images:
    each the best of --repeats runs, alternating, so load on a shared machine hits both alike."""
    device, accelerator, workers, precision = _execution(args)
    best: dict[str, Timing] = {}
    for _ in range(args.repeats):
        for backend in ("numpy", "torch"):
            t = pipeline_run(args.images, args.corruption, args.severity, args.method, args.size, args.batch_size,
                             workers, accelerator, precision, None, args.channels_last, corruption_backend=backend)
            print(f"  {backend}: {t.seconds:.2f} s, {t.rate:.2f} img/s (models {t.model_seconds:.2f} s)", flush=True)
            if backend not in best or t.seconds < best[backend].seconds:
                best[backend] = t
    rows = [{"backend": b, "used": t.name, "images": t.images, "seconds": round(t.seconds, 2),
             "images_per_s": round(t.rate, 2), "model_seconds": round(t.model_seconds, 2)} for b, t in best.items()]
    print(f"\n{args.corruption} s{args.severity}, {args.images} images, {args.size} px, batch {args.batch_size}, "
          f"{workers} workers, best of {args.repeats}\n")
    print("| corruption_backend | seconds | img/s | in the models (s) |\n| --- | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['backend']} | {r['seconds']} | {r['images_per_s']} | {r['model_seconds']} |")
    print(f"\ntorch / numpy: {best['numpy'].seconds / best['torch'].seconds:.2f}x")
    return {"config": vars(args), "machine": machine(device), "backends": rows}


class RssSampler:
    """Peak resident memory of this process while the block runs (Linux /proc; sampled every 0.2 s)."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.peak_mib = float("nan")
        self._stop = threading.Event()

    @staticmethod
    def current_mib() -> float:
        try:
            with open("/proc/self/statm") as fh:
                return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
        except (OSError, ValueError):
            return float("nan")

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_mib = max(self.peak_mib, self.current_mib())

    def __enter__(self) -> RssSampler:
        self.peak_mib = self.current_mib()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mib = round(max(self.peak_mib, self.current_mib()), 1)


def memory_trace(args: argparse.Namespace) -> dict[str, Any]:
    """One run in this fresh process: the peak RSS of each quarter of its batches and its trend in MB per image,
    so memory held per image (a leak or a fragmenting heap) shows as a rise from quarter to quarter."""
    import pytorch_lightning as pl

    device, accelerator, workers, precision = _execution(args)
    peaks: list[float] = []
    window = {"peak": 0.0}
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.02):
            window["peak"] = max(window["peak"], RssSampler.current_mib())

    class EachBatch(pl.Callback):
        def on_test_batch_end(self, *_: Any) -> None:
            peaks.append(max(window["peak"], RssSampler.current_mib()))
            window["peak"] = 0.0

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        t = pipeline_run(args.images, args.corruption, args.severity, args.method, args.size, args.batch_size,
                         workers, accelerator, precision, None, args.channels_last, host_only=args.host_only,
                         callbacks=[EachBatch()])
    finally:
        stop.set()
        thread.join()
    q = max(1, len(peaks) // 4)
    quarters = [round(max(peaks[i * q:(i + 1) * q]), 1) for i in range(min(4, len(peaks)))]
    slope = float(np.polyfit(np.arange(len(peaks)) * args.batch_size, peaks, 1)[0]) if len(peaks) > 1 else 0.0
    print(f"machine: {machine(device)}\n  {args.images} images @{args.size}, batch {args.batch_size}, {workers} "
          f"workers{' (host only)' if args.host_only else ''}: {t.seconds:.1f} s; peak RSS by quarter of the "
          f"batches {quarters} MiB; trend of the per-batch peaks {slope:+.4f} MB per image", flush=True)
    return {"config": vars(args), "machine": machine(device), "seconds": round(t.seconds, 2),
            "batch_peak_rss_mib": [round(v, 1) for v in peaks], "quarter_peak_rss_mib": quarters,
            "mb_per_image": round(slope, 5)}


def peak_memory(device: torch.device) -> dict[str, float]:
    """Peak resident memory of this process and its (finished) children, and GPU memory, in MiB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    out = {"rss_mib": round(own, 1), "children_rss_mib": round(children, 1)}
    if device.type == "cuda":
        out["gpu_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return out


def machine(device: torch.device) -> dict[str, Any]:
    info = {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "device": str(device)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _execution(args: argparse.Namespace) -> tuple[torch.device, str, int, str]:
    """Device, Lightning accelerator, DataLoader workers and Lightning precision from the command line."""
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    workers = args.workers if args.workers >= 0 else min(os.cpu_count() or 1, 16)
    return device, "gpu" if device.type == "cuda" else "cpu", workers, "bf16-mixed" if args.bf16 else "32-true"


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    device, accelerator, workers, precision = _execution(args)
    models = Models(device, args.method, channels_last=args.channels_last)
    source = CycledSamples(args.images)
    results: dict[str, Any] = {"config": vars(args), "machine": machine(device), "timings": []}

    def add(t: Timing) -> Timing:
        row = {"name": t.name, "images": t.images, "seconds": round(t.seconds, 4), "images_per_s": round(t.rate, 2)}
        note = ""
        if t.model_seconds is not None:
            # everything but the model calls: start-up, waiting for workers, copies, metrics, rows, writing
            row["model_seconds"] = t.model_seconds
            row["host_ms_per_image"] = round((t.seconds - t.model_seconds) / t.images * 1000, 2)
            note = f"  (in models {t.model_seconds / t.seconds:.0%}; rest {row['host_ms_per_image']} ms/img)"
        results["timings"].append(row)
        print(f"  {t.name:<66} {t.images:>6} img  {t.seconds:9.2f} s  {t.rate:10.2f} img/s{note}", flush=True)
        return t

    def pipeline(name: str, corruption_cache: str | None = None, clean_cache: str | None = None,
                 host_only: bool = False) -> Timing:
        t = pipeline_run(args.images, args.corruption, args.severity, args.method, args.size, args.batch_size,
                         workers, accelerator, precision, corruption_cache, args.channels_last, clean_cache,
                         host_only)
        t.name = name
        return t

    print(f"machine: {results['machine']}", flush=True)
    # The baseline is the study's loop as it was: fp32, contiguous tensors, batch 1, every box scored.
    plain = Models(device, args.method, plain=True)
    baseline_loop(plain, source, 2, args.corruption, args.severity, args.size)  # warm-up
    n_base = min(args.images, args.baseline_images)
    base = add(timed("per-image loop (the original study's, batch 1, fp32)", n_base,
                     lambda: baseline_loop(plain, source, n_base, args.corruption, args.severity, args.size),
                     device))
    plain.close()
    cold = add(pipeline("pipeline end to end (clean pass included)"))
    caches = [tempfile.mkdtemp(prefix="iqa-bench-clean-"), tempfile.mkdtemp(prefix="iqa-bench-corruptions-")]
    try:
        pipeline("fill the clean cache", clean_cache=caches[0])
        sweep = add(pipeline("pipeline end to end in a sweep (clean pass cached)", clean_cache=caches[0]))
        results["ratio_pipeline_vs_loop"] = round(cold.rate / base.rate, 2)
        results["ratio_sweep_pipeline_vs_loop"] = round(sweep.rate / base.rate, 2)
        dataset = CorruptedPairs(source, Cell(args.corruption, args.severity, 0),
                                 Inputs(resize=256 if args.size == 224 else None, crop=args.size))
        batches: list[dict[str, Any]] = []
        add(timed(f"corruption ({args.corruption} s{args.severity}) in {workers} workers", args.images,
                  lambda: batches.extend(load_pairs(dataset, args.batch_size, workers)), device))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
            parts = [add(t) for t in bench_parts(models, batches, device, args.images)]
        if args.warm_cache:
            pipeline("fill the corruption cache", corruption_cache=caches[1], clean_cache=caches[0])
            warm = add(pipeline("pipeline end to end, clean pass and corruptions cached",
                                corruption_cache=caches[1], clean_cache=caches[0]))
            bound = next(t for t in parts if t.name.startswith("models only, corrupted"))
            results["warm_cache_fraction_of_models_only"] = round(warm.rate / bound.rate, 3)
            host = add(pipeline("host bound: fully cached pipeline, model calls replaced by fixed outputs",
                                corruption_cache=caches[1], clean_cache=caches[0], host_only=True))
            results["host_bound_vs_loop"] = round(host.rate / base.rate, 2)
    finally:
        for cache in caches:
            shutil.rmtree(cache, ignore_errors=True)
    results["memory"] = peak_memory(device)
    print(f"  pipeline / per-image loop: {results['ratio_pipeline_vs_loop']}x (clean pass included), "
          f"{results['ratio_sweep_pipeline_vs_loop']}x in a sweep (clean pass cached)", flush=True)
    if "warm_cache_fraction_of_models_only" in results:
        print(f"  fully cached pipeline / models-only bound: {results['warm_cache_fraction_of_models_only']}; "
              f"host bound / per-image loop: {results['host_bound_vs_loop']}x", flush=True)
    print(f"  peak memory: {results['memory']}", flush=True)
    return results


def compare_bf16(args: argparse.Namespace) -> dict[str, Any]:
    """How far bf16 autocast (+ channels_last) moves the outputs from fp32, on the same images."""
    device = _execution(args)[0]
    fp32 = Models(device, args.method)
    fast = Models(device, args.method, channels_last=True)
    fast.quality.load_state_dict(fp32.quality.state_dict())
    fast.clf.load_state_dict(fp32.clf.state_dict())
    dataset = CorruptedPairs(CycledSamples(args.images), Cell(args.corruption, args.severity, 0),
                             Inputs(resize=256, crop=224))
    batches = load_pairs(dataset, args.batch_size, args.workers if args.workers >= 0 else 0)
    diffs: dict[str, list[float]] = {"mos_abs": [], "local_abs": [], "prob_abs": [], "attr_cc": [], "same_pred": []}
    for batch in batches:
        x, _ = _stack(batch, device)
        outs = []
        for models, autocast in ((fp32, False), (fast, True)):
            xx = x.contiguous(memory_format=models.memory_format)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                with torch.no_grad():
                    q = models.quality(xx).float()
                    probs = models.clf(xx).float().softmax(1)
                with torch.enable_grad():
                    attr = models.attribution.attribute(xx.clone().requires_grad_(True), target=probs.argmax(1))
            outs.append((q, probs, attr.float().detach()))
        (q0, p0, a0), (q1, p1, a1) = outs
        diffs["mos_abs"] += (q0[:, 0] - q1[:, 0]).abs().tolist()
        diffs["local_abs"] += (q0[:, 1:] - q1[:, 1:]).abs().amax(1).tolist()
        diffs["prob_abs"] += (p0 - p1).abs().amax(1).tolist()
        diffs["attr_cc"] += pearson_cc(a0, a1).tolist()
        diffs["same_pred"] += (p0.argmax(1) == p1.argmax(1)).float().tolist()
    out = {"images_x2": len(diffs["mos_abs"]),
           "mos_abs_max": max(diffs["mos_abs"]), "mos_abs_mean": float(np.mean(diffs["mos_abs"])),
           "local_map_abs_max": max(diffs["local_abs"]), "prob_abs_max": max(diffs["prob_abs"]),
           "attribution_cc_min": float(np.nanmin(diffs["attr_cc"])),
           "attribution_cc_mean": float(np.nanmean(diffs["attr_cc"])),
           "same_prediction_rate": float(np.mean(diffs["same_pred"]))}
    print("bf16 autocast + channels_last vs fp32 (untrained weights):", json.dumps(out, indent=1), flush=True)
    return {"config": vars(args), "machine": machine(device), "bf16_vs_fp32": out}


def run_scaling(args: argparse.Namespace) -> dict[str, Any]:
    """Pipeline time against the number of images and against image size (should be linear in both)."""
    device, accelerator, workers, precision = _execution(args)
    rows = []
    print(f"machine: {machine(device)}", flush=True)
    for n in [int(v) for v in args.scaling_images.split(",") if v.strip()]:
        # the previous run's trainer, module and models are held in reference cycles until the cyclic collector
        # runs: without this each run's peak would include the runs before it (about 150 MB each at 224 px)
        gc.collect()
        with RssSampler() as rss:
            t = pipeline_run(n, args.corruption, args.severity, args.method, 224, args.batch_size, workers,
                             accelerator, precision, None, args.channels_last)
        rows.append({"axis": "images", "images": n, "size": 224, "seconds": round(t.seconds, 2),
                     "images_per_s": round(t.rate, 2), "run_peak_rss_mib": rss.peak_mib})
        print(f"  {n:>6} images @224: {t.seconds:9.2f} s  {t.rate:8.2f} img/s  peak RSS during the run "
              f"{rss.peak_mib} MiB", flush=True)
    for size in [int(v) for v in args.scaling_sizes.split(",") if v.strip()]:
        n = args.scaling_size_images
        t = pipeline_run(n, args.corruption, args.severity, args.method, size, max(1, args.batch_size // 4),
                         workers, accelerator, precision, None, args.channels_last)
        rows.append({"axis": "size", "images": n, "size": size, "seconds": round(t.seconds, 2),
                     "images_per_s": round(t.rate, 2), "pixels_per_s": round(t.rate * size * size)})
        print(f"  {n:>6} images @{size}: {t.seconds:9.2f} s  {t.rate:8.2f} img/s  "
              f"{rows[-1]['pixels_per_s'] / 1e6:.2f} Mpx/s", flush=True)
    return {"config": vars(args), "machine": machine(device), "scaling": rows}


def build_parser() -> argparse.ArgumentParser:
    """The command line (tests parse the Makefile's gpu-check commands with it)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--baseline-images", type=int, default=32, help="images for the (slow) per-image loop")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=-1, help="DataLoader workers (-1: one per core, at most 16)")
    p.add_argument("--corruption", default="motion_blur")
    p.add_argument("--severity", type=int, default=2)
    p.add_argument("--method", default="gradcam")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--device", default="auto")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast in the pipeline (GPU)")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--warm-cache", action="store_true", help="also time the pipeline with a warm corruption cache")
    p.add_argument("--scaling", action="store_true", help="time against image count and size instead")
    p.add_argument("--scaling-images", default="100,1000,5000")
    p.add_argument("--scaling-sizes", default="224,512,1024")
    p.add_argument("--scaling-size-images", type=int, default=48)
    p.add_argument("--compare-bf16", action="store_true", help="measure bf16 autocast's deviation from fp32")
    p.add_argument("--compile", action="store_true",
                   help="models-only rates eager vs torch.compile, and the compiled outputs' deviation")
    p.add_argument("--compare-backends", action="store_true",
                   help="time one cell end to end with corruption_backend=numpy and torch (see --repeats)")
    p.add_argument("--repeats", type=int, default=1, help="--compare-backends: best of this many runs each")
    p.add_argument("--memory-trace", action="store_true",
                   help="one run (--images): peak RSS by quarter of its batches and MB per image")
    p.add_argument("--host-only", action="store_true", help="--memory-trace: model calls give fixed outputs")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    reuse_freed_heap()  # as run_evaluation does, so the per-image loop runs with the same heap settings
    if args.compare_bf16:
        results = compare_bf16(args)
    elif args.compile:
        from benchmarks.compiled import compare_compile

        results = compare_compile(args)
    elif args.compare_backends:
        results = compare_backends(args)
    elif args.memory_trace:
        results = memory_trace(args)
    else:
        results = run_scaling(args) if args.scaling else run_benchmark(args)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
