"""Layer maps: Grad-CAM, LayerCAM and Grad-CAM++ over a convolutional layer, upsampled to the input."""

from __future__ import annotations

import torch
from captum.attr import LayerGradCam

from .base import LayerAttributionMap, quiet_captum
from .registry import register


@register("gradcam")
class GradCAM(LayerAttributionMap):
    """Grad-CAM: captum LayerGradCam on the last conv block, ReLU applied, bilinear upsampling."""

    def layer_map(self, inputs: torch.Tensor, target: torch.Tensor | int | None) -> torch.Tensor:
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
    """Grad-CAM++ (Chattopadhay et al. 2018), closed-form weights (exponential-output form) from layer gradients."""

    def cam(self, grads: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
        g2, g3 = grads.pow(2), grads.pow(3)
        denom = 2 * g2 + acts.sum(dim=(2, 3), keepdim=True) * g3
        alpha = torch.where(denom != 0, g2 / torch.where(denom != 0, denom, 1.0), 0.0)
        weights = (alpha * grads.clamp_min(0)).sum(dim=(2, 3), keepdim=True)
        cam = (weights * acts).sum(dim=1, keepdim=True)
        return cam.clamp_min(0) if self.relu else cam
