"""How long the entry points take to answer when no work is done: --help, --cfg job, a bad value, tab completion.

    python -m benchmarks.startup                    # 5 runs of each case, median; Markdown table, JSON with --out
    python -m benchmarks.startup --repeats 9 --out docs/benchmarks/startup.json

Each case is a fresh interpreter started in an empty temporary folder (a bad value must leave nothing there), timed
from start to exit. `--modules` instead lists, per case, the heavy modules the case imported (none expected:
tests/cli/test_startup.py runs the same probe).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Imported by a run's work, never by answering a question about its configuration.
HEAVY = ("torch", "torchvision", "pytorch_lightning", "lightning_fabric", "lightning", "captum", "wandb",
         "matplotlib", "pandas", "scipy", "skimage", "cv2", "imagecorruptions", "numba", "timm", "pyiqa", "zarr")


@dataclass(frozen=True)
class Case:
    """One command: an entry point, its arguments, and extra environment (shell completion's COMP_LINE)."""

    name: str
    script: str
    args: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    exit_code: int = 0


CASES = (
    Case("evaluate.py --help", "evaluate.py", ("--help",)),
    Case("evaluate.py --cfg job", "evaluate.py", ("--cfg", "job")),
    Case("evaluate.py severity=9 (bad value)", "evaluate.py", ("severity=9",), exit_code=2),
    Case("evaluate.py corruption=motion_blurr (bad value)", "evaluate.py", ("corruption=motion_blurr",), exit_code=2),
    Case("evaluate.py -m severity=4,9 (bad value in a sweep)", "evaluate.py", ("-m", "severity=9,4"), exit_code=2),
    Case("evaluate.py tab completion of corruption=", "evaluate.py", ("-sc", "query=bash"),
         {"COMP_LINE": "python evaluate.py corruption="}),
    Case("evaluate.py tab completion of a group (dataset=)", "evaluate.py", ("-sc", "query=bash"),
         {"COMP_LINE": "python evaluate.py dataset="}),
    Case("train.py --help", "train.py", ("--help",)),
    Case("train.py seed=-1 (bad value)", "train.py", ("seed=-1",), exit_code=2),
)
REFERENCE = Case("python -c 'import pytorch_lightning' (what each case paid before)", "", ())

# Runs a case's entry point in this interpreter and writes the heavy modules it imported to the file in argv[1].
_PROBE = """
import atexit, json, runpy, sys
out, script = sys.argv[1], sys.argv[2]
heavy = set(sys.argv[3].split(','))
def report():
    with open(out, 'w') as fh:
        json.dump(sorted(m for m in sys.modules if m.split('.')[0] in heavy), fh)
atexit.register(report)
sys.argv = [script, *sys.argv[4:]]
runpy.run_path(script, run_name='__main__')
"""


def _command(case: Case) -> list[str]:
    if not case.script:
        return [sys.executable, "-c", "import pytorch_lightning"]
    return [sys.executable, str(ROOT / case.script), *case.args]


def _environment(case: Case) -> dict[str, str]:
    return {**os.environ, "HYDRA_FULL_ERROR": "0", **case.env}


def run_case(case: Case, cwd: Path) -> subprocess.CompletedProcess:
    """Run one case in `cwd`; raise if it does not end as the case expects."""
    proc = subprocess.run(_command(case), cwd=cwd, env=_environment(case), capture_output=True, text=True,
                          timeout=300)
    if proc.returncode != case.exit_code:
        raise RuntimeError(f"{case.name}: exit {proc.returncode}, expected {case.exit_code}\n{proc.stderr[-2000:]}")
    return proc


def heavy_modules(case: Case, cwd: Path) -> list[str]:
    """The heavy modules (HEAVY) loaded when `case` runs to its end in `cwd`."""
    out = cwd / ".modules.json"
    command = [sys.executable, "-c", _PROBE, str(out), str(ROOT / case.script), ",".join(HEAVY), *case.args]
    proc = subprocess.run(command, cwd=cwd, env=_environment(case), capture_output=True, text=True, timeout=300)
    if proc.returncode != case.exit_code:
        raise RuntimeError(f"{case.name}: exit {proc.returncode}, expected {case.exit_code}\n{proc.stderr[-2000:]}")
    names = json.loads(out.read_text())
    out.unlink()
    return names


def time_case(case: Case, repeats: int) -> list[float]:
    """Wall seconds of `repeats` fresh runs, each in its own empty folder."""
    seconds = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            run_case(case, Path(tmp))
            seconds.append(time.perf_counter() - start)
            left = sorted(p.name for p in Path(tmp).iterdir())
            if left:
                raise RuntimeError(f"{case.name} left {left} behind")
    return seconds


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> None:
    """Command line: time every case (or list their heavy imports) and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="fresh runs per case (the median is reported)")
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    parser.add_argument("--no-reference", action="store_true", help="skip timing `import pytorch_lightning`")
    parser.add_argument("--modules", action="store_true", help="list each case's heavy imports instead of timing")
    args = parser.parse_args(argv)
    if args.modules:
        with tempfile.TemporaryDirectory() as tmp:
            for case in CASES:
                print(f"{case.name}: {', '.join(heavy_modules(case, Path(tmp))) or 'none'}")
        return
    cases = CASES if args.no_reference else (*CASES, REFERENCE)
    results = {"commit": _commit(), "python": platform.python_version(), "cpus": os.cpu_count(),
               "load_average_at_start": list(os.getloadavg()), "repeats": args.repeats, "cases": []}
    print(f"commit {results['commit']}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, "
          f"median of {args.repeats} runs")
    print("| command | median s | min s | max s |")
    print("| --- | ---: | ---: | ---: |")
    for case in cases:
        seconds = time_case(case, args.repeats)
        median = statistics.median(seconds)
        results["cases"].append({"name": case.name, "command": [case.script, *case.args] if case.script
                                 else _command(case)[1:], "env": case.env,
                                 "seconds": seconds, "median": median})
        print(f"| {case.name} | {median:.2f} | {min(seconds):.2f} | {max(seconds):.2f} |", flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
