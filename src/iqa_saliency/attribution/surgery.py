"""Model surgery for attribution rules: single-use ReLU modules and max-pooling as a ReLU tree."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck


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
