"""Classifiers from timm (`classifier=timm classifier.name=vit_base_patch16_224`): any timm model by name, its
weights through timm's own loading from the Hugging Face hub cache (or its release URL in the torch hub cache).

timm is imported only here and only when such a classifier is asked for (pip install 'iqa-saliency[zoo]').
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ..errors import ConfigError, WeightsUnavailableError
from .extras import require
from .weights import WeightsIdentity, fetch_weights, sha256_file

TIMM_PREFIX = "timm/"
DEFAULT_TAG = "default"  # classifier.weights=default: timm's default pretrained tag for the model
HF_FILES = ("model.safetensors", "pytorch_model.bin")


def is_timm_arch(arch: str) -> bool:
    """True for an arch string naming a timm model (timm/<name>)."""
    return str(arch).startswith(TIMM_PREFIX)


def timm_name(arch: str) -> str:
    """The timm model name of a timm/<name> arch."""
    return str(arch)[len(TIMM_PREFIX):]


def _timm() -> Any:
    return require("timm", "classifier=timm")


def check_timm_name(name: str) -> None:
    """Raise ConfigError for a name timm does not know (checked before any model is built)."""
    timm = _timm()
    if not name or not timm.is_model(name):
        close = timm.list_models(f"*{str(name).split('.')[0].split('_')[0]}*")[:5] if name else []
        hint = f" such as {', '.join(close)}" if close else " from timm.list_models()"
        raise ConfigError(f"Unknown timm model '{name}'. Set classifier.name to a timm model name{hint}.")


def build_timm_network(name: str, num_classes: int | None = None) -> nn.Module:
    """An untrained timm model (random init as timm does it), with `num_classes` outputs if given."""
    check_timm_name(name)
    kwargs = {} if num_classes is None else {"num_classes": int(num_classes)}
    return _timm().create_model(name, pretrained=False, **kwargs)


def input_stats(net: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The mean/std a timm model's weights expect (its pretrained config), for NormalizedClassifier."""
    cfg = getattr(net, "pretrained_cfg", None) or {}
    return tuple(cfg.get("mean", (0.485, 0.456, 0.406))), tuple(cfg.get("std", (0.229, 0.224, 0.225)))


def _full_name(name: str, tag: str | None) -> str:
    if tag and tag != DEFAULT_TAG:
        return f"{name.split('.')[0]}.{tag}"
    return name


def fetch_timm_weights(name: str, tag: str | None = None, download: bool = True) -> tuple[Path, str, str]:
    """(local file, sha256, source) of a timm model's pretrained weights: the Hugging Face hub cache (downloaded
    there when the network allows) or the release URL in the torch hub cache."""
    timm = _timm()
    full = _full_name(name, tag)
    check_timm_name(full)
    cfg = timm.models.get_pretrained_cfg(full)
    if cfg is None:
        raise ConfigError(f"timm has no pretrained weights '{full}'. Set classifier.weights to one of the model's "
                          f"tags ({', '.join(timm.list_pretrained(name.split('.')[0] + '.*')) or 'none'}) or "
                          "pretrained=false.")
    fix = "Put the file in that cache, set classifier.checkpoint=PATH to a local copy, or pretrained=false"
    if cfg.hf_hub_id:
        hub = require("huggingface_hub", "classifier=timm")
        files = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else HF_FILES
        for filename in files:  # the cache first: offline, no network retries
            try:
                path = hub.hf_hub_download(cfg.hf_hub_id, filename, local_files_only=True)
                return Path(path), sha256_file(path), f"hf://{cfg.hf_hub_id}/{filename}"
            except Exception:  # noqa: BLE001  (not cached: try the next file, then the network)
                continue
        if download:
            try:
                path = hub.hf_hub_download(cfg.hf_hub_id, files[0])
                return Path(path), sha256_file(path), f"hf://{cfg.hf_hub_id}/{files[0]}"
            except Exception as exc:  # noqa: BLE001
                if not cfg.url:
                    raise WeightsUnavailableError(
                        f"timm weights '{full}' ({cfg.hf_hub_id}/{files[0]}) are not in the Hugging Face cache "
                        f"({hub.constants.HF_HUB_CACHE}) and could not be downloaded ({type(exc).__name__}). "
                        f"{fix}.") from exc
    if cfg.url:
        path, digest = fetch_weights(cfg.url, None, "classifier.checkpoint", download=download)
        return path, digest, cfg.url
    raise WeightsUnavailableError(f"timm weights '{full}' are not cached ({cfg.hf_hub_id}). {fix}.")


def pretrained_timm_network(name: str, tag: str | None = None, download: bool = True
                            ) -> tuple[nn.Module, WeightsIdentity]:
    """A timm model with its pretrained weights, loaded by timm itself (its filters and remapping) from the file."""
    path, digest, source = fetch_timm_weights(name, tag, download)
    full = _full_name(name, tag)
    net = _timm().create_model(full, pretrained=True, pretrained_cfg_overlay={"file": str(path)})
    return net, WeightsIdentity(f"{TIMM_PREFIX}{full}", source, digest)
