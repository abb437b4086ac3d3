"""Model-parameter randomisation test (Adebayo et al., NeurIPS 2018): do the attribution maps depend on the weights?

The classifier's layers are re-initialised cumulatively from the output down (fc, then layer4, ...); after each
step every method's maps are recomputed for the same images and targets and compared with the original maps.
A method whose maps stay similar after the whole network is random explains the input, not the model.
"""

from __future__ import annotations

import copy
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr
from skimage.metrics import structural_similarity
from torch import nn

from ..attribution.registry import build_attribution
from ..data.images import prepare_image
from ..data.sources import ImageSource
from ..errors import ConfigError
from ..io.atomic import atomic_write_text

COLUMNS = ["method", "step", "layer", "randomized", "spearman_abs", "spearman_abs_std", "ssim", "ssim_std",
           "n_images"]


@dataclass
class RandomizationResult:
    """One row per (method, step), step 0 the original model, and the methods flagged as insensitive."""

    rows: list[dict[str, Any]]
    flagged: list[str] = field(default_factory=list)
    layers: list[str] = field(default_factory=list)


def _has_parameters(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def cascade_layers(model: nn.Module) -> list[str]:
    """Top-level layers that hold parameters, output side first (fc, layer4, ..., bn1, conv1 for a ResNet).

    Wrappers with a single parameterised child (e.g. the normalising classifier wrapper) are looked through.
    """
    root, prefix = model, ""
    while True:
        children = [(n, c) for n, c in root.named_children() if _has_parameters(c)]
        if len(children) != 1 or not any(_has_parameters(c) for c in children[0][1].children()):
            break
        name, root = children[0]
        prefix += name + "."
    if not children:
        raise ConfigError("The classifier has no layers with parameters to randomise. Use a torchvision classifier.")
    return [prefix + n for n, _ in reversed(children)]


def randomize_(module: nn.Module, seed: int) -> None:
    """Re-initialise every parameter (and normalisation statistics) of `module` in place, as at construction."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for sub in module.modules():
            if hasattr(sub, "reset_parameters"):
                sub.reset_parameters()
            if hasattr(sub, "reset_running_stats"):
                sub.reset_running_stats()


def load_images(source: ImageSource, max_images: int, resize: int | None, crop: int | None) -> torch.Tensor:
    """The first `max_images` images of `source`, prepared as the pipeline does, as a (B, 3, H, W) batch in [0, 1]."""
    arrays = [np.asarray(prepare_image(source.load(r), resize, crop)) for r in source.records[:max_images]]
    if len({a.shape for a in arrays}) > 1:
        raise ConfigError("The images differ in size and cannot be batched. Set dataset.crop to a size such as 224.")
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div_(255.0)


def _spearman_abs(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.abs(a).ravel(), np.abs(b).ravel()
    if a.std() == 0 or b.std() == 0:
        return math.nan
    return float(spearmanr(a, b).statistic)


def _ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of the two maps, each min-max scaled to [0, 1] (NaN if either is constant)."""
    scaled = []
    for m in (a, b):
        lo, hi = float(m.min()), float(m.max())
        if hi <= lo:
            return math.nan
        scaled.append((m - lo) / (hi - lo))
    return float(structural_similarity(scaled[0], scaled[1], data_range=1.0))


def _stats(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[~np.isnan(arr)]
    if not arr.size:
        return math.nan, math.nan
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else math.nan


def _maps(name: str, model: nn.Module, options: dict[str, Any], x: torch.Tensor, target: torch.Tensor,
          batch_size: int) -> np.ndarray:
    method = build_attribution(name, model, **options)
    out = []
    for start in range(0, len(x), batch_size):
        with torch.enable_grad():
            chunk = x[start:start + batch_size].detach().requires_grad_(True)
            out.append(method.attribute(chunk, target[start:start + batch_size]).detach().float().cpu())
    return torch.cat(out).numpy()


def run_randomization(
    model: nn.Module,
    images: torch.Tensor,
    methods: dict[str, dict[str, Any]],
    layers: Sequence[str] | None = None,
    seed: int = 0,
    flag_spearman: float = 0.5,
    batch_size: int = 8,
) -> RandomizationResult:
    """Randomise `model` cumulatively from the top; per method and step, the maps' similarity to the original."""
    model = model.eval()
    layers = list(layers) if layers else cascade_layers(model)
    for layer in layers:
        try:
            model.get_submodule(layer)
        except AttributeError as exc:
            raise ConfigError(f"The classifier has no layer '{layer}'. Set check.layers to names from: "
                              f"{', '.join(cascade_layers(model))}.") from exc
    device = next(model.parameters()).device
    x = images.to(device)
    with torch.no_grad():
        target = model(x).argmax(dim=1)  # the original model's predictions, explained at every step
    rows: list[dict[str, Any]] = []
    flagged = []
    for name, options in methods.items():
        original = _maps(name, model, options, x, target, batch_size)
        twin = copy.deepcopy(model)
        rows.append({"method": name, "step": 0, "layer": "", "randomized": "none", "spearman_abs": 1.0,
                     "spearman_abs_std": 0.0, "ssim": 1.0, "ssim_std": 0.0, "n_images": len(x)})
        for step, layer in enumerate(layers, start=1):
            randomize_(twin.get_submodule(layer), seed * 1000 + step)
            maps = _maps(name, twin, options, x, target, batch_size)
            rho = _stats([_spearman_abs(o, m) for o, m in zip(original, maps, strict=True)])
            ssim = _stats([_ssim(o, m) for o, m in zip(original, maps, strict=True)])
            rows.append({"method": name, "step": step, "layer": layer,
                         "randomized": "+".join(n.split(".")[-1] for n in layers[:step]),
                         "spearman_abs": rho[0], "spearman_abs_std": rho[1], "ssim": ssim[0], "ssim_std": ssim[1],
                         "n_images": len(x)})
        final = rows[-1]["spearman_abs"]
        if not math.isnan(final) and final >= flag_spearman:
            flagged.append(name)
    return RandomizationResult(rows, flagged, layers)


def write_table(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """The per-(method, step) table as CSV, written atomically."""
    from ..io.atomic import format_value
    from ..io.csv_safe import SafeWriter

    buf = io.StringIO()
    writer = SafeWriter(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow([format_value(row[c]) for c in COLUMNS])
    atomic_write_text(path, buf.getvalue())
