"""Attribution methods the caller passes in (the Python API): a captum attribution object built on their own
classifier, or a callable `(inputs, target) -> attributions`, post-processed as the named methods are.

A captum object is rebound, not called as built: a shallow copy whose model references point at the pipeline's
classifier (the caller's module behind the [0, 1] -> ImageNet normalisation the pipeline adds, BatchNorm folded
where the named methods fold it) and whose layers point at the modules with the same paths in it. So
`IntegratedGradients(net)` gives what `attribution=integrated_gradients` gives with captum's default arguments, and
`LayerGradCam(net, net.layer4)` explains `net.layer4` as `attribution=gradcam` does (captum's LayerGradCam applies
no ReLU unless asked: `functools.partial(cam.attribute, relu_attributions=True)`).

The raw output becomes a (B, H, W) map: (B, C, H, W) pixel attributions of a pixel method are reduced over channels
(abs_sum, the named pixel methods' default); a layer method's (B, C, h, w) map is upsampled bilinearly to the input
and summed over C (the named layer methods' way); (B, H, W) maps are taken as they are (upsampled if smaller).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import captum.attr
import torch
from captum.attr import Attribution, DeepLift, LayerAttribution
from torch import nn

from ..errors import InputError
from .base import AttributionMethod, quiet_captum, reduce_channels, upsample
from .surgery import separate_relus

GIVEN = "given:"  # the recorded method name of a user-supplied attribution starts with it


@dataclass(frozen=True)
class GivenAttribution:
    """A user-supplied attribution: its recorded name and options, and how it is built on the pipeline's model."""

    name: str  # "given:captum.IntegratedGradients", "given:my_function"
    build: Callable[[nn.Module], AttributionMethod] = field(compare=False)
    options: dict[str, Any] = field(default_factory=dict)  # recorded: kind, class, layer, arguments


class UserMethod(AttributionMethod):
    """A caller's attribution (a rebound captum object or a callable) as the pipeline's AttributionMethod."""

    def __init__(self, model: nn.Module, compute: Callable[[torch.Tensor, Any], torch.Tensor], layer_map: bool,
                 layer: nn.Module | None = None, layer_path: str | None = None, own_model: bool = False) -> None:
        super().__init__(model)
        # a callable runs the caller's module itself: the model must be that one (unfolded), which the run moves
        self.needs_unfolded = own_model
        self.compute = compute
        self.layer_map = layer_map  # a layer method's (B, C, h, w): upsampled and summed, never reduced as pixels
        if layer is not None:
            self.layer = layer  # a folded convolution here keeps the model unfolded (models.folding)
            self.layer_path = layer_path  # recorded in summary.json's explained_layer

    def attribute(self, inputs: torch.Tensor, target: torch.Tensor | int | None) -> torch.Tensor:
        with quiet_captum():
            raw = self.compute(inputs, target)
        return to_map(raw, inputs, self.layer_map)


def to_map(raw: Any, inputs: torch.Tensor, layer_map: bool) -> torch.Tensor:
    """A method's raw output as (B, H, W) maps on the inputs' grid (see the module's docstring)."""
    if isinstance(raw, tuple) and len(raw) == 1:
        raw = raw[0]
    batch, channels, size = inputs.shape[0], inputs.shape[1], tuple(inputs.shape[-2:])
    if not torch.is_tensor(raw) or raw.ndim not in (3, 4) or raw.shape[0] != batch:
        shape = tuple(raw.shape) if torch.is_tensor(raw) else type(raw).__name__
        raise InputError(f"The given attribution returned {shape} for inputs {tuple(inputs.shape)}. Return "
                         "(B, C, H, W) pixel attributions, a (B, C, h, w) layer map or (B, H, W) maps.")
    raw = raw.float()
    if raw.ndim == 3:
        return upsample(raw[:, None], size, "bilinear")[:, 0] if tuple(raw.shape[-2:]) != size else raw
    if not layer_map and raw.shape[1] == channels and tuple(raw.shape[-2:]) == size:
        return reduce_channels(raw, "abs_sum")
    return upsample(raw, size, "bilinear").sum(dim=1)


def given_attribution(attribution: Any, classifier: nn.Module | str) -> GivenAttribution:
    """Check a captum object or callable against the classifier it is meant to explain; one-line InputError (a
    ValueError) for what cannot work."""
    what = getattr(attribution, "__name__", None) if isinstance(attribution, type) else type(attribution).__name__
    usable = callable(attribution) or callable(getattr(attribution, "attribute", None))
    if isinstance(attribution, (type, nn.Module)) or not usable:
        raise InputError(f"attribution={what} is not an attribution: it has no attribute() and is not a function. "
                         "Pass a method name, a captum object built on your classifier (e.g. "
                         "IntegratedGradients(net)) or a function (inputs, target) -> attributions.")
    bound, kwargs = _captum_call(attribution)
    if bound is None:
        name = getattr(attribution, "__qualname__", what)
        return GivenAttribution(f"{GIVEN}{name}", lambda model: UserMethod(model, attribution, False, own_model=True),
                                {"kind": "callable", "function": name})
    if not isinstance(classifier, nn.Module):
        raise InputError(f"attribution={type(bound).__name__}(...) needs the model it was built on: pass it as "
                         f"classifier= (not the name '{classifier}').")
    if not _is_model(getattr(bound, "forward_func", None), classifier):
        raise InputError(f"attribution={type(bound).__name__} is bound to another model than the classifier given "
                         f"({type(classifier).__name__}). Build it on the module you pass as classifier=.")
    return _rebinding(bound, kwargs, classifier)


def _captum_call(attribution: Any) -> tuple[Any, dict[str, Any]]:
    """(the captum object, the attribute() keyword arguments) of an object, its bound `attribute` or a
    functools.partial of that; (None, {}) for another callable."""
    kwargs: dict[str, Any] = {}
    if isinstance(attribution, functools.partial) and not attribution.args:
        attribution, kwargs = attribution.func, dict(attribution.keywords)
    if inspect.ismethod(attribution) and attribution.__name__ == "attribute":
        attribution = attribution.__self__
    if isinstance(attribution, Attribution) or (hasattr(attribution, "attribute") and
                                                hasattr(attribution, "forward_func")):
        return attribution, kwargs
    return None, {}


def _is_model(func: Any, module: nn.Module) -> bool:
    return func is module or (inspect.ismethod(func) and func.__self__ is module)


def _rebinding(obj: Any, kwargs: dict[str, Any], classifier: nn.Module) -> GivenAttribution:
    """The captum object `obj` (bound to `classifier`) rebuilt on the pipeline's model at each build."""
    from ..models.classifier import NormalizedClassifier

    paths = {id(m): p for p, m in classifier.named_modules()}
    prefix = "" if isinstance(classifier, NormalizedClassifier) else "net"  # api.wrap_classifier's nesting
    layers = [paths[id(m)] for m in _references(obj, nn.Module) if m is not classifier and id(m) in paths]
    layer_path = ".".join(p for p in (prefix, layers[0]) if p) if layers else None
    hooks_relus = any(getattr(o, "model", None) is not None for o in _references(obj, Attribution))
    deeplift = any(isinstance(o, DeepLift) for o in _references(obj, Attribution))
    layer_map = any(isinstance(o, LayerAttribution) for o in _references(obj, Attribution)) and not hasattr(
        obj, "guided_backprop")  # guided Grad-CAM's output is pixels

    def build(model: nn.Module) -> AttributionMethod:
        # DeepLift's and guided backprop's hooks need each ReLU to be its own module, as the named methods do
        target = separate_relus(model, maxpool=deeplift) if hooks_relus else model
        net = target.get_submodule(prefix)
        rebound = _rebind(obj, {id(classifier): target, **{i: net.get_submodule(p) for i, p in paths.items() if p}})
        layer = target.get_submodule(layer_path) if layer_path else None
        return UserMethod(model, lambda x, t: rebound.attribute(x, target=t, **kwargs), layer_map, layer, layer_path)

    exported = getattr(captum.attr, type(obj).__name__, None) is type(obj)
    where = "captum.attr" if exported else type(obj).__module__
    options = {"kind": "captum", "class": f"{where}.{type(obj).__name__}", "layer": layer_path,
               "arguments": {k: repr(v) for k, v in kwargs.items()}}
    return GivenAttribution(f"{GIVEN}captum.{type(obj).__name__}", build, options)


def _references(obj: Any, kind: type) -> list[Any]:
    """The values of `kind` a captum object holds (its attributes, lists of them, nested captum objects)."""
    found: list[Any] = [obj] if isinstance(obj, kind) else []
    for value in vars(obj).values():
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(item, Attribution):
                found += _references(item, kind)
            elif isinstance(item, kind):
                found.append(item)
    return found


def _rebind(obj: Any, swap: dict[int, nn.Module]) -> Any:
    """A shallow copy of a captum object with each module in `swap` (by id) replaced, nested objects rebound."""
    def move(value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return type(value)(move(v) for v in value)
        if isinstance(value, Attribution):
            return _rebind(value, swap)
        if inspect.ismethod(value) and id(value.__self__) in swap:  # forward_func=net.forward
            return getattr(swap[id(value.__self__)], value.__name__)
        return swap.get(id(value), value) if isinstance(value, nn.Module) else value

    twin = object.__new__(type(obj))
    twin.__dict__.update({k: move(v) for k, v in vars(obj).items()})
    return twin
