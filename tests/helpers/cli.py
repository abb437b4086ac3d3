"""Running the entry points as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_cli(script: str, *overrides: str, cwd: Path = ROOT, timeout: int = 600, tests_importable: bool = False
            ) -> subprocess.CompletedProcess:
    """Run an entry point (evaluate.py/train.py) in a fresh interpreter, as a user would; `tests_importable` puts
    tests/ on the child's PYTHONPATH, for configs whose _target_ is a test helper."""
    env = {**os.environ, "WANDB_SILENT": "true", "HYDRA_FULL_ERROR": "0", "PYTHONUNBUFFERED": "1"}
    if tests_importable:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "tests"), env.get("PYTHONPATH")) if p)
    return subprocess.run([sys.executable, str(ROOT / script), *overrides], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _no_constant(name: str) -> None:
    raise ValueError(f"non-standard JSON constant {name}")


def read_strict_json(folder: Path) -> dict[Path, object]:
    """Every *.json file below `folder`, parsed as strict JSON (NaN, Infinity and -Infinity refused)."""
    return {path: json.loads(path.read_text(), parse_constant=_no_constant) for path in sorted(folder.rglob("*.json"))}
