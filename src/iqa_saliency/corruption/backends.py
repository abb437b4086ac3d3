"""Which backend corrupts a cell: numpy (imagecorruptions in the DataLoader workers) or torch (batched on the
trainer's device, corruption.torch_backend), with the reason whenever the one asked for does not run it."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..errors import ConfigError
from . import backend_version, is_clean

log = logging.getLogger(__name__)

BACKENDS = ("numpy", "torch")
# Ported, and faithful, but slower than the numpy reference in two worker processes on a CPU (benchmarks.corruption
# --speed: 0.33-0.80x); on a CPU device these cells run on numpy. The study's seven, gaussian_blur and snow are
# faster in torch.
SLOWER_ON_CPU = frozenset({"gaussian_noise", "speckle_noise", "impulse_noise", "fog", "elastic_transform",
                           "pixelate"})


@dataclass(frozen=True)
class BackendChoice:
    """The backend asked for, the one that runs the cell, and why they differ (empty when they do not)."""

    requested: str
    used: str
    reason: str = ""

    def as_dict(self) -> dict[str, str]:
        """What summary.json records (corruption_backend), with the reference's version."""
        out = {"requested": self.requested, "used": self.used}
        if self.reason:
            out["reason"] = self.reason
        out["imagecorruptions"] = backend_version()
        return out


def choose_backend(requested: str, name: str, severity: int, device_type: str) -> BackendChoice:
    """The backend that corrupts `name` at `severity` on a trainer device of `device_type` ("cpu", "cuda", ...).

    torch runs every name the torch backend supports, except SLOWER_ON_CPU on a CPU; other names fall back to
    numpy (logged once per cell). A clean cell corrupts nothing ("none").
    """
    if requested not in BACKENDS:
        raise ConfigError(f"corruption_backend={requested!r} is not valid. Use corruption_backend=numpy or torch.")
    if is_clean(name, severity):
        return BackendChoice(requested, "none", "clean cell: nothing to corrupt")
    if requested == "numpy":
        return BackendChoice(requested, "numpy")
    from .torch_backend import supports_torch

    if not supports_torch(name):
        choice = BackendChoice(requested, "numpy", f"{name} has no torch port (imagecorruptions per image)")
    elif name in SLOWER_ON_CPU and device_type == "cpu":
        choice = BackendChoice(requested, "numpy", f"{name}'s torch port is slower than numpy on a CPU device")
    else:
        return BackendChoice(requested, "torch")
    log.info("corruption_backend=torch: %s runs on numpy (%s).", name, choice.reason)
    return choice
