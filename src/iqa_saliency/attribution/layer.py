"""Layer maps: Grad-CAM, LayerCAM and Grad-CAM++ over a convolutional layer, upsampled to the input."""

from __future__ import annotations

import torch
from captum.attr import LayerGradCam

from ..errors import ConfigError
from .base import LayerAttributionMap, quiet_captum
from .registry import register


@register("gradcam")
class GradCAM(LayerAttributionMap):
    """Grad-CAM: captum LayerGradCam on the last conv block, ReLU applied, bilinear upsampling."""

    def layer_map(self, inputs: torch.Tensor, target: torch.Tensor | int | None) -> torch.Tensor:
        if self.reshape_transform is not None:  # token outputs: the same arithmetic on the reshaped grid
            return super().layer_map(inputs, target)
        with quiet_captum():
            return LayerGradCam(self.model, self.layer).attribute(inputs, target=target, relu_attributions=self.relu)

    def cam(self, grads: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
        # LayerGradCam's arithmetic: channel weights = spatial mean of the gradients
        cam = (grads.mean(dim=(2, 3), keepdim=True) * acts).sum(dim=1, keepdim=True)
        return cam.clamp_min(0) if self.relu else cam


@register("layer_cam")
class LayerCAM(LayerAttributionMap):
    """LayerCAM (Jiang et al. 2021): ReLU(Σ_k ReLU(∂y/∂A_k) ⊙ A_k), from captum's layer gradients."""

    def cam(self, grads: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
        cam = (grads.clamp_min(0) * acts).sum(dim=1, keepdim=True)
        return cam.clamp_min(0) if self.relu else cam


@register("gradcam_plus_plus")
class GradCAMPlusPlus(LayerAttributionMap):
    """Grad-CAM++ (Chattopadhay et al. 2018), closed-form weights (exponential-output form) from layer gradients.

    alpha = g² / (2g² + ΣA·g³ + eps), 0 where g or the denominator is 0. eps=0 (default) is the paper's formula;
    eps=1e-6 is pytorch-grad-cam's, which matters at a ResNet's last block, where |g| ~ 1e-3 makes 2g² ~ eps.
    """

    def __init__(self, model: torch.nn.Module, layer: str | None = None, relu: bool = True,
                 interpolate: str = "bilinear", eps: float = 0.0) -> None:
        super().__init__(model, layer=layer, relu=relu, interpolate=interpolate)
        try:
            self.eps = float(eps)
        except (TypeError, ValueError):
            self.eps = float("nan")
        if not self.eps >= 0:
            raise ConfigError(f"attribution.options.eps={eps!r} is not a number >= 0. Use 0 (the paper) or 1e-6 "
                              "(pytorch-grad-cam).")
        self.options["eps"] = self.eps

    def cam(self, grads: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
        g2, g3 = grads.pow(2), grads.pow(3)
        denom = 2 * g2 + acts.sum(dim=(2, 3), keepdim=True) * g3 + self.eps
        kept = (grads != 0) & (denom != 0)
        alpha = torch.where(kept, g2 / torch.where(denom != 0, denom, 1.0), 0.0)
        weights = (alpha * grads.clamp_min(0)).sum(dim=(2, 3), keepdim=True)
        cam = (weights * acts).sum(dim=1, keepdim=True)
        return cam.clamp_min(0) if self.relu else cam
