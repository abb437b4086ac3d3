"""Attribution methods (captum) behind one registry and one signature: attribute(inputs, target) -> (B, H, W)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from captum.attr import LayerAttribution, LayerGradCam
from torch import nn

from .errors import ConfigError

ATTRIBUTION_METHODS: dict[str, type[AttributionMethod]] = {}


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
    """The last convolutional block: `layer4` for ResNets (possibly wrapped), else the last Conv2d."""
    for name, module in model.named_modules():
        if name.split(".")[-1] == "layer4" and isinstance(module, nn.Sequential):
            return name
    explicit = getattr(model, "attribution_layer", None)
    if explicit:
        return explicit
    convs = [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ConfigError("The model has no convolution to explain. Set attribution.layer explicitly.")
    return convs[-1]


class AttributionMethod:
    """Explains `model`'s output for one target per image as a (B, H, W) map over the input pixels."""

    name = "base"

    def __init__(self, model: nn.Module, **options: Any) -> None:
        self.model = model
        self.options = options

    def attribute(self, inputs: torch.Tensor, target: torch.Tensor | int | None) -> torch.Tensor:
        """Return float maps of shape (B, H, W) for `inputs` (B, C, H, W)."""
        raise NotImplementedError


@register("gradcam")
class GradCAM(AttributionMethod):
    """Grad-CAM: captum LayerGradCam on the last conv block, ReLU applied, bilinear upsampling."""

    def __init__(self, model: nn.Module, layer: str | None = None, relu: bool = True) -> None:
        super().__init__(model, layer=layer, relu=relu)
        self.layer = resolve_layer(model, layer)
        self.relu = relu
        self.explainer = LayerGradCam(model, self.layer)

    def attribute(self, inputs: torch.Tensor, target: torch.Tensor | int | None) -> torch.Tensor:
        cam = self.explainer.attribute(inputs, target=target, relu_attributions=self.relu)
        cam = LayerAttribution.interpolate(cam, tuple(inputs.shape[-2:]), interpolate_mode="bilinear")
        return cam.sum(dim=1)


def attribution_names() -> list[str]:
    """Registered method names."""
    return sorted(ATTRIBUTION_METHODS)


def check_attribution_name(name: str) -> None:
    """Raise ConfigError for an unregistered method name."""
    if name not in ATTRIBUTION_METHODS:
        raise ConfigError(f"Unknown attribution method '{name}'. Use one of: {', '.join(attribution_names())}.")


def build_attribution(name: str, model: nn.Module, **options: Any) -> AttributionMethod:
    """Instantiate a registered method for `model` with its options."""
    check_attribution_name(name)
    return ATTRIBUTION_METHODS[name](model, **options)
