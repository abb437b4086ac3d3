"""Cost of each attribution method: images per second on this machine, ResNet18, default options.

    python -m iqa_saliency.bench_attribution                  # every method, 4 sample images, 224x224, CPU
    python -m iqa_saliency.bench_attribution --methods gradcam saliency --images 8 --device cuda

Untrained weights (seeded) are used: the cost does not depend on the weights. Prints a Markdown table; for
integrated_gradients and deeplift also the completeness error |Σ attr − (f(x) − f(base))| / |f(x) − f(base)|.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from iqa_saliency.attribution.base import PixelAttribution, reduce_channels
from iqa_saliency.attribution.pixel import BaselineAttribution
from iqa_saliency.attribution.registry import build_attribution, general_methods
from iqa_saliency.data.sources import SampleImages
from iqa_saliency.evaluation.sanity import load_images
from iqa_saliency.models.classifier import load_classifier

COMPLETE = ("integrated_gradients", "deeplift")  # methods whose attributions should sum to the output change


def completeness_error(model: torch.nn.Module, method: BaselineAttribution, inputs: torch.Tensor,
                       target: torch.Tensor, raw: torch.Tensor) -> float:
    """Largest relative gap between summed attributions and the target output's change from the baseline."""
    with torch.no_grad():
        delta = (model(inputs) - model(method.baselines(inputs))).gather(1, target[:, None])[:, 0]
    return float(((raw.sum(dim=(1, 2, 3)) - delta).abs() / delta.abs()).max())


def bench(methods: list[str], images: int, batch_size: int, size: int, device: str) -> list[dict[str, object]]:
    """Time each method on `images` sample images (after one untimed warm-up batch); one row per method."""
    model = load_classifier(pretrained=False, seed=0).model.to(device)
    x = load_images(SampleImages(), images, size * 8 // 7, size).to(device)  # 256 -> 224 as ImageNet
    if len(x) < images:  # fewer bundled samples than asked for: repeat them
        x = x.repeat((images + len(x) - 1) // len(x), 1, 1, 1)[:images]
    with torch.no_grad():
        target = model(x).argmax(dim=1)
    build_attribution("gradcam", model).attribute(x[:batch_size].clone().requires_grad_(True),
                                                  target[:batch_size])  # warm-up
    rows = []
    for name in methods:
        method = build_attribution(name, model)
        error = None
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        raws = []
        for i in range(0, images, batch_size):
            chunk = x[i:i + batch_size].clone().requires_grad_(True)
            if isinstance(method, PixelAttribution):
                raw = method.raw(chunk, target[i:i + batch_size])
                reduce_channels(raw, method.reduce)
                raws.append(raw.detach())
            else:
                method.attribute(chunk, target[i:i + batch_size])
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        if name in COMPLETE:
            error = completeness_error(model, method, x, target, torch.cat(raws))
        rows.append({"method": name, "images_per_s": images / seconds, "s_per_image": seconds / images,
                     "options": method.options, "completeness_error": error})
    return rows


def main(argv: list[str] | None = None) -> None:
    """Command line: print the cost table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    names = general_methods()  # a ResNet18: the methods for any model
    parser.add_argument("--methods", nargs="+", default=names, choices=names)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    rows = bench(args.methods, args.images, args.batch_size, args.size, args.device)
    print(f"ResNet18 (untrained), {args.size}x{args.size}, {args.images} images, batch {args.batch_size}, "
          f"device {args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}")
    print("| method | images/s | s/image | completeness error | options |")
    print("| --- | ---: | ---: | ---: | --- |")
    for r in rows:
        err = "" if r["completeness_error"] is None else f"{r['completeness_error']:.1e}"
        opts = ", ".join(f"{k}={v}" for k, v in r["options"].items() if k in (
            "n_steps", "nt_samples", "n_samples", "window", "stride", "internal_batch_size",
            "perturbations_per_eval"))
        print(f"| {r['method']} | {r['images_per_s']:.2f} | {r['s_per_image']:.2f} | {err} | {opts} |")


if __name__ == "__main__":
    main()
