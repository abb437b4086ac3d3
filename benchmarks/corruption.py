"""Torch corruption backend against imagecorruptions: fidelity and speed tables.

    python -m benchmarks.corruption --fidelity                      # PSNR / SSIM / max |diff|, every severity
    python -m benchmarks.corruption --speed                         # img/s, 224 px, severity 2, the study's seven
    python -m benchmarks.corruption --speed --device cuda --batch 128 --out bench.json
    python -m benchmarks.corruption --compare-sweep outputs/multirun/<date>/<time>   # numpy vs torch cells

--compare-sweep reads a sweep over corruption_backend=numpy,torch run with dataset.save_images=true: for every
torch cell, the backend its summary.json says ran it and the worst PSNR of its saved inputs against the numpy
cell's.

Fidelity: each ported corruption at severities 1-5 on a few natural images (224x224 and a 200x300 crop), every
image with its own seed; the reference is `iqa_saliency.corruption.apply_corruption` (imagecorruptions called as
the pipeline calls it). Each cell is the worst image: min PSNR, min SSIM (skimage, channel_axis), max |diff|.

Speed: the numpy reference in a pool of `--workers` processes (one thread each: OMP/MKL/OpenCV limited to 1)
against `corrupt_batch` on `--device` in batches of `--batch`, with torch.set_num_threads(t) for every t in
`--threads`. Each number is the best of `--repeats` timed passes over `--images` images (after a warm-up pass),
which keeps other load on a shared machine out of it as far as it can be.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from skimage import data
from skimage.metrics import structural_similarity

from iqa_saliency.corruption import apply_corruption, backend_version
from iqa_saliency.corruption.torch_backend import STUDY_CORRUPTIONS, TORCH_CORRUPTIONS, corrupt_batch, corrupt_one


def sample_images(size: int, count: int) -> list[np.ndarray]:
    """`count` size x size crops from skimage's colour pictures (cycled, shifted)."""
    sources = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket(), data.immunohistochemistry()]
    out = []
    for i in range(count):
        src = sources[i % len(sources)]
        h, w = src.shape[:2]
        s = min(size, h, w)
        k = i // len(sources)
        y = (k * 17) % (h - s + 1)
        x = (k * 29) % (w - s + 1)
        crop = src[y: y + s, x: x + s]
        if s < size:
            crop = np.pad(crop, ((0, size - s), (0, size - s), (0, 0)), mode="reflect")
        out.append(np.ascontiguousarray(crop))
    return out


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def fidelity(names: list[str], device: str) -> list[dict[str, object]]:
    images = [np.ascontiguousarray(data.astronaut()[100:324, 150:374]),
              np.ascontiguousarray(data.chelsea()[:200, :300]),
              np.ascontiguousarray(data.coffee()[100:324, 200:424])]
    rows = []
    for name in names:
        for severity in range(1, 6):
            cells = []
            for i, image in enumerate(images):
                seed = 1000 * i + severity
                ref = apply_corruption(image, name, severity, seed)
                out = corrupt_one(image, name, severity, seed, device=device)
                cells.append((psnr(out, ref), structural_similarity(out, ref, channel_axis=-1, data_range=255),
                              int(np.abs(out.astype(int) - ref.astype(int)).max()),
                              float(np.mean(out != ref))))
            rows.append({"corruption": name, "severity": severity, "psnr_min": min(c[0] for c in cells),
                         "ssim_min": min(c[1] for c in cells), "max_abs_diff": max(c[2] for c in cells),
                         "differing_fraction_max": max(c[3] for c in cells)})
        print(f"  {name}: min PSNR {min(r['psnr_min'] for r in rows if r['corruption'] == name):.1f} dB",
              flush=True)
    return rows


def fidelity_table(rows: list[dict[str, object]]) -> str:
    def fmt(r):
        p = "inf" if r["psnr_min"] == float("inf") else f"{r['psnr_min']:.1f}"
        return f"{p} / {r['ssim_min']:.5f} / {r['max_abs_diff']}"

    names = list(dict.fromkeys(r["corruption"] for r in rows))
    lines = ["| corruption | " + " | ".join(f"s{s}: PSNR dB / SSIM / max diff" for s in range(1, 6)) + " | min PSNR |",
             "| --- |" + " --- |" * 6]
    for name in names:
        cells = [r for r in rows if r["corruption"] == name]
        worst = min(r["psnr_min"] for r in cells)
        lines.append(f"| {name} | " + " | ".join(fmt(r) for r in cells) + f" | {worst:.1f} |")
    return "\n".join(lines)


# ---------------------------------------------------------------- speed


def _limit_threads() -> None:
    os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    import cv2

    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def _reference_chunk(args: tuple[list[np.ndarray], str, int, int]) -> int:
    images, name, severity, seed = args
    for i, image in enumerate(images):
        apply_corruption(image, name, severity, seed + i)
    return len(images)


def _best(run: Callable[[], None], repeats: int) -> float:
    run()  # warm-up: imports, JIT, caches, allocator
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    return min(times)


def speed(names: list[str], size: int, severity: int, count: int, batch: int, workers: int,
          threads: list[int], device: str, repeats: int) -> list[dict[str, object]]:
    images = sample_images(size, count)
    stacked = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous().to(device)
    seeds = list(range(count))
    rows = []
    with ProcessPoolExecutor(workers, initializer=_limit_threads) as pool:
        for name in names:
            chunks = [(images[i: i + max(1, count // (4 * workers))], name, severity, i)
                      for i in range(0, count, max(1, count // (4 * workers)))]

            def numpy_run(chunks=chunks):
                assert sum(pool.map(_reference_chunk, chunks)) == count

            row = {"corruption": name, "size": size, "severity": severity, "images": count,
                   f"numpy_{workers}proc": count / _best(numpy_run, repeats)}
            for t in threads:
                torch.set_num_threads(t)

                def torch_run(name=name):
                    for i in range(0, count, batch):
                        corrupt_batch(stacked[i: i + batch], name, severity, seeds[i: i + batch])
                    if stacked.is_cuda:
                        torch.cuda.synchronize()

                row[f"torch_{t}thr"] = count / _best(torch_run, repeats)
            rows.append(row)
            print("  " + ", ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()),
                  flush=True)
    return rows


def speed_table(rows: list[dict[str, object]], workers: int, threads: list[int], device: str) -> str:
    ref = f"numpy_{workers}proc"
    cols = [f"torch_{t}thr" for t in threads]
    lines = [f"| corruption | numpy, {workers} processes | " + " | ".join(
        f"torch {device}, {t} thread{'s' * (t > 1)}" for t in threads) + " | best torch / numpy |",
        "| --- | ---: |" + " ---: |" * (len(cols) + 1)]
    for r in rows:
        best = max(r[c] for c in cols)
        lines.append(f"| {r['corruption']} | {r[ref]:.1f} | " + " | ".join(f"{r[c]:.1f}" for c in cols)
                     + f" | {best / r[ref]:.2f}x |")
    return "\n".join(lines)


def compare_sweep(sweep: Path) -> list[dict[str, object]]:
    """Every torch cell of `sweep` against its numpy twin: backend used, images, min PSNR of the saved inputs."""
    rows = []
    for cell in sorted(sweep.glob("*corruption_backend=torch*")):
        twin = cell.with_name(cell.name.replace("corruption_backend=torch", "corruption_backend=numpy"))
        used = json.loads((cell / "summary.json").read_text())["corruption_backend"]["used"]
        images = sorted((cell / "images").glob("*.png"))
        if not images or not twin.is_dir():
            raise SystemExit(f"{cell.name}: no saved images or no numpy twin (dataset.save_images=true, both backends)")
        worst = min(psnr(np.asarray(Image.open(f)), np.asarray(Image.open(twin / "images" / f.name))) for f in images)
        rows.append({"cell": cell.name, "used": used, "images": len(images), "psnr_min": worst})
    if not rows:
        raise SystemExit(f"no corruption_backend=torch cell under {sweep}")
    return rows


def machine(device: str) -> dict[str, object]:
    info = {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
            "backend": backend_version(), "device": device}
    if hasattr(os, "getloadavg"):
        info["loadavg"] = os.getloadavg()
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fidelity", action="store_true")
    p.add_argument("--speed", action="store_true")
    p.add_argument("--compare-sweep", type=Path, metavar="SWEEP_DIR")
    p.add_argument("--names", nargs="+", help="corruptions (default: fidelity all ported, speed the study's seven)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--severity", type=int, default=2)
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", help="write the rows as JSON here")
    a = p.parse_args(argv)
    if not (a.fidelity or a.speed or a.compare_sweep):
        p.error("pass --fidelity, --speed and/or --compare-sweep")
    result: dict[str, object] = {"machine": machine(a.device)}
    print(f"machine: {result['machine']}")
    if a.fidelity:
        names = a.names or sorted(TORCH_CORRUPTIONS)
        rows = fidelity(names, a.device)
        result["fidelity"] = rows
        print("\n" + fidelity_table(rows) + "\n")
    if a.speed:
        names = a.names or list(STUDY_CORRUPTIONS)
        rows = speed(names, a.size, a.severity, a.images, a.batch, a.workers, a.threads, a.device, a.repeats)
        result["speed"] = rows
        print(f"\n{a.size} px, severity {a.severity}, {a.images} images, batch {a.batch}, best of {a.repeats}\n")
        print(speed_table(rows, a.workers, a.threads, a.device) + "\n")
    if a.compare_sweep:
        rows = compare_sweep(a.compare_sweep)
        result["sweep"] = rows
        print("\n| torch cell | used | images | min PSNR vs numpy (dB) |\n| --- | --- | ---: | ---: |")
        for r in rows:
            print(f"| {r['cell']} | {r['used']} | {r['images']} | {r['psnr_min']:.1f} |")
        below = [r["cell"] for r in rows if r["used"] != "torch" or r["psnr_min"] < 40]
        print(f"\n{len(rows)} torch cells; not torch or below 40 dB: {below or 'none'}")
    if a.out:
        with open(a.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
