"""Attribution on transformers: layer methods on token outputs reshaped to the patch grid, a default layer per
family, checked against pytorch-grad-cam with its reshape_transform; attention rollout against a restatement of
Abnar & Zuidema (2020) computed by hand from the blocks' weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from iqa_saliency.attribution.base import default_layer
from iqa_saliency.attribution.registry import build_attribution
from iqa_saliency.errors import ConfigError
from iqa_saliency.models.classifier import load_classifier, load_timm_classifier

timm = pytest.importorskip("timm", reason="the zoo extra (pip install 'iqa-saliency[zoo]') is not installed")
pgc = pytest.importorskip("pytorch_grad_cam", reason="grad-cam (the dev extra) is not installed")
ClassifierOutputTarget = pytest.importorskip("pytorch_grad_cam.utils.model_targets").ClassifierOutputTarget


def _images(n: int = 2) -> torch.Tensor:
    return torch.rand(n, 3, 224, 224, generator=torch.Generator().manual_seed(7))


def _cc(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def _minmax(m: torch.Tensor) -> np.ndarray:
    m = m.detach().double().numpy()
    lo, hi = m.min(axis=(1, 2), keepdims=True), m.max(axis=(1, 2), keepdims=True)
    return (m - lo) / (hi - lo)


@pytest.mark.parametrize(("name", "layer"), [
    ("vit_tiny_patch16_224", "net.blocks.11.norm1"),
    ("deit_tiny_distilled_patch16_224", "net.blocks.11.norm1"),  # two prefix tokens (class + distillation)
    ("swin_tiny_patch4_window7_224", "net.layers.3"),
    ("convnext_atto", "net.stages.3"),
    ("efficientnet_b0", "net.conv_head"),  # no family: the last convolution, as for any CNN
])
def test_default_layer_per_family(name: str, layer: str) -> None:
    model = load_timm_classifier(name, pretrained=False).model
    assert default_layer(model) == layer
    assert build_attribution("gradcam", model).layer_path == layer


def test_torchvision_resnet_keeps_layer4() -> None:
    assert default_layer(load_classifier("resnet18", pretrained=False).model) == "net.layer4"


def _vit_reshape(prefix: int, grid: tuple[int, int]):
    """pytorch-grad-cam's documented ViT reshape_transform, written out for this test."""
    def reshape(tensor: torch.Tensor) -> torch.Tensor:
        result = tensor[:, prefix:, :].reshape(tensor.size(0), grid[0], grid[1], tensor.size(2))
        return result.transpose(2, 3).transpose(1, 2)
    return reshape


@pytest.mark.parametrize("name", ["vit_tiny_patch16_224", "deit_tiny_distilled_patch16_224",
                                  "swin_tiny_patch4_window7_224"])
def test_gradcam_equals_pytorch_grad_cam_with_reshape_transform(name: str) -> None:
    torch.manual_seed(0)
    classifier = load_timm_classifier(name, pretrained=False, seed=3)
    model, net = classifier.model, classifier.model.net
    x = _images()
    with torch.no_grad():
        target = model(x).argmax(dim=1)
    ours = build_attribution("gradcam", model)
    got = ours.attribute(x.clone().requires_grad_(True), target)
    if "swin" in name:
        layer, reshape = net.layers[-1], (lambda t: t.permute(0, 3, 1, 2))
    else:
        layer, reshape = net.blocks[-1].norm1, _vit_reshape(net.num_prefix_tokens, net.patch_embed.grid_size)
    with pgc.GradCAM(model=model, target_layers=[layer], reshape_transform=reshape) as cam:
        peer = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(t)) for t in target])
    for ours_map, peer_map in zip(_minmax(got), peer, strict=True):
        assert ours_map.std() > 0 and peer_map.std() > 0
        assert _cc(ours_map, peer_map) >= 0.9999


def _rollout_by_hand(net, x: torch.Tensor) -> np.ndarray:
    """Abnar & Zuidema (2020): per layer A = softmax(q k^T / sqrt(d)) from the block's own weights (float64),
    averaged over heads, Â = 0.5 A + 0.5 I renormalised by rows, rollout = Â_L ... Â_1; the class token's row over the
    patches."""
    net = net.double()
    with torch.no_grad():
        tokens = net.norm_pre(net._pos_embed(net.patch_embed(x.double())))
        rolled = None
        for block in net.blocks:
            h = block.norm1(tokens)
            b, n, c = h.shape
            heads = block.attn.num_heads
            qkv = (h @ block.attn.qkv.weight.T + block.attn.qkv.bias).reshape(b, n, 3, heads, c // heads)
            q, k = qkv[:, :, 0].transpose(1, 2), qkv[:, :, 1].transpose(1, 2)
            a = torch.softmax(q @ k.transpose(-2, -1) / np.sqrt(c // heads), dim=-1).mean(dim=1).numpy()
            a = 0.5 * a + 0.5 * np.eye(n)
            a = a / a.sum(axis=-1, keepdims=True)
            rolled = a if rolled is None else np.einsum("bij,bjk->bik", a, rolled)
            tokens = block(tokens)
    net.float()
    return rolled[:, 0, net.num_prefix_tokens:]


@pytest.mark.parametrize("name", ["vit_tiny_patch16_224", "deit_tiny_distilled_patch16_224"])
def test_attention_rollout_equals_restatement(name: str) -> None:
    classifier = load_timm_classifier(name, pretrained=False, seed=5)
    x = _images()
    method = build_attribution("attention_rollout", classifier.model)
    got = method.token_map(x).flatten(1).numpy()
    normalized = (x - classifier.model.mean) / classifier.model.std
    want = _rollout_by_hand(classifier.model.net, normalized)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    assert np.all(got.std(axis=1) > 0)
    maps = method.attribute(x, None)
    assert maps.shape == (2, 224, 224)
    assert all(b.attn.fused_attn for b in classifier.model.net.blocks)  # restored after the pass


def test_attention_rollout_refuses_a_cnn_in_one_line() -> None:
    with pytest.raises(ConfigError, match="needs a timm ViT/DeiT.*attribution=gradcam") as info:
        build_attribution("attention_rollout", load_classifier("resnet18", pretrained=False).model)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("arch", "layer"), [
    ("vit_b_16", "net.encoder.layers.encoder_layer_11.ln_1"),  # torchvision names its blocks encoder_layer_N
    ("swin_t", "net.features.7"),  # torchvision's last stage (stages and patch mergings alternate in features)
])
def test_torchvision_transformers_default_to_their_last_block(arch: str, layer: str) -> None:
    model = load_classifier(arch, pretrained=False).model
    assert default_layer(model) == layer
    assert build_attribution("gradcam", model).layer_path == layer


def test_torchvision_vit_gradcam_equals_pytorch_grad_cam_with_reshape_transform() -> None:
    torch.manual_seed(0)
    model = load_classifier("vit_b_16", pretrained=False).model
    torch.nn.init.normal_(model.net.heads.head.weight, std=0.02)  # torchvision initialises the head to zeros
    x = _images(1)
    with torch.no_grad():
        target = model(x).argmax(dim=1)
    got = build_attribution("gradcam", model).attribute(x.clone().requires_grad_(True), target)
    layer = model.net.encoder.layers[-1].ln_1
    with pgc.GradCAM(model=model, target_layers=[layer], reshape_transform=_vit_reshape(1, (14, 14))) as cam:
        peer = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(t)) for t in target])
    ours_map, peer_map = _minmax(got)[0], peer[0]
    assert ours_map.std() > 0 and peer_map.std() > 0
    assert _cc(ours_map, peer_map) >= 0.9999
