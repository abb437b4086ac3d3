"""Attention rollout (Abnar & Zuidema 2020) for ViT-family models: how much each patch token flows into the class
token through all attention layers, as a map over the patch grid upsampled to the input."""

from __future__ import annotations

from typing import Any

import torch
from captum.attr import LayerAttribution
from torch import nn

from ..errors import ConfigError
from .base import AttributionMethod, _check_choice
from .families import find_family
from .families.vit import is_timm_vit
from .registry import register

HEAD_FUSIONS = ("mean", "max", "min")


def rollout(attentions: list[torch.Tensor], head_fusion: str = "mean") -> torch.Tensor:
    """(B, N, N) rollout of per-layer attention (B, heads, N, N): heads fused, the residual added as 0.5·A + 0.5·I,
    rows renormalised, the layers multiplied from the first to the last."""
    fuse = {"mean": lambda a: a.mean(dim=1), "max": lambda a: a.amax(dim=1), "min": lambda a: a.amin(dim=1)}
    result = None
    for attention in attentions:
        a = fuse[head_fusion](attention.float())
        a = 0.5 * a + 0.5 * torch.eye(a.shape[-1], device=a.device, dtype=a.dtype)
        a = a / a.sum(dim=-1, keepdim=True)
        result = a if result is None else a @ result
    return result


@register("attention_rollout")
class AttentionRollout(AttributionMethod):
    """Attention rollout from the class token to the patches (class-agnostic: the target is not used).

    Needs a timm ViT/DeiT; the attention probabilities are read from each block's attention dropout (an identity in
    evaluation mode) with timm's fused attention switched off for the pass.
    """

    any_model = False

    def __init__(self, model: nn.Module, head_fusion: str = "mean", interpolate: str = "bilinear") -> None:
        _check_choice("head_fusion", head_fusion, HEAD_FUSIONS)
        _check_choice("interpolate", interpolate, ("bilinear", "nearest", "bicubic"))
        super().__init__(model, head_fusion=head_fusion, interpolate=interpolate)
        self.head_fusion = head_fusion
        self.interpolate = interpolate

    @classmethod
    def check_options(cls, **options: Any) -> None:
        """Option values only: the model family is checked when the method is built for the real model."""
        cls(None, **options)  # type: ignore[arg-type]

    def _network(self) -> nn.Module:
        match = find_family(self.model)
        if match is None or not is_timm_vit(match.network):
            raise ConfigError("attention_rollout needs a timm ViT/DeiT classifier (classifier=timm "
                              "classifier.name=vit_base_patch16_224). Use attribution=gradcam for this model.")
        return match.network

    def bind(self) -> None:
        """Raise ConfigError now if the model is not a ViT (called when the method is built)."""
        self._network()

    def token_map(self, inputs: torch.Tensor) -> torch.Tensor:
        """(B, 1, h, w): the class token's row of the rollout over the patch tokens."""
        net = self._network()
        attentions: list[torch.Tensor] = []
        handles, fused = [], []
        for block in net.blocks:
            attn = block.attn
            fused.append(getattr(attn, "fused_attn", False))
            attn.fused_attn = False
            handles.append(attn.attn_drop.register_forward_hook(lambda _m, _i, out: attentions.append(out)))
        try:
            with torch.no_grad():
                self.model(inputs)
        finally:
            for handle in handles:
                handle.remove()
            for block, was in zip(net.blocks, fused, strict=True):
                block.attn.fused_attn = was
        prefix = int(net.num_prefix_tokens)
        h, w = net.patch_embed.grid_size
        flow = rollout(attentions, self.head_fusion)[:, 0, prefix:]
        return flow.reshape(-1, 1, h, w)

    def attribute(self, inputs: torch.Tensor, target: torch.Tensor | int | None) -> torch.Tensor:
        cam = LayerAttribution.interpolate(self.token_map(inputs.detach()), tuple(inputs.shape[-2:]),
                                           interpolate_mode=self.interpolate)
        return cam.sum(dim=1)
