"""Attribution methods by name: register, list, check options against the constructors, build."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from .base import AttributionMethod

ATTRIBUTION_METHODS: dict[str, type[AttributionMethod]] = {}


def register(name: str) -> Callable[[type[AttributionMethod]], type[AttributionMethod]]:
    """Class decorator adding a method to the registry under `name`."""

    def wrap(cls: type[AttributionMethod]) -> type[AttributionMethod]:
        ATTRIBUTION_METHODS[name] = cls
        cls.name = name
        return cls

    return wrap


def attribution_names() -> list[str]:
    """Registered method names."""
    return sorted(ATTRIBUTION_METHODS)


def general_methods() -> list[str]:
    """Registered methods that explain any model (not those tied to a family, such as attention rollout)."""
    return sorted(n for n, cls in ATTRIBUTION_METHODS.items() if cls.any_model)


def check_attribution_name(name: str) -> None:
    """Raise ConfigError for an unregistered method name."""
    if name not in ATTRIBUTION_METHODS:
        raise ConfigError(f"Unknown attribution method '{name}'. Use one of: {', '.join(attribution_names())}.")


def method_defaults(name: str) -> dict[str, Any]:
    """A method's options and their defaults (what its conf/attribution/<name>.yaml should list)."""
    check_attribution_name(name)
    params = inspect.signature(ATTRIBUTION_METHODS[name].__init__).parameters
    return {k: p.default for k, p in params.items() if k not in ("self", "model")}


def check_attribution(name: str, options: dict[str, Any], key: str = "attribution.options") -> None:
    """Raise ConfigError for an unknown method, option or option value, before any model is built.

    The values are checked by the method's own constructor on a small stand-in network; only `layer`, which
    names a module of the real model, is left to build_attribution.
    """
    check_attribution_name(name)
    unknown = sorted(set(options) - set(method_defaults(name)))
    if unknown:
        raise ConfigError(f"{name} has no option {', '.join(unknown)}. Use {key} keys from: "
                          f"{', '.join(method_defaults(name))}.")
    values = {k: v for k, v in options.items() if k != "layer"}
    method = ATTRIBUTION_METHODS[name]
    check = getattr(method, "check_options", None)  # a method that only fits some models checks values alone
    if check is not None:
        check(**values)
    else:
        method(_stand_in(), **values)


def _stand_in() -> nn.Module:
    """A tiny convolutional classifier to construct methods on (construction only; nothing runs through it).

    Built under a forked RNG: checking options must not move the caller's random stream."""
    with torch.random.fork_rng(devices=[]):
        return nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 2))


def build_attribution(name: str, model: nn.Module, **options: Any) -> AttributionMethod:
    """Instantiate a registered method for `model` with its options."""
    check_attribution(name, options)
    method = ATTRIBUTION_METHODS[name](model, **options)
    bind = getattr(method, "bind", None)  # model-specific checks (e.g. attention rollout needs a ViT)
    if bind is not None:
        bind()
    return method
