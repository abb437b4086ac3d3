"""Fold inference-mode BatchNorm into the convolution before it: the same function with fewer passes over memory."""

from __future__ import annotations

import copy
import logging

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

log = logging.getLogger(__name__)
# set on each convolution that has a BatchNorm folded into it
FOLDED = "folded_batchnorm"


def _fuse(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    fused = fuse_conv_bn_eval(conv, bn)
    setattr(fused, FOLDED, True)
    return fused


def explains_folded_output(explainer: object) -> bool:
    """Whether an attribution method hooks the output of a folded convolution (its `layer`), or must run on the
    model as given for another reason (`needs_unfolded`: a caller's function that calls their own module)."""
    return getattr(explainer, "needs_unfolded", False) or getattr(getattr(explainer, "layer", None), FOLDED, False)


def _foldable(conv: nn.Module, bn: nn.Module) -> bool:
    return (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats
            and bn.running_mean is not None and bn.num_features == conv.out_channels)


def _fold_in_place(module: nn.Module) -> int:
    """Fold every Conv2d -> BatchNorm2d pair: adjacent in a Sequential, or named convK / bnK (torchvision blocks)."""
    folded = 0
    children = dict(module.named_children())
    if isinstance(module, nn.Sequential):
        names = list(children)
        for first, second in zip(names, names[1:], strict=False):
            if _foldable(children[first], children[second]):
                setattr(module, first, _fuse(children[first], children[second]))
                setattr(module, second, nn.Identity())
                folded += 1
    else:
        for name, child in children.items():
            if name.startswith("conv") and _foldable(child, children.get("bn" + name[4:])):
                setattr(module, name, _fuse(child, children["bn" + name[4:]]))
                setattr(module, "bn" + name[4:], nn.Identity())
                folded += 1
    for child in module.children():
        folded += _fold_in_place(child)
    return folded


def fold_batchnorm(model: nn.Module, probe_size: int = 64, atol: float = 1e-4) -> nn.Module:
    """An eval-mode copy of `model` with BatchNorm folded into the convolutions, or `model` itself when there is
    nothing to fold or the copy's outputs on a random probe image differ (a block that uses its bn elsewhere)."""
    was_training = model.training
    model.eval()
    folded = copy.deepcopy(model)
    if _fold_in_place(folded) == 0:
        model.train(was_training)
        return model
    probe = torch.rand(2, 3, probe_size, probe_size, generator=torch.Generator().manual_seed(0))
    param = next(model.parameters(), None)
    if param is not None:
        probe = probe.to(param.device)
    with torch.no_grad():
        ref, got = model(probe), folded(probe)
    if not torch.allclose(got, ref, rtol=1e-4, atol=atol * max(1.0, float(ref.abs().max()))):
        log.warning("Folding BatchNorm into %s changed its outputs; it runs unfolded.", type(model).__name__)
        model.train(was_training)
        return model
    return folded
