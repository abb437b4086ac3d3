"""Shared fixtures: small generated image folders. Helper functions live in tests/helpers/."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.images import make_image


@pytest.fixture
def class_folder(tmp_path: Path) -> Path:
    """A class-per-subfolder dataset: two classes, two images each."""
    root = tmp_path / "data"
    for c, name in enumerate(["alpha", "beta"]):
        for i in range(2):
            make_image(root / name / f"img{i}.png", seed=10 * c + i)
    return root
