"""What torch.compile adds to the models-only rate (`python -m benchmarks.pipeline --compile`).

The models as the pipeline runs them (BatchNorm folded; --channels-last as given) on the corrupted images of
--images, eager and compiled (torch.compile, inductor, default mode), each timed after a warm-up pass over every
batch (the compile time is reported on its own), and how far the compiled outputs are from the eager ones.

Compiled: PaQ-2-PiQ (its forward runs without gradients) and the classifier's forward. Grad-CAM's pass cannot use a
compiled classifier as it is: it hooks the explained layer for each call, and a compiled graph does not run hooks
added after it was compiled, so in "models only" the attribution pass stays eager.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import torch


def _seconds(fn: Callable[[], Any], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


def _deviation(got: list[torch.Tensor], ref: list[torch.Tensor]) -> float:
    """The largest absolute difference, relative to the largest eager magnitude."""
    scale = max(float(r.abs().max()) for r in ref) or 1.0
    return max(float((g.float() - r.float()).abs().max()) for g, r in zip(got, ref, strict=True)) / scale


def compare_compile(args: argparse.Namespace) -> dict[str, Any]:
    """Eager against torch.compile: rates of the quality model, the classifier's forward and all models."""
    from benchmarks.pipeline import CycledSamples, Models, _execution, _stack, load_pairs
    from iqa_saliency.data.pairs import CorruptedPairs
    from iqa_saliency.data.protocol import Cell, Inputs

    device, _, workers, _ = _execution(args)
    models = Models(device, args.method, channels_last=args.channels_last)
    dataset = CorruptedPairs(CycledSamples(args.images), Cell(args.corruption, args.severity, 0),
                             Inputs(resize=256 if args.size == 224 else None, crop=args.size))
    fmt = models.memory_format
    xs = [_stack(b, device, ("corrupted",))[0].contiguous(memory_format=fmt)
          for b in load_pairs(dataset, args.batch_size, workers)]
    n = sum(len(x) for x in xs)
    eager = {"quality": models.quality, "classifier": models.clf}
    compiled = {name: torch.compile(model) for name, model in eager.items()}
    results: dict[str, Any] = {"config": {k: str(v) for k, v in vars(args).items()}, "images": n,
                               "torch": torch.__version__, "threads": torch.get_num_threads(), "rows": []}

    def forwards(model: torch.nn.Module) -> list[torch.Tensor]:
        with torch.no_grad():
            return [model(x) for x in xs]

    outputs = {}
    for name, model in eager.items():
        outputs[name] = forwards(model)  # warm-up (and the reference outputs)
        results["rows"].append({"name": f"{name} forward, eager", "seconds": _seconds(lambda m=model: forwards(m),
                                                                                       device)})
    for name, model in compiled.items():
        got: list[torch.Tensor] = []
        results[f"compile_seconds_{name}"] = _seconds(lambda m=model, g=got: g.extend(forwards(m)), device)
        results[f"deviation_{name}"] = _deviation(got, outputs[name])
        results["rows"].append({"name": f"{name} forward, compiled", "seconds": _seconds(
            lambda m=model: forwards(m), device)})

    def models_only() -> None:
        for x in xs:
            models.run(x)

    models_only()  # warm-up
    results["rows"].append({"name": "models only, corrupted: eager", "seconds": _seconds(models_only, device)})
    models.quality = compiled["quality"]
    results["rows"].append({"name": "models only, corrupted: quality model compiled (Grad-CAM eager)",
                            "seconds": _seconds(models_only, device)})
    for row in results["rows"]:
        row["images_per_s"] = n / row["seconds"]
        print(f"  {row['name']:<66} {n:>5} img  {row['seconds']:8.2f} s  {row['images_per_s']:8.2f} img/s",
              flush=True)
    for name in eager:
        print(f"  {name}: compiled in {results[f'compile_seconds_{name}']:.1f} s (first pass over every batch); "
              f"largest deviation from eager {results[f'deviation_{name}']:.2e} of the output's range", flush=True)
    return results
