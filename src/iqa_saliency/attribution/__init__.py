"""Attribution methods (captum) behind one registry and one signature: attribute(inputs, target) -> (B, H, W)."""

from . import layer, pixel, rollout  # noqa: F401  (registers the methods)
from .base import AttributionMethod, LayerAttributionMap, PixelAttribution, make_baseline, reduce_channels
from .registry import (
    ATTRIBUTION_METHODS,
    attribution_names,
    build_attribution,
    check_attribution,
    check_attribution_name,
    method_defaults,
)
from .surgery import separate_relus

__all__ = [
    "ATTRIBUTION_METHODS", "AttributionMethod", "LayerAttributionMap", "PixelAttribution", "attribution_names",
    "build_attribution", "check_attribution", "check_attribution_name", "make_baseline", "method_defaults",
    "reduce_channels", "separate_relus",
]
