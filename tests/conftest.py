"""Shared fixtures: small generated images and folders, and a runner for the evaluate.py CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def make_image(path: Path, size: tuple[int, int] = (96, 80), seed: int = 0, mode: str = "RGB") -> Path:
    """A smooth random RGB picture (width, height) saved at `path`."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([(xx * (3 + c) + yy * (5 - c) + rng.integers(0, 255)) % 256 for c in range(3)], axis=-1)
    noise = rng.integers(0, 40, size=(h, w, 3))
    array = np.clip(base + noise, 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).convert(mode).save(path)
    return path


@pytest.fixture
def class_folder(tmp_path: Path) -> Path:
    """A class-per-subfolder dataset: two classes, two images each."""
    root = tmp_path / "data"
    for c, name in enumerate(["alpha", "beta"]):
        for i in range(2):
            make_image(root / name / f"img{i}.png", seed=10 * c + i)
    return root


def run_cli(script: str, *overrides: str, cwd: Path = ROOT, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run an entry point (evaluate.py/train.py) in a fresh interpreter, as a user would."""
    env = {**os.environ, "WANDB_SILENT": "true", "HYDRA_FULL_ERROR": "0", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, str(ROOT / script), *overrides], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
