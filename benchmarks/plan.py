"""Estimate a sweep's wall time, device-hours and disk before it runs, from a profile's per-image costs.

    python -m benchmarks.plan --profile bench-out/profile.json --corruptions 19 --severities 1,2,3,4,5 \\
        --classifiers 3 --images 50000 --gpus 8 --launcher slurm

The profile is the JSON of `python -m benchmarks.profile --out ...` taken on the machine (and device) the sweep will
run on: its per-image model and host costs, per-cell set-up, process start, and bytes written. The costs are the
profiled classifier's (ResNet18 by default); a larger classifier costs more per image. Assumptions, printed with the
estimate: cells are spread evenly over the devices; each device computes the clean pass of its first cell of every
classifier (later cells read the sweep's clean cache); with --launcher slurm every cell is a job of its own and pays
the process start, with --launcher local one process per device runs its cells one after another.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MODEL = "model compute (quality, classifier, attribution)"
# stages whose time grows with the number of images (the rest of a cell is set-up)
PER_IMAGE = ("waiting for data (workers: decode, corrupt)", "corruption in the step (torch backend)",
             "host work in the step (similarity, metrics, rows)", "writing: rows, maps queued (main process)",
             "Lightning loop overhead", "waiting for background writes", "merge rows + summary")


@dataclass(frozen=True)
class Costs:
    """Seconds and bytes per unit of work, read from a profile."""

    clean_model: float  # per image, the clean pass (once per classifier and device)
    corrupted_model: float  # per image and corrupted cell
    host: float  # per image and cell, outside the models
    cell_setup: float  # per cell: model builds, Trainer, run folder, figures, checks, Hydra's job set-up
    process_start: float  # per process
    report: float  # per sweep
    bytes_per_image_cell: float
    bytes_per_cell: float
    clean_cache_bytes_per_image: float

    @classmethod
    def from_profile(cls, profile: dict[str, Any]) -> Costs:
        """Per-image and per-cell costs from a benchmarks.profile result."""
        n = int(profile["config"]["images"])
        cells = profile["cells"]
        clean = [c for name, c in cells.items() if name.endswith("-s0")]
        corrupted = [c for name, c in cells.items() if not name.endswith("-s0")]
        if not clean or not corrupted:
            raise SystemExit("The profile needs a severity-0 cell and a corrupted one (--severities 0,1 at least).")
        sweep = profile["sweep"]
        host = sum(c.get(s, 0.0) for c in cells.values() for s in PER_IMAGE) / (n * len(cells))
        in_cells = sum(c["cell"] - c.get(MODEL, 0.0) - sum(c.get(s, 0.0) for s in PER_IMAGE) for c in cells.values())
        hydra = sweep["Hydra: composition, job set-up, callbacks (rest of the sweep)"]
        disk = profile["disk"]
        return cls(clean_model=max(c.get(MODEL, 0.0) for c in clean) / n,
                   corrupted_model=sum(c.get(MODEL, 0.0) for c in corrupted) / (n * len(corrupted)),
                   host=host, cell_setup=(in_cells + hydra) / len(cells),
                   process_start=sweep["process start + imports"], report=sweep["sweep report + figures"],
                   bytes_per_image_cell=disk["bytes_per_image_cell"], bytes_per_cell=disk["bytes_per_cell_figures"],
                   clean_cache_bytes_per_image=disk["clean_cache_bytes_per_image"])


@dataclass(frozen=True)
class Sweep:
    """What is planned: corruptions x severities x classifiers over images, on devices, by a launcher."""

    corruptions: int
    severities: tuple[int, ...]
    classifiers: int
    images: int
    devices: int = 1
    launcher: str = "local"  # local: one process per device | slurm: one job (process) per cell


def estimate(costs: Costs, sweep: Sweep) -> dict[str, Any]:
    """Wall time, device-hours and disk of a sweep, with the counts behind them."""
    corrupted_cells = sweep.corruptions * sum(1 for s in sweep.severities if s > 0) * sweep.classifiers
    clean_cells = sweep.corruptions * sum(1 for s in sweep.severities if s == 0) * sweep.classifiers
    cells = corrupted_cells + clean_cells
    devices = max(1, min(sweep.devices, cells))
    per_cell = costs.cell_setup + sweep.images * costs.host
    clean_passes = sweep.classifiers * devices  # each device's first cell of a classifier fills its clean cache
    device_seconds = (cells * per_cell + corrupted_cells * sweep.images * costs.corrupted_model
                      + clean_passes * sweep.images * costs.clean_model
                      + (cells if sweep.launcher == "slurm" else devices) * costs.process_start)
    wall = device_seconds / devices + costs.report
    disk = (cells * (sweep.images * costs.bytes_per_image_cell + costs.bytes_per_cell)
            + sweep.classifiers * sweep.images * costs.clean_cache_bytes_per_image)
    return {"cells": cells, "corrupted_cells": corrupted_cells, "devices": devices, "wall_seconds": wall,
            "wall_hours": wall / 3600, "device_hours": device_seconds / 3600, "disk_gb": disk / 1e9,
            "model_share": (corrupted_cells * costs.corrupted_model + clean_passes * costs.clean_model)
            * sweep.images / device_seconds}


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", type=Path, default=Path("docs/benchmarks/profile_cpu.json"),
                   help="a benchmarks.profile JSON from the machine the sweep will run on")
    p.add_argument("--corruptions", type=int, default=19)
    p.add_argument("--severities", default="1,2,3,4,5", help="comma-separated; 0 adds clean cells")
    p.add_argument("--classifiers", type=int, default=1)
    p.add_argument("--images", type=int, default=50000)
    p.add_argument("--gpus", type=int, default=1, help="devices (or CPU machines) the cells are spread over")
    p.add_argument("--launcher", choices=("local", "slurm"), default="slurm")
    p.add_argument("--out", type=Path, default=None, help="write the estimate as JSON here")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    profile = json.loads(args.profile.read_text())
    costs = Costs.from_profile(profile)
    sweep = Sweep(args.corruptions, tuple(int(s) for s in args.severities.split(",")), args.classifiers,
                  args.images, args.gpus, args.launcher)
    result = estimate(costs, sweep)
    print(f"per-image costs from {args.profile} ({profile.get('machine', profile['config'].get('device'))}):")
    print(f"  clean pass {costs.clean_model * 1e3:.1f} ms, corrupted cell {costs.corrupted_model * 1e3:.1f} ms in "
          f"the models; {costs.host * 1e3:.1f} ms outside them; per cell {costs.cell_setup:.1f} s set-up; process "
          f"start {costs.process_start:.1f} s; {costs.bytes_per_image_cell / 1e3:.0f} kB per image and cell, "
          f"{costs.clean_cache_bytes_per_image / 1e3:.0f} kB clean cache per image")
    print(f"{result['cells']} cells ({sweep.corruptions} corruptions x severities {args.severities} x "
          f"{sweep.classifiers} classifiers) x {sweep.images:,} images on {result['devices']} device(s), "
          f"{sweep.launcher}:")
    print(f"  wall {result['wall_hours']:.2f} h, {result['device_hours']:.1f} device-hours, disk "
          f"{result['disk_gb']:.1f} GB, models {result['model_share']:.0%} of the device time")
    if args.out:
        args.out.write_text(json.dumps({"costs": vars(costs), "sweep": vars(sweep), "estimate": result},
                                       indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
