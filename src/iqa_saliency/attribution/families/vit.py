"""ViT and DeiT (timm's VisionTransformer and its distilled variant; torchvision's VisionTransformer): tokens
(B, 1 + h·w, C), default layer the last block's first norm (pytorch-grad-cam's choice for ViTs)."""

from __future__ import annotations

import torch
from torch import nn

from .registry import Family, register_family, tokens_to_grid


def is_timm_vit(module: nn.Module) -> bool:
    """timm VisionTransformer-like: patch embedding, a block list, prefix tokens counted."""
    return all(hasattr(module, a) for a in ("patch_embed", "blocks", "num_prefix_tokens"))


def _is_torchvision_vit(module: nn.Module) -> bool:
    return type(module).__name__ == "VisionTransformer" and hasattr(module, "conv_proj") and hasattr(module, "encoder")


def _matches(module: nn.Module) -> bool:
    return is_timm_vit(module) or _is_torchvision_vit(module)


def _default_layer(net: nn.Module) -> str:
    if is_timm_vit(net):
        return f"blocks.{len(net.blocks) - 1}.norm1"
    last = list(net.encoder.layers.named_children())[-1][0]  # torchvision names its blocks encoder_layer_N
    return f"encoder.layers.{last}.ln_1"


def _grid(net: nn.Module) -> tuple[int, int]:
    if is_timm_vit(net):
        return tuple(net.patch_embed.grid_size)
    side = net.image_size // net.patch_size
    return side, side


def _to_grid(net: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    prefix = int(net.num_prefix_tokens) if is_timm_vit(net) else 1
    return tokens_to_grid(tokens, prefix, _grid(net))


VIT = register_family(Family("vit", _matches, _default_layer, _to_grid))
