"""Pixel methods: captum attributions over the input pixels (gradients, baselines, noise, occlusion)."""

from __future__ import annotations

from typing import Any

import torch
from captum.attr import (
    DeepLift,
    GradientShap,
    GuidedGradCam,
    InputXGradient,
    IntegratedGradients,
    NoiseTunnel,
    Occlusion,
    Saliency,
)
from torch import nn

from ..errors import ConfigError
from .base import (
    BASELINES,
    PixelAttribution,
    _check_choice,
    _check_positive,
    default_layer,
    make_baseline,
    resolve_layer,
)
from .registry import register


@register("guided_gradcam")
class GuidedGradCAMMap(PixelAttribution):
    """Guided Grad-CAM: guided backprop ⊙ upsampled Grad-CAM (captum GuidedGradCam), on single-use ReLUs."""

    needs_separate_relus = True

    def __init__(self, model: nn.Module, layer: str | None = None, reduce: str = "abs_sum") -> None:
        resolve_layer(model, layer)  # a bad path fails here, not at the first batch
        super().__init__(model, reduce=reduce, layer=layer)
        self.layer_path = layer if layer is not None else default_layer(model)

    def explainer(self, model: nn.Module) -> Any:
        return GuidedGradCam(model, model.get_submodule(self.layer_path))


class GradientMap(PixelAttribution):
    """A pixel method with no options but the channel reduction (no seed, no baseline)."""

    def __init__(self, model: nn.Module, reduce: str = "abs_sum") -> None:
        super().__init__(model, reduce=reduce)


@register("saliency")
class SaliencyMap(GradientMap):
    """Vanilla gradients (Simonyan et al. 2014), absolute values."""

    def explainer(self, model: nn.Module) -> Any:
        return Saliency(model)

    def arguments(self, inputs: torch.Tensor) -> dict[str, Any]:
        return {"abs": True}


@register("input_x_gradient")
class InputXGradientMap(GradientMap):
    """Input ⊙ gradient."""

    def explainer(self, model: nn.Module) -> Any:
        return InputXGradient(model)


class BaselineAttribution(PixelAttribution):
    """A pixel method measured against a reference image (black, blurred or mean colour)."""

    def __init__(self, model: nn.Module, baseline: str = "black", blur_sigma: float = 5.0, **options: Any) -> None:
        _check_choice("baseline", baseline, BASELINES)
        _check_positive(blur_sigma=blur_sigma)
        super().__init__(model, baseline=baseline, blur_sigma=blur_sigma, **options)
        self.baseline = baseline
        self.blur_sigma = blur_sigma

    def baselines(self, inputs: torch.Tensor) -> torch.Tensor:
        return make_baseline(inputs, self.baseline, self.blur_sigma)


@register("integrated_gradients")
class IntegratedGradientsMap(BaselineAttribution):
    """Integrated gradients from a baseline; `internal_batch_size` bounds memory on a batch."""

    def __init__(self, model: nn.Module, baseline: str = "black", n_steps: int = 32, internal_batch_size: int = 16,
                 blur_sigma: float = 5.0, reduce: str = "abs_sum") -> None:
        _check_positive(n_steps=n_steps, internal_batch_size=internal_batch_size)
        super().__init__(model, baseline=baseline, blur_sigma=blur_sigma, reduce=reduce, n_steps=n_steps,
                         internal_batch_size=internal_batch_size)
        self.n_steps = int(n_steps)
        self.internal_batch_size = int(internal_batch_size)

    def explainer(self, model: nn.Module) -> Any:
        return IntegratedGradients(model)

    def arguments(self, inputs: torch.Tensor) -> dict[str, Any]:
        return {"baselines": self.baselines(inputs), "n_steps": self.n_steps,
                "internal_batch_size": self.internal_batch_size}


@register("deeplift")
class DeepLiftMap(BaselineAttribution):
    """DeepLIFT (rescale rule) from a baseline, on a copy with single-use, non-inplace ReLUs and ReLU max-pools."""

    needs_separate_relus = True
    separate_maxpool = True

    def __init__(self, model: nn.Module, baseline: str = "black", blur_sigma: float = 5.0,
                 reduce: str = "abs_sum") -> None:
        super().__init__(model, baseline=baseline, blur_sigma=blur_sigma, reduce=reduce)

    def explainer(self, model: nn.Module) -> Any:
        return DeepLift(model)

    def arguments(self, inputs: torch.Tensor) -> dict[str, Any]:
        return {"baselines": self.baselines(inputs)}


@register("gradient_shap")
class GradientShapMap(BaselineAttribution):
    """GradientSHAP: expected gradients between noisy inputs and the baseline, seeded."""

    def __init__(self, model: nn.Module, baseline: str = "black", n_samples: int = 8, stdevs: float = 0.09,
                 blur_sigma: float = 5.0, reduce: str = "abs_sum", seed: int = 0) -> None:
        if baseline == "blurred":
            # captum draws each input's baseline from the whole set; blurred baselines would mix images.
            raise ConfigError("gradient_shap takes a constant baseline. Set attribution.options.baseline=black "
                              "or mean.")
        _check_positive(n_samples=n_samples, stdevs=stdevs)
        super().__init__(model, baseline=baseline, blur_sigma=blur_sigma, reduce=reduce, seed=seed,
                         n_samples=n_samples, stdevs=stdevs)
        self.n_samples = int(n_samples)
        self.stdevs = float(stdevs)

    def explainer(self, model: nn.Module) -> Any:
        return GradientShap(model)

    def arguments(self, inputs: torch.Tensor) -> dict[str, Any]:
        return {"baselines": self.baselines(inputs[:1]), "n_samples": self.n_samples, "stdevs": self.stdevs}


@register("smoothgrad")
class SmoothGradMap(PixelAttribution):
    """SmoothGrad: captum NoiseTunnel over absolute saliency; noise `stdevs` in input units ([0, 1]), seeded."""

    def __init__(self, model: nn.Module, nt_samples: int = 16, stdevs: float = 0.15, nt_samples_batch_size: int = 16,
                 reduce: str = "abs_sum", seed: int = 0) -> None:
        _check_positive(nt_samples=nt_samples, stdevs=stdevs, nt_samples_batch_size=nt_samples_batch_size)
        super().__init__(model, reduce=reduce, seed=seed, nt_samples=nt_samples, stdevs=stdevs,
                         nt_samples_batch_size=nt_samples_batch_size)
        self.nt_samples = int(nt_samples)
        self.stdevs = float(stdevs)
        self.nt_samples_batch_size = int(nt_samples_batch_size)

    def explainer(self, model: nn.Module) -> Any:
        return NoiseTunnel(Saliency(model))

    def arguments(self, inputs: torch.Tensor) -> dict[str, Any]:
        return {"nt_type": "smoothgrad", "nt_samples": self.nt_samples, "stdevs": self.stdevs,
                "nt_samples_batch_size": self.nt_samples_batch_size, "abs": True}


@register("occlusion")
class OcclusionMap(BaselineAttribution):
    """Occlusion: output drop when a `window`² patch (all channels) is replaced by the baseline, every `stride` px."""

    def __init__(self, model: nn.Module, window: int = 32, stride: int = 16, perturbations_per_eval: int = 16,
                 baseline: str = "black", blur_sigma: float = 5.0, reduce: str = "abs_sum") -> None:
        _check_positive(window=window, stride=stride, perturbations_per_eval=perturbations_per_eval)
        super().__init__(model, baseline=baseline, blur_sigma=blur_sigma, reduce=reduce, window=window,
                         stride=stride, perturbations_per_eval=perturbations_per_eval)
        self.window = int(window)
        self.stride = int(stride)
        self.perturbations_per_eval = int(perturbations_per_eval)

    def explainer(self, model: nn.Module) -> Any:
        return Occlusion(model)

    def arguments(self, inputs: torch.Tensor) -> dict[str, Any]:
        if self.window > min(inputs.shape[-2:]):
            raise ConfigError(f"The occlusion window ({self.window} px) is larger than the image "
                              f"({tuple(inputs.shape[-2:])}). Set attribution.options.window to at most "
                              f"{min(inputs.shape[-2:])}.")
        channels = inputs.shape[1]
        return {"sliding_window_shapes": (channels, self.window, self.window),
                "strides": (channels, self.stride, self.stride), "baselines": self.baselines(inputs),
                "perturbations_per_eval": self.perturbations_per_eval}
