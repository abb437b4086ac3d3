"""Where a sweep's wall time goes: `evaluate.py -m` as users run it, split by stage, against the study's loop.

    python -m benchmarks.profile                       # contrast,motion_blur x 0,1,2 over 96 images, random weights
    python -m benchmarks.profile --images 16 --corruptions contrast --severities 0,1 --no-study-loop

Runs the sweep in one process (a subprocess, as a user's `python evaluate.py -m` runs: process start and imports
count) with the library's stage timers on (iqa_saliency.profiling), then the original study's per-image loop on the
same images and cells (every cell image by image, batch 1, its clean pass in each corruption's severity-0 cell, as
the study's quality_accuracy.py ran them, and Grad-CAM as its saliency_maps.py ran it: pytorch-grad-cam's GradCAM,
whose backward goes through the whole network; also a process of its own, models loaded once). Prints the table per
cell and for the whole sweep, the model-compute share and the ratio; --out writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MODEL = "model compute (quality, classifier, attribution)"
# the stages of a cell, in the order of the table; "host work in the step" and the residual rows are derived
CELL_STAGES = ["dataset listing + selection", "model builds + weight loads", "Trainer set-up",
               "run start: labels, run folder, caches, module", "waiting for data (workers: decode, corrupt)",
               MODEL, "corruption in the step (torch backend)", "host work in the step (similarity, metrics, rows)",
               "writing: rows, maps queued (main process)", "figures", "Lightning loop overhead",
               "waiting for background writes", "merge rows + summary", "freeing the finished cell",
               "checks, config, provenance (rest of the cell)"]


def write_images(folder: Path, n: int) -> Path:
    """`n` image files cycling through the bundled photos (full size, decoded by the run like any dataset's)."""
    from iqa_saliency.data.sources import SampleImages

    samples = SampleImages()
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        record = samples.records[k % len(samples.records)]
        samples.load(record).save(images / f"{k:04d}_{record.image_id}.png")
    return folder


def sweep_command(args: argparse.Namespace, data: Path, sweep_dir: Path) -> list[str]:
    """The sweep as a user types it (random weights, no logger, no progress bar)."""
    return [sys.executable, str(ROOT / "evaluate.py"), "-m", f"corruption={args.corruptions}",
            f"severity={args.severities}", "dataset=folder", f"dataset.root={data}", "pretrained=false",
            "logger=none", "trainer.enable_progress_bar=false", f"hydra.sweep.dir={sweep_dir}", *args.override]


def run_sweep(args: argparse.Namespace, data: Path, work: Path) -> dict[str, Any]:
    """The sweep in its own process with the stage timers on; its wall time and the recorded stages."""
    profile = work / "profile.json"
    env = {**os.environ, "IQA_PROFILE": str(profile), "IQA_PROFILE_LAUNCHED": repr(time.time())}
    started = time.perf_counter()
    proc = subprocess.run(sweep_command(args, data, work / "sweep"), cwd=ROOT, env=env, capture_output=True,
                          text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"the sweep failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    recorded = json.loads(profile.read_text())
    recorded["disk"] = disk_use(work / "sweep", args.images)
    recorded["wall"] = wall
    recorded["launched"] = float(env["IQA_PROFILE_LAUNCHED"])
    return recorded


def _bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def disk_use(sweep_dir: Path, images: int) -> dict[str, float]:
    """Bytes a sweep wrote: per image and cell (rows, maps), per cell (figures, logs), per image (clean cache)."""
    cells = [p for p in sweep_dir.iterdir() if (p / "summary.json").exists()]
    figures = sum(_bytes(p / "figures") for p in cells if (p / "figures").exists())
    total = sum(_bytes(p) for p in cells)
    clean = _bytes(sweep_dir / ".clean_cache") if (sweep_dir / ".clean_cache").exists() else 0
    return {"bytes_per_image_cell": (total - figures) / (images * len(cells)),
            "bytes_per_cell_figures": figures / len(cells), "clean_cache_bytes_per_image": clean / images}


def cell_rows(seconds: dict[str, float]) -> dict[str, float]:
    """One cell's recorded stages as the table's rows (derived rows filled in)."""
    s = dict(seconds)
    step = s.pop("step", 0.0)
    loop = s.pop("Lightning test loop", 0.0)
    total = s.pop("cell", 0.0)
    in_step = sum(s.get(k, 0.0) for k in (MODEL, "corruption in the step (torch backend)",
                                          "writing: rows, maps queued (main process)", "figures"))
    s["host work in the step (similarity, metrics, rows)"] = max(step - in_step, 0.0)
    s["Lightning loop overhead"] = max(loop - step - s.get("waiting for data (workers: decode, corrupt)", 0.0), 0.0)
    named = sum(s.get(k, 0.0) for k in CELL_STAGES[:-1])
    s["checks, config, provenance (rest of the cell)"] = max(total - named, 0.0)
    s["cell"] = total
    return s


def profile_table(recorded: dict[str, Any]) -> dict[str, Any]:
    """Per-cell and whole-sweep seconds by stage, and the model-compute share of the sweep's wall time."""
    from iqa_saliency.profiling import OUTSIDE

    outside = recorded["seconds"].get(OUTSIDE, {})
    cells = {name: cell_rows(s) for name, s in recorded["seconds"].items() if name != OUTSIDE}
    wall = recorded["wall"]
    startup = recorded["marks"]["entry"] - recorded["launched"]
    report = outside.get("sweep report + figures", 0.0)
    in_cells = sum(c["cell"] for c in cells.values())
    sweep = {"process start + imports": startup,
             "Hydra: composition, job set-up, callbacks (rest of the sweep)": max(wall - startup - in_cells - report,
                                                                                  0.0),
             "sweep report + figures": report}
    for stage in CELL_STAGES:
        sweep[stage] = sum(c.get(stage, 0.0) for c in cells.values())
    model = sweep[MODEL]
    return {"wall_seconds": wall, "model_seconds": model, "model_share": model / wall, "sweep": sweep,
            "cells": cells, "disk": recorded["disk"]}


def study_loop(args: argparse.Namespace) -> int:
    """The original study's way (the child process of --study-loop): every cell image by image, batch 1, fp32."""
    import numpy as np
    import torch

    from benchmarks.pipeline import Models
    from iqa_saliency.corruption import apply_corruption, image_seed
    from iqa_saliency.data.images import prepare_image
    from iqa_saliency.data.sources import ImageFolder
    from iqa_saliency.heap import reuse_freed_heap

    reuse_freed_heap()
    started = time.perf_counter()
    models = Models(torch.device("cpu"), "gradcam", plain=True)
    source = ImageFolder(args.root)
    model_seconds = 0.0
    for corruption in args.corruptions.split(","):
        for severity in (int(s) for s in args.severities.split(",")):
            for record in source.records:
                clean = np.asarray(prepare_image(source.load(record), 256, 224), dtype=np.uint8)
                corrupted = apply_corruption(clean, corruption, severity,
                                             image_seed(0, record.image_id, corruption, severity))
                x = torch.from_numpy(np.ascontiguousarray(corrupted)).permute(2, 0, 1)[None].float().div(255)
                t = time.perf_counter()
                models.run_plain(x)
                model_seconds += time.perf_counter() - t
    models.close()
    print(json.dumps({"images": len(source.records), "seconds": time.perf_counter() - started,
                      "model_seconds": model_seconds}))
    return 0


def run_study_loop(args: argparse.Namespace, data: Path) -> dict[str, Any]:
    """The study's loop in a process of its own (process start, imports and model loads count, as for the sweep)."""
    command = [sys.executable, "-m", "benchmarks.profile", "--study-loop", "--root", str(data),
               "--corruptions", args.corruptions, "--severities", args.severities]
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"the study loop failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    inner = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"wall_seconds": wall, "model_seconds": inner["model_seconds"]}


def print_table(result: dict[str, Any]) -> None:
    """The profile as a markdown table: seconds per stage, per cell and for the whole sweep."""
    cells = result["cells"]
    names = list(cells)
    print("| stage (s) | " + " | ".join(names) + " | whole sweep | share |")
    print("| --- |" + " ---: |" * (len(names) + 2))
    wall = result["wall_seconds"]
    for stage, seconds in result["sweep"].items():
        per_cell = [f"{cells[n][stage]:.2f}" if stage in cells[n] else "" for n in names]
        print(f"| {stage} | " + " | ".join(per_cell) + f" | {seconds:.2f} | {seconds / wall:.1%} |")
    print("| **wall time** | " + " | ".join(f"{cells[n]['cell']:.2f}" for n in names) + f" | **{wall:.2f}** | |")
    print(f"\nmodel compute: {result['model_seconds']:.1f} s of {wall:.1f} s = {result['model_share']:.1%} "
          f"(wall / models-only {wall / result['model_seconds']:.2f}x)")


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=96)
    p.add_argument("--corruptions", default="contrast,motion_blur")
    p.add_argument("--severities", default="0,1,2")
    p.add_argument("--override", nargs="*", default=[], help="more evaluate.py overrides, e.g. channels_last=true")
    p.add_argument("--no-study-loop", action="store_true", help="profile the sweep only")
    p.add_argument("--study-loop", action="store_true", help=argparse.SUPPRESS)  # the child process
    p.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--device", default="cpu", help="cpu, or cuda (adds trainer=gpu to the sweep)")
    p.add_argument("--work", type=Path, default=None, help="keep the images and the sweep folder here")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.study_loop:
        return study_loop(args)
    if args.device == "cuda":
        args.override = ["trainer=gpu", *args.override]
    with tempfile.TemporaryDirectory(prefix="iqa-profile-") as tmp:
        work = args.work or Path(tmp)
        data = write_images(work / "data", args.images)
        result = profile_table(run_sweep(args, data, work))
        print_table(result)  # the sweep's table first: the study's loop takes longer
        if not args.no_study_loop and args.device == "cpu":
            result["study_loop"] = run_study_loop(args, data)
            result["speedup_vs_study"] = result["study_loop"]["wall_seconds"] / result["wall_seconds"]
    result["config"] = {k: str(v) for k, v in vars(args).items()}
    result["load_average"] = os.getloadavg()
    if "study_loop" in result:
        study = result["study_loop"]
        print(f"the study's loop: {study['wall_seconds']:.1f} s (models {study['model_seconds']:.1f} s); "
              f"sweep / study: {result['speedup_vs_study']:.2f}x faster")
    print(f"load average at the end: {result['load_average']}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
