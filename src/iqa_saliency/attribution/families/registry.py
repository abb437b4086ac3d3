"""The family registry and the two ways a layer output becomes a (B, C, h, w) grid."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ...errors import ConfigError


@dataclass(frozen=True)
class Family:
    """A model family: how to recognise its network, its default layer, how a layer output becomes a grid."""

    name: str
    matches: Callable[[nn.Module], bool]  # True for the family's network module
    default_layer: Callable[[nn.Module], str]  # a path below that module
    # (the network, the layer output) -> (B, C, h, w); None: outputs are (B, C, h, w) already
    to_grid: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None


FAMILIES: list[Family] = []


def register_family(family: Family) -> Family:
    """Add a family (a module under attribution/families calls this once)."""
    FAMILIES.append(family)
    return family


@dataclass(frozen=True)
class Match:
    """The family of the network found inside a (possibly wrapped) model, and that network's path."""

    family: Family
    prefix: str  # '' or 'net.' ...
    network: nn.Module


def find_family(model: nn.Module) -> Match | None:
    """The first family that claims `model` or one of its submodules (outermost first)."""
    for name, module in model.named_modules():
        for family in FAMILIES:
            if family.matches(module):
                return Match(family, f"{name}." if name else "", module)
    return None


def tokens_to_grid(tokens: torch.Tensor, prefix_tokens: int, grid: tuple[int, int]) -> torch.Tensor:
    """(B, N, C) tokens -> (B, C, h, w): the first `prefix_tokens` (class, distillation, registers) dropped, the
    rest read row-major onto the patch grid (pytorch-grad-cam's reshape_transform for ViTs)."""
    if tokens.ndim != 3:
        raise ConfigError(f"A token layer's output has shape {tuple(tokens.shape)}, not (B, N, C). Set "
                          "attribution.options.layer to a transformer block's output or norm.")
    h, w = grid
    patches = tokens[:, prefix_tokens:, :]
    if patches.shape[1] != h * w:
        raise ConfigError(f"The layer has {patches.shape[1]} patch tokens, not the model's {h}x{w} grid. Set "
                          "attribution.options.layer to a layer inside the transformer blocks.")
    return patches.reshape(tokens.shape[0], h, w, tokens.shape[2]).permute(0, 3, 1, 2)


def channels_last_to_grid(out: torch.Tensor) -> torch.Tensor:
    """(B, h, w, C) -> (B, C, h, w) (timm's Swin stages keep channels last)."""
    if out.ndim != 4:
        raise ConfigError(f"The layer's output has shape {tuple(out.shape)}, not (B, h, w, C). Set "
                          "attribution.options.layer to a stage (layers.N) of the model.")
    return out.permute(0, 3, 1, 2)
