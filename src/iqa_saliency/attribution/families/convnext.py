"""ConvNeXt (timm's and torchvision's): (B, C, h, w) stages; default layer the last stage."""

from __future__ import annotations

from torch import nn

from .registry import Family, register_family


def _matches(module: nn.Module) -> bool:
    return type(module).__name__ == "ConvNeXt" and (hasattr(module, "stages") or hasattr(module, "features"))


def _default_layer(net: nn.Module) -> str:
    if hasattr(net, "stages"):  # timm
        return f"stages.{len(net.stages) - 1}"
    return f"features.{len(net.features) - 1}"  # torchvision: the last stage of blocks


CONVNEXT = register_family(Family("convnext", _matches, _default_layer))
