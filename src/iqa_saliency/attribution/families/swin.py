"""Swin (timm's SwinTransformer): stages output channels-last grids (B, h, w, C); default layer the last stage."""

from __future__ import annotations

from torch import nn

from .registry import Family, channels_last_to_grid, register_family


def _matches(module: nn.Module) -> bool:
    return type(module).__name__.startswith("SwinTransformer") and hasattr(module, "layers")


SWIN = register_family(Family("swin", _matches, lambda net: f"layers.{len(net.layers) - 1}",
                              lambda net, out: channels_last_to_grid(out)))
