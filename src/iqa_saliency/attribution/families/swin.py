"""Swin (timm's SwinTransformer and torchvision's swin_t/s/b): stages output channels-last grids (B, h, w, C); default
layer the last stage."""

from __future__ import annotations

from torch import nn

from .registry import Family, channels_last_to_grid, register_family


def _matches(module: nn.Module) -> bool:
    return type(module).__name__.startswith("SwinTransformer") and (hasattr(module, "layers")
                                                                     or hasattr(module, "features"))


def _default_layer(net: nn.Module) -> str:
    if hasattr(net, "layers"):  # timm
        return f"layers.{len(net.layers) - 1}"
    return f"features.{len(net.features) - 1}"  # torchvision: stages and patch mergings alternate, a stage last


SWIN = register_family(Family("swin", _matches, _default_layer,
                              lambda net, out: channels_last_to_grid(out)))
