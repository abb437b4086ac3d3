"""A layer method explains a layer that can give a spatial map, or the run is refused in one line naming a good
choice (issue 22). The expectations are written from the architectures (which modules keep a spatial map larger
than 1x1 at a given input size), not from the check's own output."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from iqa_saliency.attribution.layer_check import check_layer_method
from iqa_saliency.errors import ConfigError
from iqa_saliency.models.classifier import NormalizedClassifier, build_network

LAYER_METHODS = ["gradcam", "layer_cam", "gradcam_plus_plus", "guided_gradcam"]
PIXEL_METHODS = ["saliency", "input_x_gradient"]


@pytest.fixture(scope="module")
def resnet18() -> NormalizedClassifier:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return NormalizedClassifier(build_network("resnet18")).eval()


# resnet18's downsampling: the stride of each module's output relative to the input
RESNET18_STRIDES = {"net.conv1": 2, "net.bn1": 2, "net.relu": 2, "net.maxpool": 4, "net.layer1": 4,
                    "net.layer2": 8, "net.layer3": 16, "net.layer4": 32}


CASES = [(size, layer) for size in (32, 64) for layer in [*RESNET18_STRIDES, "net.avgpool", "net.fc"]]


@pytest.mark.parametrize(("method", "size", "layer"),
                         [(LAYER_METHODS[i % len(LAYER_METHODS)], *case) for i, case in enumerate(CASES)])
def test_resnet18_layers_by_the_size_of_their_map(resnet18, method, size, layer):
    side = -(-size // RESNET18_STRIDES[layer]) if layer in RESNET18_STRIDES else 1  # ceil: padded convolutions
    if side > 1:
        assert check_layer_method(method, {"layer": layer}, resnet18, (size, size)) == layer
        return
    with pytest.raises(ConfigError) as caught:
        check_layer_method(method, {"layer": layer}, resnet18, (size, size))
    message = str(caught.value)
    # the good choice is the deepest stage whose map is still larger than 1x1 at this size
    good = max((n for n in ("net.layer1", "net.layer2", "net.layer3", "net.layer4")
                if -(-size // RESNET18_STRIDES[n]) > 1), key=lambda n: RESNET18_STRIDES[n])
    assert "\n" not in message and f"'{layer}'" in message and message.endswith(f"layer={good}.")
    assert "not a (B, C, H, W) map larger than 1x1" in message


@pytest.mark.parametrize("method", PIXEL_METHODS)
def test_pixel_methods_explain_no_layer(resnet18, method):
    assert check_layer_method(method, {}, resnet18, (64, 64)) is None


class TokenNet(nn.Module):
    """A ViT in miniature: a patch embedding, then the patches as a (B, N, C) token sequence."""

    def __init__(self, channels: int = 8, patch: int = 8, classes: int = 5, cls_token: bool = True) -> None:
        super().__init__()
        self.conv_proj = nn.Conv2d(3, channels, patch, stride=patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, channels)) if cls_token else None
        self.encoder = nn.Sequential(nn.LayerNorm(channels), nn.Linear(channels, channels))
        self.head = nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.conv_proj(x).flatten(2).transpose(1, 2)
        if self.cls is not None:
            tokens = torch.cat([self.cls.expand(len(x), -1, -1), tokens], dim=1)
        return self.head(self.encoder(tokens).mean(dim=1))


class ChannelsLastNet(nn.Module):
    """A Swin in miniature: a patch embedding, then a channels-last (B, H, W, C) grid."""

    def __init__(self, channels: int = 6) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, channels, 4, stride=4)
        self.norm = nn.LayerNorm(channels)
        self.head = nn.Linear(channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.patch(x).permute(0, 2, 3, 1)).mean(dim=(1, 2)))


class Broadcast(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x).contiguous()


class Constant(nn.Module):
    """A learned map added to the features: its output does not depend on the input."""

    def __init__(self) -> None:
        super().__init__()
        self.map = nn.Parameter(torch.randn(1, 4, 8, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.map.expand(len(x), -1, -1, -1)


class OddCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(8))
        self.pooled = Broadcast()
        self.positions = Constant()
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        return self.head((f + self.pooled(f) + self.positions(f)).mean(dim=(2, 3)))


@pytest.mark.parametrize("method", LAYER_METHODS)
@pytest.mark.parametrize(("model", "layer"), [(TokenNet(), None), (TokenNet(), "conv_proj"),
                                              (TokenNet(cls_token=False), None), (ChannelsLastNet(), None),
                                              (ChannelsLastNet(), "patch"), (ChannelsLastNet(), "norm"),
                                              (TokenNet(), "encoder.1")])
def test_a_patch_embedding_is_refused_and_a_pixel_method_named(method, model, layer):
    options = {"layer": layer} if layer else {}
    with pytest.raises(ConfigError) as caught:
        check_layer_method(method, options, model.eval(), (32, 32))
    message = str(caught.value)
    assert "\n" not in message and "token" in message and "integrated_gradients" in message


@pytest.mark.parametrize(("layer", "why"), [("pooled", "same at every position"),
                                            ("positions", "does not depend on the input"),
                                            ("head", "not a (B, C, H, W) map")])
def test_a_layer_without_a_spatial_map_of_the_input_is_refused(layer, why):
    with pytest.raises(ConfigError) as caught:
        check_layer_method("gradcam", {"layer": layer}, OddCNN().eval(), (32, 32))
    assert why in str(caught.value) and str(caught.value).endswith("layer=features.0.")  # the default layer
    assert check_layer_method("gradcam", {"layer": "features.0"}, OddCNN().eval(), (32, 32)) == "features.0"


def test_a_layer_the_forward_pass_never_runs_is_refused(resnet18):
    model = NormalizedClassifier(build_network("resnet18")).eval()
    model.net.unused = nn.Conv2d(3, 3, 3)
    with pytest.raises(ConfigError, match="never runs it"):
        check_layer_method("gradcam", {"layer": "net.unused"}, model, (64, 64))


def test_the_probe_leaves_the_random_stream_alone(resnet18):
    torch.manual_seed(5)
    want = torch.rand(3)
    torch.manual_seed(5)
    check_layer_method("gradcam", {}, resnet18, (64, 64))
    assert torch.equal(torch.rand(3), want)
