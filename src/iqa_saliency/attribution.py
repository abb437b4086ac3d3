"""Attribution methods (captum) behind one registry and one signature: attribute(inputs, target) -> (B, H, W).

Two shared code paths: `PixelAttribution` (a captum method over the input pixels, reduced over channels) and
`LayerAttributionMap` (a map over a convolutional layer, upsampled to the input). Each registered method only
says which captum explainer it uses and with which arguments.
"""

from __future__ import annotations

import copy
import inspect
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from captum._utils.gradient import compute_layer_gradients_and_eval
from captum.attr import (
    DeepLift,
    GradientShap,
    GuidedGradCam,
    InputXGradient,
    IntegratedGradients,
    LayerAttribution,
    LayerGradCam,
    NoiseTunnel,
    Occlusion,
    Saliency,
)
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck
from torchvision.transforms.functional import gaussian_blur

from .errors import ConfigError

ATTRIBUTION_METHODS: dict[str, type[AttributionMethod]] = {}
BASELINES = ("black", "blurred", "mean")
REDUCTIONS = ("abs_sum", "sum", "max_abs", "l2")
# The ImageNet mean colour: the all-zero input once the classifier has normalised it.
MEAN_COLOUR = (0.485, 0.456, 0.406)


def register(name: str) -> Callable[[type[AttributionMethod]], type[AttributionMethod]]:
    """Class decorator adding a method to the registry under `name`."""

    def wrap(cls: type[AttributionMethod]) -> type[AttributionMethod]:
        ATTRIBUTION_METHODS[name] = cls
        cls.name = name
        return cls

    return wrap


def resolve_layer(model: nn.Module, layer: str | None) -> nn.Module:
    """The module at a dotted path, or the model's default explanation layer when `layer` is None."""
    if layer is None:
        layer = default_layer(model)
    try:
        return model.get_submodule(layer)
    except AttributeError as exc:
        raise ConfigError(
            f"The model has no layer '{layer}'. Set attribution.layer to a module path such as "
            f"'{default_layer(model)}'."
        ) from exc


def default_layer(model: nn.Module) -> str:
    """A model's declared `attribution_layer`, else `layer4` (ResNets, possibly wrapped), else the last Conv2d."""
    for name, module in model.named_modules():
        explicit = getattr(module, "attribution_layer", None)
        if isinstance(explicit, str) and explicit:
            return f"{name}.{explicit}" if name else explicit
    for name, module in model.named_modules():
        if name.split(".")[-1] == "layer4" and isinstance(module, nn.Sequential):
            return name
    convs = [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ConfigError("The model has no convolution to explain. Set attribution.layer explicitly.")
    return convs[-1]


@contextmanager
def seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """Run a block with torch's RNG seeded (CPU and the inputs' GPU), restoring the outer state after."""
    if seed is None:
        yield
        return
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


@contextmanager
def quiet_captum() -> Iterator[None]:
    """Silence captum's per-call notices (hooks set and removed, inputs without grad), not other warnings."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"captum(\.|$)")
        warnings.filterwarnings("ignore", message=r".*(hooks|requires_grad|full_backward_hook).*")
        yield


class _SplitReluBasicBlock(BasicBlock):
    """torchvision BasicBlock whose two ReLUs are separate modules (DeepLift needs one call per module)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu_out(out + identity)


class _SplitReluBottleneck(Bottleneck):
    """torchvision Bottleneck whose three ReLUs are separate modules."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu_mid(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu_out(out + identity)


class ReluMaxPool2d(nn.Module):
    """Max-pooling written as a tree of max(a, b) = b + ReLU(a − b), one ReLU module per tree level.

    The same function as the nn.MaxPool2d it replaces; DeepLift's rescale rule through it sums exactly to the
    output difference (captum's own max-pool rule does not, for overlapping windows). Replicate padding equals
    -inf padding here because every window that reaches the pad also holds the edge element copied into it.
    """

    def __init__(self, pool: nn.MaxPool2d) -> None:
        super().__init__()
        as_pair = nn.modules.utils._pair
        self.kernel, self.stride, self.padding = as_pair(pool.kernel_size), as_pair(pool.stride), as_pair(pool.padding)
        levels, n = 0, self.kernel[0] * self.kernel[1]
        while n > 1:
            n, levels = (n + 1) // 2, levels + 1
        self.relus = nn.ModuleList(nn.ReLU() for _ in range(levels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (kh, kw), (sh, sw), (ph, pw) = self.kernel, self.stride, self.padding
        if ph or pw:
            x = F.pad(x, (pw, pw, ph, ph), mode="replicate")
        windows = x.unfold(2, kh, sh).unfold(3, kw, sw).flatten(-2)  # (B, C, oh, ow, kh*kw)
        for relu in self.relus:
            half = windows.shape[-1] // 2
            a, b, rest = windows[..., :half], windows[..., half:2 * half], windows[..., 2 * half:]
            windows = torch.cat([b + relu(a - b), rest], dim=-1)
        return windows[..., 0]


def separate_relus(model: nn.Module, maxpool: bool = False) -> nn.Module:
    """A deep copy of `model` computing the same function with every ReLU a non-inplace module used once.

    torchvision ResNet blocks call one inplace `self.relu` two (three) times; DeepLift's rules and guided
    backprop's hooks need each activation to be its own module. `maxpool=True` also rewrites plain
    nn.MaxPool2d layers as ReluMaxPool2d (for DeepLift's completeness).
    """
    twin = copy.deepcopy(model)
    for module in twin.modules():
        for child_name, child in module.named_children():
            if isinstance(child, nn.ReLU):
                setattr(module, child_name, nn.ReLU())
            elif (maxpool and type(child) is nn.MaxPool2d and not child.ceil_mode and child.dilation in (1, (1, 1))
                  and not child.return_indices):
                setattr(module, child_name, ReluMaxPool2d(child))
        if type(module) is BasicBlock:
            module.__class__ = _SplitReluBasicBlock
            module.relu_out = nn.ReLU()
        elif type(module) is Bottleneck:
            module.__class__ = _SplitReluBottleneck
            module.relu_mid = nn.ReLU()
            module.relu_out = nn.ReLU()
    return twin


def make_baseline(inputs: torch.Tensor, kind: str, blur_sigma: float = 5.0) -> torch.Tensor:
    """The reference image per input: black (zeros), blurred (Gaussian, sigma in px) or the ImageNet mean colour."""
    if kind == "black":
        return torch.zeros_like(inputs)
    if kind == "blurred":
        kernel = 2 * int(round(3 * blur_sigma)) + 1
        return gaussian_blur(inputs.detach(), [kernel, kernel], [blur_sigma, blur_sigma])
    if kind == "mean":
        if inputs.shape[1] != len(MEAN_COLOUR):
            raise ConfigError("The mean baseline is an RGB colour. Set attribution.options.baseline=black or blurred.")
        mean = torch.tensor(MEAN_COLOUR, dtype=inputs.dtype, device=inputs.device).view(1, -1, 1, 1)
        return mean.expand_as(inputs).clone()
    raise ConfigError(f"Unknown baseline '{kind}'. Set attribution.options.baseline to one of: {', '.join(BASELINES)}.")


def reduce_channels(attributions: torch.Tensor, how: str) -> torch.Tensor:
    """(B, C, H, W) pixel attributions to (B, H, W) maps."""
    if how == "abs_sum":
        return attributions.abs().sum(dim=1)
    if how == "sum":
        return attributions.sum(dim=1)
    if how == "max_abs":
        return attributions.abs().amax(dim=1)
    if how == "l2":
        return attributions.norm(dim=1)
    raise ConfigError(f"Unknown channel reduction '{how}'. Set attribution.options.reduce to one of: "
                      f"{', '.join(REDUCTIONS)}.")


def _check_choice(option: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"attribution.options.{option}={value!r} is not valid. Use one of: {', '.join(choices)}.")


def _check_positive(**values: Any) -> None:
    for option, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ConfigError(f"attribution.options.{option}={value!r} must be a positive number. "
                              f"Set attribution.options.{option} to a value above 0.")


class AttributionMethod:
    """Explains `model`'s output for one target per image as a (B, H, W) map over the input pixels."""

    name = "base"

    def __init__(self, model: nn.Module, **options: Any) -> None:
        self.model = model
        self.options = options

    def attribute(self, inputs: torch.Tensor, target: torch.Tensor | int | None) -> torch.Tensor:
        """Return float maps of shape (B, H, W) for `inputs` (B, C, H, W)."""
        raise NotImplementedError


class PixelAttribution(AttributionMethod):
    """A captum attribution over input pixels, (B, C, H, W), reduced over channels to (B, H, W).

    Subclasses name the explainer (`explainer`) and its arguments (`arguments`); `seed` makes methods that
    draw noise repeatable; `separate_relus` runs them on a copy whose ReLUs are single-use modules.
    """

    needs_separate_relus = False
    separate_maxpool = False

    def __init__(self, model: nn.Module, reduce: str = "abs_sum", seed: int | None = None, **options: Any) -> None:
        _check_choice("reduce", reduce, REDUCTIONS)
        super().__init__(model, reduce=reduce, seed=seed, **options)
        self.reduce = reduce
        self.seed = seed

    def explainer(self, model: nn.Module) -> Any:
        """The captum attribution object for `model`."""
        raise NotImplementedError

    def arguments(self, inputs: torch.Tensor) -> dict[str, Any]:
        """Keyword arguments for the explainer's attribute call besides inputs and target."""
        return {}

    def raw(self, inputs: torch.Tensor, target: torch.Tensor | int | None) -> torch.Tensor:
        """captum's (B, C, H, W) attributions before channel reduction."""
        model = separate_relus(self.model, self.separate_maxpool) if self.needs_separate_relus else self.model
        with quiet_captum(), seeded(self.seed, inputs.device):
            return self.explainer(model).attribute(inputs, target=target, **self.arguments(inputs))

    def attribute(self, inputs: torch.Tensor, target: torch.Tensor | int | None) -> torch.Tensor:
        return reduce_channels(self.raw(inputs, target), self.reduce)


class LayerAttributionMap(AttributionMethod):
    """A (B, 1, h, w) map over a convolutional layer, upsampled to the input size."""

    def __init__(self, model: nn.Module, layer: str | None = None, relu: bool = True,
                 interpolate: str = "bilinear") -> None:
        _check_choice("interpolate", interpolate, ("bilinear", "nearest", "bicubic"))
        super().__init__(model, layer=layer, relu=relu, interpolate=interpolate)
        self.layer = resolve_layer(model, layer)
        self.relu = relu
        self.interpolate = interpolate

    def layer_map(self, inputs: torch.Tensor, target: torch.Tensor | int | None) -> torch.Tensor:
        """(B, 1, h, w) at the layer's resolution."""
        return self.cam(*self.gradients_and_activations(inputs, target))

    def cam(self, grads: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
        """(B, 1, h, w) from the target's gradients w.r.t. the layer output and that output."""
        raise NotImplementedError

    def predict_and_attribute(self, inputs: torch.Tensor, labels: torch.Tensor | None = None
                              ) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's output and the maps for its predicted classes (or `labels`) from one forward pass.

        The same gradients and activations as `attribute` with target = the prediction, without a second
        forward pass to find the prediction first.
        """
        store: dict[str, torch.Tensor] = {}
        handle = self.layer.register_forward_hook(lambda _m, _i, out: store.__setitem__("acts", out))
        try:
            with torch.enable_grad():
                logits = self.model(inputs)
                target = logits.argmax(dim=1) if labels is None else labels
                selected = logits.gather(1, target[:, None]).sum()
                grads = torch.autograd.grad(selected, store["acts"])[0]
        finally:
            handle.remove()
        cam = self.cam(grads, store["acts"].detach())
        cam = LayerAttribution.interpolate(cam, tuple(inputs.shape[-2:]), interpolate_mode=self.interpolate)
        return logits.detach(), cam.sum(dim=1)

    def gradients_and_activations(self, inputs: torch.Tensor, target: torch.Tensor | int | None
                                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """The target's gradient w.r.t. the layer output, and that output (captum's layer utility)."""
        with quiet_captum():
            grads, acts = compute_layer_gradients_and_eval(self.model, self.layer, inputs, target)
        return grads[0], acts[0]

    def attribute(self, inputs: torch.Tensor, target: torch.Tensor | int | None) -> torch.Tensor:
        cam = self.layer_map(inputs, target)
        cam = LayerAttribution.interpolate(cam, tuple(inputs.shape[-2:]), interpolate_mode=self.interpolate)
        return cam.sum(dim=1)


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


@register("saliency")
class SaliencyMap(PixelAttribution):
    """Vanilla gradients (Simonyan et al. 2014), absolute values."""

    def __init__(self, model: nn.Module, reduce: str = "abs_sum") -> None:
        super().__init__(model, reduce=reduce)

    def explainer(self, model: nn.Module) -> Any:
        return Saliency(model)

    def arguments(self, inputs: torch.Tensor) -> dict[str, Any]:
        return {"abs": True}


@register("input_x_gradient")
class InputXGradientMap(PixelAttribution):
    """Input ⊙ gradient."""

    def __init__(self, model: nn.Module, reduce: str = "abs_sum") -> None:
        super().__init__(model, reduce=reduce)

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


def attribution_names() -> list[str]:
    """Registered method names."""
    return sorted(ATTRIBUTION_METHODS)


def check_attribution_name(name: str) -> None:
    """Raise ConfigError for an unregistered method name."""
    if name not in ATTRIBUTION_METHODS:
        raise ConfigError(f"Unknown attribution method '{name}'. Use one of: {', '.join(attribution_names())}.")


def method_defaults(name: str) -> dict[str, Any]:
    """A method's options and their defaults (what its conf/attribution/<name>.yaml should list)."""
    check_attribution_name(name)
    params = inspect.signature(ATTRIBUTION_METHODS[name].__init__).parameters
    return {k: p.default for k, p in params.items() if k not in ("self", "model")}


def check_attribution(name: str, options: dict[str, Any], key: str = "attribution.options") -> None:
    """Raise ConfigError for an unknown method or option, before any model is built."""
    check_attribution_name(name)
    unknown = sorted(set(options) - set(method_defaults(name)))
    if unknown:
        raise ConfigError(f"{name} has no option {', '.join(unknown)}. Use {key} keys from: "
                          f"{', '.join(method_defaults(name))}.")


def build_attribution(name: str, model: nn.Module, **options: Any) -> AttributionMethod:
    """Instantiate a registered method for `model` with its options."""
    check_attribution(name, options)
    return ATTRIBUTION_METHODS[name](model, **options)

