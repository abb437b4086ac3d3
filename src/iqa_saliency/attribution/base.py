"""The attribution interface and its two shared code paths.

`AttributionMethod` is the one signature: attribute(inputs, target) -> (B, H, W), plus
`predict_and_attribute` (output and maps for the predicted class, or given labels). Subclasses declare what they
can do: `one_pass` is True where the prediction and the map come from a single forward pass.
`PixelAttribution` wraps a captum method over the input pixels, reduced over channels; `LayerAttributionMap` a
map over a convolutional layer, upsampled to the input.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from captum._utils.gradient import compute_layer_gradients_and_eval
from captum.attr import LayerAttribution
from torch import nn
from torchvision.transforms.functional import gaussian_blur

from ..errors import ConfigError
from .families import find_family
from .surgery import separate_relus

BASELINES = ("black", "blurred", "mean")
REDUCTIONS = ("abs_sum", "sum", "max_abs", "l2")
# The ImageNet mean colour: the all-zero input once the classifier has normalised it.
MEAN_COLOUR = (0.485, 0.456, 0.406)
log = logging.getLogger(__name__)


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
    """A model's declared `attribution_layer`, else its family's (attribution/families: ViT, Swin, ConvNeXt ...),
    else `layer4` (ResNets, possibly wrapped), else the last Conv2d."""
    for name, module in model.named_modules():
        explicit = getattr(module, "attribution_layer", None)
        if isinstance(explicit, str) and explicit:
            return f"{name}.{explicit}" if name else explicit
    match = find_family(model)
    if match is not None:
        path = match.prefix + match.family.default_layer(match.network)
        log.info("Default attribution layer of the %s family: '%s'", match.family.name, path)
        return path
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


def upsample(maps: torch.Tensor, size: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """(B, C, h, w) layer maps resized to the input's (H, W) (captum's LayerAttribution.interpolate)."""
    return LayerAttribution.interpolate(maps, size, interpolate_mode=mode)


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
    any_model = True  # False: the method needs a model family (e.g. attention rollout, ViTs)
    one_pass = False  # True: predict_and_attribute needs a single forward pass (no separate prediction pass)

    def __init__(self, model: nn.Module, **options: Any) -> None:
        self.model = model
        self.options = options

    def attribute(self, inputs: torch.Tensor, target: torch.Tensor | int | None) -> torch.Tensor:
        """Return float maps of shape (B, H, W) for `inputs` (B, C, H, W)."""
        raise NotImplementedError

    def predict_and_attribute(self, inputs: torch.Tensor, labels: torch.Tensor | None = None,
                              forward: Callable[[torch.Tensor], torch.Tensor] | None = None
                              ) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's output and the maps for its predicted classes (or `labels`).

        `forward` computes the prediction (default: the explained model), e.g. an equivalent faster copy.
        """
        with torch.no_grad():
            logits = (forward or self.model)(inputs)
        target = logits.float().argmax(dim=1) if labels is None else labels
        with torch.enable_grad():
            maps = self.attribute(inputs.detach().requires_grad_(True), target=target)
        return logits.detach(), maps


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


def layer_grid(model: nn.Module, path: str) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """How the output of the layer at `path` becomes (B, C, h, w): its family's reshaping when the layer is inside
    a transformer whose family has one (ViT tokens, Swin channels-last), else None (already a grid)."""
    match = find_family(model)
    if match is None or match.family.to_grid is None or not path.startswith(match.prefix):
        return None
    network, to_grid = match.network, match.family.to_grid
    log.info("Layer '%s' of the %s family: its output is reshaped onto the patch grid", path, match.family.name)
    return lambda out: to_grid(network, out)


class LayerAttributionMap(AttributionMethod):
    """A (B, 1, h, w) map over a convolutional layer, upsampled to the input size."""

    one_pass = True

    def __init__(self, model: nn.Module, layer: str | None = None, relu: bool = True,
                 interpolate: str = "bilinear") -> None:
        _check_choice("interpolate", interpolate, ("bilinear", "nearest", "bicubic"))
        super().__init__(model, layer=layer, relu=relu, interpolate=interpolate)
        self.layer = resolve_layer(model, layer)
        self.layer_path = layer if layer is not None else default_layer(model)  # recorded in summary.json
        self.reshape_transform = layer_grid(model, self.layer_path)  # token/channels-last outputs -> (B, C, h, w)
        self.relu = relu
        self.interpolate = interpolate

    def layer_map(self, inputs: torch.Tensor, target: torch.Tensor | int | None) -> torch.Tensor:
        """(B, 1, h, w) at the layer's resolution."""
        return self.cam(*self.gradients_and_activations(inputs, target))

    def cam(self, grads: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
        """(B, 1, h, w) from the target's gradients w.r.t. the layer output and that output."""
        raise NotImplementedError

    def predict_and_attribute(self, inputs: torch.Tensor, labels: torch.Tensor | None = None,
                              forward: Callable[[torch.Tensor], torch.Tensor] | None = None
                              ) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's output and the maps for its predicted classes (or `labels`) from one forward pass.

        The same gradients and activations as `attribute` with target = the prediction, without a second
        forward pass to find the prediction first; the prediction is the explained model's (`forward` unused).
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
        cam = self.cam(self.grid(grads), self.grid(store["acts"].detach()))
        cam = upsample(cam, tuple(inputs.shape[-2:]), self.interpolate)
        return logits.detach(), cam.sum(dim=1)

    def gradients_and_activations(self, inputs: torch.Tensor, target: torch.Tensor | int | None
                                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """The target's gradient w.r.t. the layer output, and that output (captum's layer utility)."""
        with quiet_captum():
            grads, acts = compute_layer_gradients_and_eval(self.model, self.layer, inputs, target)
        return self.grid(grads[0]), self.grid(acts[0])

    def grid(self, out: torch.Tensor) -> torch.Tensor:
        """The layer's output (or its gradient) as (B, C, h, w): tokens reshaped onto the patch grid."""
        return out if self.reshape_transform is None else self.reshape_transform(out)

    def attribute(self, inputs: torch.Tensor, target: torch.Tensor | int | None) -> torch.Tensor:
        cam = self.layer_map(inputs, target)
        cam = upsample(cam, tuple(inputs.shape[-2:]), self.interpolate)
        return cam.sum(dim=1)
