"""Which layer a layer method explains, and refusing one that cannot give a spatial explanation.

A layer method (Grad-CAM and co., guided Grad-CAM) explains a model through one layer's output: that output must
be a (B, C, H, W) map larger than 1x1, it must depend on the input and vary across positions, and the model must
keep it spatial (a transformer's patch embedding, whose map the model turns into a token sequence, explains the
embedding, not the decision). Checked on a probe batch once the model is loaded, before the run starts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from .registry import build_attribution

log = logging.getLogger(__name__)
PIXEL_METHODS = "attribution=integrated_gradients, saliency or smoothgrad"


def explained_layer(method: Any) -> str | None:
    """The module path a layer method explains (None for a pixel method)."""
    return getattr(method, "layer_path", None)


@dataclass
class _Output:
    """One module's output on the probe batch, in the order the modules finished."""

    name: str
    shape: tuple[int, ...] | None  # None: not a tensor
    value: torch.Tensor | None


def _probe(model: nn.Module, inputs: torch.Tensor) -> list[_Output]:
    """Every module's output on `inputs`, in the order the modules finished."""
    outputs: list[_Output] = []

    def hook(name: str) -> Callable[..., None]:
        def record(_module: nn.Module, _args: Any, out: Any) -> None:
            tensor = out if torch.is_tensor(out) else None
            outputs.append(_Output(name, tuple(tensor.shape) if tensor is not None else None,
                                   tensor.detach().float().clone() if tensor is not None else None))
        return record

    handles = [m.register_forward_hook(hook(name)) for name, m in model.named_modules() if name]
    try:
        with torch.no_grad():
            model(inputs)
    finally:
        for handle in handles:
            handle.remove()
    return outputs


def _spatial(shape: tuple[int, ...] | None) -> bool:
    return shape is not None and len(shape) == 4 and shape[2] * shape[3] > 1


def _varies(value: torch.Tensor) -> bool:
    return bool(value.flatten(2).std(dim=2).amax() > 0)


def _is_token_form(shape: tuple[int, ...] | None, of: tuple[int, ...] | None) -> bool:
    """Whether `shape` holds the positions of a (B, C, H, W) map `of` as tokens: a (B, N, C') sequence (ViT) or a
    channels-last (B, H, W, C) grid (Swin)."""
    if not _spatial(of) or shape is None or shape[0] != of[0]:
        return False
    b, c, h, w = of
    return (len(shape) == 3 and shape[1] in (h * w, h * w + 1)) or shape[1:] == (h, w, c)


def _becomes_tokens(outputs: list[_Output], index: int) -> bool:
    """Whether a module finishing after outputs[index] holds its positions as tokens."""
    return any(_is_token_form(o.shape, outputs[index].shape) for o in outputs[index + 1:])


def _token_start(outputs: list[_Output]) -> int:
    """The index of the first output that holds an earlier map's positions as tokens (len(outputs): none)."""
    spatial: list[tuple[int, ...]] = []
    for j, o in enumerate(outputs):
        if any(_is_token_form(o.shape, earlier) for earlier in spatial):
            return j
        if _spatial(o.shape):
            spatial.append(o.shape)
    return len(outputs)


def _why_not(outputs: list[_Output], other: list[_Output], path: str, reshape: Callable | None) -> str | None:
    """Why the layer at `path` cannot give a spatial map (None: it can). `other`: the probe's second batch."""
    index = next((i for i, o in enumerate(outputs) if o.name == path), None)
    if index is None:
        return "the model's forward pass never runs it"
    value = outputs[index].value
    if value is None:
        return "its output is not a tensor"
    second = other[index].value if index < len(other) and other[index].name == path else None
    if reshape is not None:
        try:
            value = reshape(value)
            second = reshape(second) if second is not None else None
        except Exception as exc:  # e.g. a layer before the tokens of a family whose reshaping expects tokens
            return f"its output {tuple(value.shape)} cannot be reshaped onto the patch grid ({type(exc).__name__})"
    elif index >= _token_start(outputs):
        return "the model holds its positions as tokens there (a transformer), not as a (B, C, H, W) map"
    if not _spatial(tuple(value.shape)):
        return f"its output has shape {tuple(value.shape)}, not a (B, C, H, W) map larger than 1x1"
    if second is not None and torch.equal(value, second):
        return "its output does not depend on the input"
    if not _varies(value):
        return "its output is the same at every position"
    if reshape is None and _becomes_tokens(outputs, index):
        return "the model turns its output into a token sequence (a patch embedding): a map there explains the " \
               "embedding, not the decision"
    return None


def _good_choice(outputs: list[_Output], other: list[_Output]) -> str | None:
    """The last layer that keeps a spatial map the model does not turn into tokens (a ResNet's layer4)."""
    good = [o.name for i, o in enumerate(outputs[:_token_start(outputs)])
            if _spatial(o.shape) and _varies(o.value) and not _becomes_tokens(outputs, i)
            and not (i < len(other) and torch.equal(o.value, other[i].value))]
    return good[-1] if good else None


def check_layer_method(name: str, options: dict[str, Any], model: nn.Module, size: tuple[int, int],
                       key: str = "attribution.options.layer", what: str = "classifier") -> str | None:
    """The layer `name` explains in `model` (None for a pixel method); refuses in one line a layer that cannot
    give a spatial explanation, naming a good choice. `size`: the probe images' (H, W), the run's input size."""
    method = build_attribution(name, model, **options)
    path = explained_layer(method)
    if path is None:
        return None
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    with torch.random.fork_rng(devices=[]):  # the probe must not move the run's random stream
        torch.manual_seed(0)
        probes = torch.rand(2, 2, 3, *size)
    outputs, other = (_probe(model, p.to(device)) for p in probes)
    why = _why_not(outputs, other, path, getattr(method, "reshape_transform", None))
    if why is not None:
        good = _good_choice(outputs, other)
        if options.get("layer") is not None:  # the model's own default layer, where it works, is the advice
            default = build_attribution(name, model, **{**options, "layer": None})
            default_path = explained_layer(default)
            if _why_not(outputs, other, default_path, getattr(default, "reshape_transform", None)) is None:
                good = default_path
        fix = f"Set {key}={good}" if good else f"This model has no such layer: use a pixel method ({PIXEL_METHODS})"
        raise ConfigError(f"{name} cannot explain the {what} at layer '{path}': {why}. {fix}.")
    log.info("%s explains the %s at layer '%s'", name, what, path)
    return path
