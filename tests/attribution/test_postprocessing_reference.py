"""Attribution post-processing against hand-written references: channel reductions (numpy), baselines, and the
layer maps (Grad-CAM, LayerCAM, Grad-CAM++) from their papers' formulas on a tiny network whose layer output and
gradients are taken by hand: channel weights, ReLU on/off, upsampling mode, target (prediction or label)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms.functional import gaussian_blur

from iqa_saliency.attribution.base import make_baseline, reduce_channels
from iqa_saliency.attribution.layer import GradCAM, GradCAMPlusPlus, LayerCAM
from iqa_saliency.errors import ConfigError


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.stem = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.layer4 = nn.Sequential(nn.Conv2d(4, 5, 3, padding=1))
        self.fc = nn.Linear(5, 6)
        for p in self.parameters():
            p.data = torch.randn(p.shape, generator=g) * 0.7

    def head(self, acts: torch.Tensor) -> torch.Tensor:
        return self.fc(acts.mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layer4(F.relu(self.stem(x))))


MODEL = Tiny().eval()
X = torch.rand(3, 3, 14, 18, generator=torch.Generator().manual_seed(1))


def _acts_and_grads(target: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    acts = MODEL.layer4(F.relu(MODEL.stem(X))).detach().requires_grad_(True)
    logits = MODEL.head(acts)
    (grads,) = torch.autograd.grad(logits[torch.arange(len(X)), target].sum(), acts)
    return acts.detach().double().numpy(), grads.double().numpy()


def _upsample(cam: np.ndarray, mode: str) -> np.ndarray:
    up = F.interpolate(torch.from_numpy(cam)[:, None], size=X.shape[-2:], mode=mode,
                       **({} if mode == "nearest" else {"align_corners": False}))
    return up[:, 0].numpy()


def gradcam_ref(a: np.ndarray, g: np.ndarray, relu: bool) -> np.ndarray:
    cam = (g.mean(axis=(2, 3), keepdims=True) * a).sum(axis=1)  # Selvaraju et al.: α_k = mean of ∂y/∂A_k
    return np.maximum(cam, 0) if relu else cam


def layercam_ref(a: np.ndarray, g: np.ndarray, relu: bool) -> np.ndarray:
    cam = (np.maximum(g, 0) * a).sum(axis=1)  # Jiang et al.: Σ_k ReLU(∂y/∂A_k) ⊙ A_k
    return np.maximum(cam, 0) if relu else cam


def gradcampp_ref(a: np.ndarray, g: np.ndarray, relu: bool) -> np.ndarray:
    # Chattopadhay et al. (exponential output): α = g² / (2 g² + Σ_ab A · g³), w_k = Σ_ij α ReLU(g)
    denom = 2 * g**2 + a.sum(axis=(2, 3), keepdims=True) * g**3
    alpha = np.divide(g**2, denom, out=np.zeros_like(g), where=denom != 0)
    w = (alpha * np.maximum(g, 0)).sum(axis=(2, 3), keepdims=True)
    cam = (w * a).sum(axis=1)
    return np.maximum(cam, 0) if relu else cam


@pytest.mark.parametrize(("cls", "formula"), [(GradCAM, gradcam_ref), (LayerCAM, layercam_ref),
                                              (GradCAMPlusPlus, gradcampp_ref)])
@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("mode", ["bilinear", "nearest", "bicubic"])
def test_layer_maps_equal_their_formulas(cls, formula, relu, mode):
    method = cls(MODEL, layer="layer4", relu=relu, interpolate=mode)
    target = torch.tensor([0, 3, 5])
    a, g = _acts_and_grads(target)
    want = _upsample(formula(a, g, relu), mode)
    got = method.attribute(X.clone().requires_grad_(True), target).detach().double().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    if not relu:
        assert (want < 0).any()  # the ReLU matters on these maps


@pytest.mark.parametrize("cls", [GradCAM, LayerCAM, GradCAMPlusPlus])
def test_one_pass_explains_the_prediction_or_the_labels(cls):
    method = cls(MODEL, layer="layer4")
    with torch.no_grad():
        logits = MODEL(X)
    pred = logits.argmax(dim=1)
    out, maps = method.predict_and_attribute(X)
    torch.testing.assert_close(out, logits)
    torch.testing.assert_close(maps, method.attribute(X.clone().requires_grad_(True), pred), rtol=1e-4, atol=1e-5)
    labels = (pred + 1) % 6
    _, by_label = method.predict_and_attribute(X, labels)
    torch.testing.assert_close(by_label, method.attribute(X.clone().requires_grad_(True), labels),
                               rtol=1e-4, atol=1e-5)
    a, g = _acts_and_grads(pred)
    formula = {GradCAM: gradcam_ref, LayerCAM: layercam_ref, GradCAMPlusPlus: gradcampp_ref}[cls]
    np.testing.assert_allclose(maps.double().numpy(), _upsample(formula(a, g, True), "bilinear"),
                               rtol=1e-4, atol=1e-5)


def test_channel_reductions():
    a = np.random.default_rng(3).normal(size=(2, 3, 4, 5))
    t = torch.from_numpy(a)
    np.testing.assert_allclose(reduce_channels(t, "abs_sum").numpy(), np.abs(a).sum(axis=1))
    np.testing.assert_allclose(reduce_channels(t, "sum").numpy(), a.sum(axis=1))
    np.testing.assert_allclose(reduce_channels(t, "max_abs").numpy(), np.abs(a).max(axis=1))
    np.testing.assert_allclose(reduce_channels(t, "l2").numpy(), np.sqrt((a**2).sum(axis=1)))
    with pytest.raises(ConfigError, match="abs_sum, sum, max_abs, l2"):
        reduce_channels(t, "mean")


def test_baselines():
    x = torch.rand(2, 3, 40, 40, generator=torch.Generator().manual_seed(4))
    assert torch.equal(make_baseline(x, "black"), torch.zeros_like(x))
    mean = make_baseline(x, "mean")
    torch.testing.assert_close(mean[1, :, 7, 9], torch.tensor([0.485, 0.456, 0.406]))
    assert mean.shape == x.shape
    # sigma 2 px: kernel 2*round(3*2)+1 = 13
    torch.testing.assert_close(make_baseline(x, "blurred", blur_sigma=2.0), gaussian_blur(x, [13, 13], [2.0, 2.0]))
    with pytest.raises(ConfigError):
        make_baseline(x, "white")
    with pytest.raises(ConfigError, match="RGB"):
        make_baseline(x[:, :1], "mean")


@pytest.mark.parametrize("cls", [GradCAM, LayerCAM, GradCAMPlusPlus])
def test_one_pass_without_relu_and_recorded_options(cls):
    method = cls(MODEL, layer="layer4", relu=False, interpolate="nearest")
    extra = {"eps": 0.0} if cls is GradCAMPlusPlus else {}  # recorded too: it changes Grad-CAM++'s maps
    assert method.options == {"layer": "layer4", "relu": False, "interpolate": "nearest", **extra}
    assert method.layer is MODEL.layer4
    assert cls(MODEL, layer="stem").layer is MODEL.stem
    _, maps = method.predict_and_attribute(X)
    with torch.no_grad():
        pred = MODEL(X).argmax(dim=1)
    a, g = _acts_and_grads(pred)
    formula = {GradCAM: gradcam_ref, LayerCAM: layercam_ref, GradCAMPlusPlus: gradcampp_ref}[cls]
    want = _upsample(formula(a, g, False), "nearest")
    assert (want < 0).any()
    np.testing.assert_allclose(maps.double().numpy(), want, rtol=1e-4, atol=1e-5)
    with pytest.raises(ConfigError, match=r"attribution.options.interpolate='area' is not valid"):
        cls(MODEL, interpolate="area")


def test_baseline_defaults_dtype_and_messages():
    x = torch.rand(1, 3, 70, 70, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    torch.testing.assert_close(make_baseline(x, "blurred"), gaussian_blur(x, [31, 31], [5.0, 5.0]))  # sigma 5
    assert make_baseline(x, "mean").dtype == torch.float64
    with pytest.raises(ConfigError, match=r"^Unknown baseline 'white'. Set attribution.options.baseline to one of: "
                                          r"black, blurred, mean.$"):
        make_baseline(x, "white")
    with pytest.raises(ConfigError, match=r"^The mean baseline is an RGB colour. Set attribution.options.baseline="
                                          r"black or blurred.$"):
        make_baseline(x[:, :1], "mean")
