"""Quality models from pyiqa (`quality=pyiqa quality.metric=topiq_nr`): any no-reference metric pyiqa lists, its
weights through pyiqa's own loading (its cache folder), its score as MOS with the metric's direction, and a 20x20
quality map: the model's own spatial output where it has one (PaQ-2-PiQ's local scores in the project's RoIPool
model, PIQE's distortion masks), else an attribution of the score to the input pooled onto the grid.

pyiqa is imported only here and only when such a metric is asked for (pip install 'iqa-saliency[zoo]').
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, WeightsUnavailableError, find_in_chain
from .extras import require
from .paq2piq import GRID, ScoreNormalizer, load_paq2piq
from .weights import UNTRAINED, WeightsIdentity, fetch_weights, sha256_file

FIX = "set quality.checkpoint=PATH to a local copy, or pretrained=false for random weights"


def _pyiqa() -> Any:
    return require("pyiqa", "quality=pyiqa")


def nr_metric_names() -> list[str]:
    """The no-reference metrics pyiqa lists."""
    return list(_pyiqa().list_models(metric_mode="NR"))


def check_metric_name(metric: str) -> None:
    """Raise ConfigError for a name that is not one of pyiqa's no-reference metrics (before any model loads)."""
    names = nr_metric_names()
    if metric not in names:
        close = [n for n in names if n.split("-")[0].split("_")[0] in str(metric)][:5] or names[:8]
        raise ConfigError(f"'{metric}' is not a no-reference metric of pyiqa. Set quality.metric to one of "
                          f"pyiqa.list_models(metric_mode='NR'), e.g. {', '.join(close)}.")


def metric_config(metric: str) -> dict[str, Any]:
    """pyiqa's default configuration of a metric (options, direction, score range)."""
    from pyiqa.default_model_configs import DEFAULT_CONFIGS

    return DEFAULT_CONFIGS[metric]


@dataclass(frozen=True)
class RangeNormalizer(ScoreNormalizer):
    """A metric's score onto 0-100 by its nominal range (pyiqa's score_range), higher = better: a lower-is-better
    metric is turned round, so the quality categories keep their meaning."""

    low: float = 0.0
    high: float = 1.0
    lower_better: bool = False
    name: str = "score_range"

    def __call__(self, mos: torch.Tensor) -> torch.Tensor:
        scaled = (mos - self.low) / (self.high - self.low) * 100.0
        return (100.0 - scaled if self.lower_better else scaled).clamp(0.0, self.clip_max)


def range_normalizer(metric: str) -> RangeNormalizer:
    """The metric's normaliser from pyiqa's score_range ('~0, ~1', '1, 5', ...); 0-100 where it gives none."""
    cfg = metric_config(metric)
    bounds = [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?", str(cfg.get("score_range", "")))]
    low, high = (bounds[0], bounds[1]) if len(bounds) == 2 and bounds[1] > bounds[0] else (0.0, 100.0)
    return RangeNormalizer(low=low, high=high, lower_better=bool(cfg.get("lower_better", False)),
                           name=f"pyiqa:{metric}:score_range")


class PyiqaQuality(nn.Module):
    """A pyiqa metric as the project's quality model: forward -> (B, 1 + 20·20) = the score, then the quality map
    on the 20x20 grid (`split` separates them, as PaQ2PiQ.split)."""

    def __init__(self, metric: str, net: nn.Module, map_method: str = "saliency") -> None:
        super().__init__()
        self.metric = metric
        self.net = net
        self.map_method = map_method
        self.lower_better = bool(metric_config(metric).get("lower_better", False))
        self.score_normalizer = range_normalizer(metric)
        own = type(net).__name__ == "PIQE"
        self.map_kind = "model:piqe_distortion_masks" if own else f"attribution:{map_method}"

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1) scores, as pyiqa's InferenceModel computes them (the network on the [0, 1] input)."""
        return self.net(x).reshape(x.shape[0], -1)[:, :1].float()

    def _local(self, x: torch.Tensor) -> torch.Tensor:
        if self.map_kind.startswith("model:"):  # PIQE: noticeable-artifact and noise blocks, 1 where distorted
            masks = self.net.get_masks()
            damage = (masks["noticeable_artifacts_mask"].float() + masks["noise_mask"].float()).reshape(
                x.shape[0], 1, *masks["noise_mask"].shape[-2:])
            return F.adaptive_avg_pool2d(damage, GRID).flatten(1)
        from ..attribution.registry import build_attribution

        explainer = build_attribution(self.map_method, _Score(self))
        with torch.enable_grad():
            maps = explainer.attribute(x.detach().clone().requires_grad_(True), target=0).detach()
        return F.adaptive_avg_pool2d(maps[:, None].float(), GRID).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.score(x), self._local(x)], dim=1)

    @staticmethod
    def split(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(global (B,), local (B, 20, 20))."""
        return out[:, 0], out[:, 1:].reshape(-1, GRID, GRID)


class _Score(nn.Module):
    """The metric's score alone, (B, 1): the regression output an attribution method explains."""

    def __init__(self, quality: PyiqaQuality) -> None:
        super().__init__()
        self.quality = quality

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.quality.score(x)


@contextmanager
def _patched(patches: list[tuple[Any, str, Any]]) -> Iterator[None]:
    saved = [(obj, name, getattr(obj, name)) for obj, name, _ in patches]
    try:
        for obj, name, value in patches:
            setattr(obj, name, value)
        yield
    finally:
        for obj, name, value in saved:
            setattr(obj, name, value)


def _arch_module(metric: str) -> Any:
    """The module defining the metric's network (pyiqa imports its arch modules lazily)."""
    import pyiqa.archs as archs
    from pyiqa.utils.registry import ARCH_REGISTRY

    network = metric_config(metric)["metric_opts"]["type"]
    archs._lazy_import_arch(network)
    return sys.modules[ARCH_REGISTRY.get(network).__module__]


@contextmanager
def random_weights(metric: str) -> Iterator[None]:
    """Build a pyiqa network with no weights loaded at all (pretrained=false): its metric weights and the ImageNet
    backbones it would fetch (torchvision, timm) are left at their seeded random init, so nothing is downloaded."""
    from torchvision.models._api import WeightsEnum

    def fresh_state(self: Any, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        from torchvision import models as tvm

        return tvm.get_model(type(self).__name__.lower().removesuffix("_weights")).state_dict()

    patches: list[tuple[Any, str, Any]] = [(WeightsEnum, "get_state_dict", fresh_state)]
    timm = require("timm", "quality=pyiqa")
    patches.append((timm.models._builder, "load_pretrained", lambda *a, **k: None))
    module = _arch_module(metric)
    if hasattr(module, "load_pretrained_network"):
        patches.append((module, "load_pretrained_network", lambda *a, **k: None))
    with _patched(patches):
        yield


@contextmanager
def recorded_downloads(files: list[Path], download: bool) -> Iterator[None]:
    """pyiqa's weight fetching with the files it loads recorded (for their sha256); offline and uncached, one
    WeightsUnavailableError naming the file, pyiqa's cache folder and the fix."""
    import pyiqa.archs.arch_util as arch_util
    from pyiqa.utils.download_util import DEFAULT_CACHE_DIR

    original = arch_util.load_file_from_url

    def fetch(url: str, model_dir: str | None = None, progress: bool = True, file_name: str | None = None) -> str:
        folder = model_dir or DEFAULT_CACHE_DIR
        cached = Path(folder) / (file_name or os.path.basename(url.split("?")[0]))
        if not cached.is_file() and not download:
            raise WeightsUnavailableError(f"pyiqa weights '{cached.name}' are not in pyiqa's cache folder {folder}. "
                                          f"Copy the file there, or {FIX}.")
        try:
            path = original(url, model_dir=model_dir, progress=False, file_name=file_name)
        except Exception as exc:  # noqa: BLE001  (urllib/huggingface errors offline)
            raise WeightsUnavailableError(f"pyiqa weights '{cached.name}' are not in pyiqa's cache folder {folder} "
                                          f"and could not be downloaded ({type(exc).__name__}). Put the file "
                                          f"there, or {FIX}.") from exc
        files.append(Path(path))
        return path

    with _patched([(arch_util, "load_file_from_url", fetch)]):
        yield


def _create(metric: str, **kwargs: Any) -> nn.Module:
    """pyiqa's own create_metric on the CPU; its network (eval mode)."""
    try:
        return _pyiqa().create_metric(metric, device=torch.device("cpu"), **kwargs).net.eval()
    except WeightsUnavailableError:
        raise
    except Exception as exc:
        offline = find_in_chain(exc, (OSError, ConnectionError))
        if offline is None:
            raise
        raise WeightsUnavailableError(f"pyiqa's {metric} needs weights that are not cached and could not be "
                                      f"downloaded ({type(offline).__name__}: its backbone's ImageNet weights in the "
                                      f"torch hub or Hugging Face cache); {FIX}.") from exc


def load_pyiqa_quality(metric: str = "topiq_nr", checkpoint: str | None = None, sha256: str | None = None,
                       pretrained: bool = True, seed: int = 0, map_method: str = "saliency", download: bool = True
                       ) -> tuple[nn.Module, WeightsIdentity]:
    """conf/quality/pyiqa.yaml's target: (quality model, weights identity) for a pyiqa no-reference metric.

    metric=paq2piq runs pyiqa's PaQ-2-PiQ weights in the project's RoIPool model (its 20x20 local scores).
    `checkpoint`: a local weights file in the format pyiqa's network loads (its pretrained_model_path).
    """
    check_metric_name(metric)
    if metric == "paq2piq":
        from pyiqa.archs.paq2piq_arch import default_model_urls

        if pretrained and not checkpoint:
            files: list[Path] = []
            with recorded_downloads(files, download):
                import pyiqa.archs.arch_util as arch_util

                checkpoint = arch_util.load_file_from_url(default_model_urls["url"])
        return load_paq2piq(checkpoint=checkpoint, sha256=sha256, pretrained=pretrained, seed=seed)
    if not pretrained:
        with torch.random.fork_rng(devices=[]), random_weights(metric):
            torch.manual_seed(seed)
            net = _create(metric)
        return PyiqaQuality(metric, net, map_method).eval(), WeightsIdentity(UNTRAINED)
    files = []
    kwargs: dict[str, Any] = {}
    if checkpoint:
        path, _ = fetch_weights(str(checkpoint), sha256, "quality.checkpoint")
        kwargs["pretrained_model_path"] = str(path)
    with recorded_downloads(files, download):
        net = _create(metric, **kwargs)
    source = Path(kwargs["pretrained_model_path"]) if checkpoint else (files[-1] if files else None)
    if source is None:  # a classical metric: no learned weights
        return PyiqaQuality(metric, net, map_method).eval(), WeightsIdentity(f"pyiqa:{metric}")
    digest = sha256_file(source)
    if sha256 and not digest.startswith(sha256.lower()):
        raise WeightsUnavailableError(f"pyiqa weights '{source}' have sha256 {digest[:16]}…, expected "
                                      f"{sha256[:16]}…. Delete the file to download it again, or {FIX}.")
    return PyiqaQuality(metric, net, map_method).eval(), WeightsIdentity(f"pyiqa:{metric}", str(source), digest)
