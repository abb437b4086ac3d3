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


def pytest_configure(config: pytest.Config) -> None:
    import os

    if os.environ.get("PYTEST_XDIST_WORKER"):
        # make test-fast runs one worker per core (pytest-xdist): torch's default of one thread per core in each
        # worker would oversubscribe the cores. Subprocesses the tests start keep torch's own default.
        import torch

        torch.set_num_threads(1)
    config.addinivalue_line("markers", "cuda: needs a CUDA device (skipped without one; IQA_REQUIRE_CUDA=1, as "
                            "make gpu-check sets on a GPU, fails instead)")


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Tests marked `cuda` skip without a CUDA device, or fail with IQA_REQUIRE_CUDA=1 (make gpu-check on a GPU),
    so a GPU run whose torch cannot see the device does not pass by skipping everything."""
    if item.get_closest_marker("cuda") is None:
        return
    import os

    import torch

    if torch.cuda.is_available():
        return
    if os.environ.get("IQA_REQUIRE_CUDA") == "1":
        pytest.fail("IQA_REQUIRE_CUDA=1 but torch sees no CUDA device (check the driver and torch's CUDA build)")
    pytest.skip("needs a CUDA device")
