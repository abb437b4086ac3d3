"""Mutation testing of the modules that compute reported numbers (mutmut 3), one module at a time.

    python scripts/mutation.py                  # every module of scripts/mutation.toml (make mutation)
    python scripts/mutation.py similarity       # some of them (make mutation-quick runs similarity)
    python scripts/mutation.py --list-survivors # also print each surviving mutant's diff

Each module runs in its own scratch folder (a copy of src/, tests/ and pyproject.toml with a generated
[tool.mutmut] section), so the checkout is never touched and each module's mutants run only that module's fast
tests. Prints one line per module (mutants, killed, survived, equivalent, score) and exits 1 when a module
scores below min_score or a surviving mutant is neither killed nor listed as equivalent in scripts/mutation.toml
(a module with `gate = false`, whose survivors are not reviewed yet, is reported without failing the run).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from fnmatch import fnmatch
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "scripts" / "mutation.toml"


def _toml_list(values: list[str]) -> str:
    return "[" + ", ".join(json.dumps(v) for v in values) + "]"


def prepare(workdir: Path, source: str, tests: list[str]) -> None:
    """A scratch copy with a pyproject whose [tool.mutmut] mutates `source` and runs `tests`."""
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")
    shutil.copytree(ROOT / "src", workdir / "src", ignore=ignore)
    shutil.copytree(ROOT / "tests", workdir / "tests", ignore=ignore)
    pyproject = (ROOT / "pyproject.toml").read_text()
    pyproject = re.sub(r"(?ms)^\[tool\.mutmut\].*?(?=^\[|\Z)", "", pyproject)  # ours replaces any checked-in one
    pyproject += "\n[tool.mutmut]\n" + "\n".join([
        'source_paths = ["src"]',
        f"only_mutate = {_toml_list([source])}",
        f"pytest_add_cli_args_test_selection = {_toml_list(tests)}",
        'pytest_add_cli_args = ["-p", "no:cacheprovider", "-q", "-x", "-m", "not slow"]',
        "use_git_change_detection = false",
    ]) + "\n"
    (workdir / "pyproject.toml").write_text(pyproject)


def module_name(source: str) -> str:
    parts = Path(source).with_suffix("").parts
    parts = parts[1:] if parts[0] == "src" else parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def run_module(name: str, spec: dict, workdir: Path, max_children: int) -> dict[str, str]:
    """mutant name -> status for the module's mutants in scope."""
    prepare(workdir, spec["source"], spec["tests"])
    patterns = [f"{module_name(spec['source'])}.{p}" for p in spec.get("functions", ["*"])]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("MKL_NUM_THREADS", "1")
    cmd = [sys.executable, "-m", "mutmut", "run", "--max-children", str(max_children), *patterns]
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"{name}: mutmut run failed (exit {proc.returncode})")
    out = subprocess.run([sys.executable, "-m", "mutmut", "results", "--all", "true"], cwd=workdir, env=env,
                         capture_output=True, text=True, check=True).stdout
    statuses = {}
    for line in out.splitlines():
        key, _, status = line.strip().partition(": ")
        if key and any(fnmatch(key, p) for p in patterns):
            statuses[key] = status
    return statuses


def show(workdir: Path, mutant: str) -> str:
    return subprocess.run([sys.executable, "-m", "mutmut", "show", mutant], cwd=workdir, capture_output=True,
                          text=True).stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("modules", nargs="*", help="module names from scripts/mutation.toml (default: all)")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "iqa-saliency-mutation")
    parser.add_argument("--max-children", type=int, default=max(1, (os.cpu_count() or 2)))
    parser.add_argument("--list-survivors", action="store_true", help="print the diff of every surviving mutant")
    args = parser.parse_args(argv)
    config = tomllib.loads(CONFIG.read_text())
    modules = config["modules"]
    unknown = [m for m in args.modules if m not in modules]
    if unknown:
        parser.error(f"unknown module(s) {unknown}; known: {', '.join(modules)}")
    equivalent = config.get("equivalent", {})
    failed = False
    totals = {"mutants": 0, "killed": 0, "equivalent": 0}
    print(f"{'module':<18} {'mutants':>7} {'killed':>6} {'survived':>8} {'equivalent':>10} {'other':>5} {'score':>7}")
    for name in args.modules or list(modules):
        workdir = args.workdir / name
        statuses = run_module(name, modules[name], workdir, args.max_children)
        killed = [m for m, s in statuses.items() if s == "killed"]
        survived = [m for m, s in statuses.items() if s != "killed"]
        listed = [m for m in survived if m in equivalent]
        unlisted = [m for m in survived if m not in equivalent]
        considered = len(statuses) - len(listed)
        score = len(killed) / considered if considered else 1.0
        other = sum(1 for m in survived if statuses[m] != "survived")
        print(f"{name:<18} {len(statuses):>7} {len(killed):>6} {len(survived):>8} {len(listed):>10} {other:>5} "
              f"{100 * score:>6.1f}%", flush=True)
        totals["mutants"] += len(statuses)
        totals["killed"] += len(killed)
        totals["equivalent"] += len(listed)
        for m in unlisted:
            print(f"    not killed, not listed as equivalent: {m} ({statuses[m]})")
            if args.list_survivors:
                print(show(workdir, m))
        if not modules[name].get("gate", True):  # in scope, survivors not reviewed yet: reported, not gating
            print(f"    {name}: not gating (gate = false in scripts/mutation.toml)")
        elif score < config.get("min_score", 0.9) or unlisted:
            failed = True
    considered = totals["mutants"] - totals["equivalent"]
    if considered:
        print(f"{'all':<18} {totals['mutants']:>7} {totals['killed']:>6} {'':>8} {totals['equivalent']:>10} {'':>5} "
              f"{100 * totals['killed'] / considered:>6.1f}%")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
