"""The layer maps (gradcam, gradcam_plus_plus, layer_cam) against the peer library pytorch-grad-cam itself.

pytorch-grad-cam (PyPI `grad-cam`, a test-only dependency) captures the target layer's output and its gradient with
its own hooks and computes the cam with its own code: `get_cam_image` gives the layer-resolution cam before ReLU,
and a call gives, per image, ReLU -> min-max to [0, 1] -> cv2.resize (INTER_LINEAR) to the input -> min-max again.
The project's maps are not normalised (bilinear torch upsampling of the ReLU'd layer map), so at the input
resolution both are compared after a per-image min-max.

Grad-CAM++ convention: pytorch-grad-cam adds eps = 1e-6 to the closed-form denominator,
alpha = g² / (2g² + ΣA·g³ + 1e-6); the project divides exactly (alpha = 0 where the denominator is 0, which
covers pytorch-grad-cam's zeroing of alpha where g == 0). At layer4 of a ResNet the gradient is fc weight / (h·w),
|g| <= 2.2e-3 here, so 2g² <= 1e-5 is of the order of that eps and the two maps really differ (by 22-26% of the
peak at layer4, 0.024-0.035 after min-max at the input size). The closed form is invariant to A -> A/λ, g -> λg
except for eps, which becomes eps/λ²; dividing the target layer's output by λ = 2**20 (and multiplying it back
after, exact in floating point) makes pytorch-grad-cam run its own code with eps effectively 9e-19. The project is
held to that, tightly, and a test pins that the default eps does change the map on these images.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.transforms.functional import center_crop

from iqa_saliency.attribution.registry import build_attribution
from iqa_saliency.data.images import prepare_image
from iqa_saliency.data.sources import SampleImages
from iqa_saliency.models.classifier import load_classifier

pgc = pytest.importorskip("pytorch_grad_cam")
ClassifierOutputTarget = pytest.importorskip("pytorch_grad_cam.utils.model_targets").ClassifierOutputTarget

PEER = {"gradcam": pgc.GradCAM, "gradcam_plus_plus": pgc.GradCAMPlusPlus, "layer_cam": pgc.LayerCAM}
# tabby cat, coffee mug, suit: explicit targets whose untrained-model Grad-CAM keeps 30-95% of the layer4 cells
# after ReLU on these images (a target with an all-negative cam, e.g. 967 on coffee, would compare zeros)
TARGET = torch.tensor([281, 504, 834])
SIZE = (112, 144)  # (H, W), non-square: layer4 is 4 x 5 and layer3 7 x 9, non-integer upsampling factors
LAMBDA = 2.0**20  # power of two: A/λ and λ·A are exact; pytorch-grad-cam's eps becomes 1e-6 / λ² ≈ 9e-19
# Layer resolution: |project - peer| <= REL_LAYER x the image's peak. Measured <= 6.3e-7 (float32 sums in a
# different order: captum/torch vs numpy).
REL_LAYER = 1e-5
# Input resolution, after min-max to [0, 1]: measured max |diff| <= 9.8e-7 over the three methods. cv2.resize
# INTER_LINEAR and torch bilinear (align_corners=False) both sample at half-pixel centres and clamp at the border;
# on random 3x4..8x9 float32 maps in [0, 1] upsampled to 112 x 144 they differ by <= 3.6e-7 (cv2 <= 8.7e-8 and
# torch <= 3.5e-7 from a float64 bilinear), and scale_cam_image's 1e-7 in the min-max adds <= 1e-7.
# 5e-6 is 5x the measured and ~5000x below the eps effect on Grad-CAM++ (>= 0.024 per image).
ATOL_INPUT = 5e-6


class _Scale(nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


@pytest.fixture(scope="module")
def classifier():
    return load_classifier(pretrained=False, seed=0)


@pytest.fixture(scope="module")
def samples() -> torch.Tensor:
    """chelsea, coffee and astronaut: shorter side 144 as the pipeline resizes, centre crop 112 x 144, RGB [0, 1]."""
    src = SampleImages(["chelsea", "coffee", "astronaut"])
    images = [np.asarray(center_crop(prepare_image(src.load(r), 144, None), list(SIZE))) for r in src.records]
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255


def _targets() -> list:
    return [ClassifierOutputTarget(int(t)) for t in TARGET]


def _explained(model: nn.Module, layer: str, scale: float) -> tuple[nn.Module, nn.Module]:
    """(model, target module) for pytorch-grad-cam: with scale != 1 a copy whose layer output is divided by
    `scale` at the target module and multiplied back right after (same logits, gradient x scale)."""
    if scale == 1:
        return model, model.get_submodule(layer)
    scaled = copy.deepcopy(model)
    parent, _, name = layer.rpartition(".")
    target = _Scale(1 / scale)
    setattr(scaled.get_submodule(parent), name, nn.Sequential(scaled.get_submodule(layer), target, _Scale(scale)))
    return scaled, target


def _peer(name: str, model: nn.Module, layer: str, x: torch.Tensor, scale: float = 1.0
          ) -> tuple[np.ndarray, np.ndarray]:
    """pytorch-grad-cam's layer-resolution cam after its ReLU (B, h, w), and its call's output (B, H, W)."""
    explained, module = _explained(model, layer, scale)
    if scale != 1:
        with torch.no_grad():
            assert torch.equal(explained(x), model(x))
    with PEER[name](model=explained, target_layers=[module]) as cam:
        out = cam(input_tensor=x, targets=_targets())
        acts = cam.activations_and_grads.activations[0].numpy()
        grads = cam.activations_and_grads.gradients[0].numpy()
        layer_cam = cam.get_cam_image(x, module, _targets(), acts, grads, False)
    return np.maximum(layer_cam, 0), out


def _project_layer_map(name: str, model: nn.Module, layer: str, x: torch.Tensor) -> np.ndarray:
    method = build_attribution(name, model, layer=layer)
    return method.layer_map(x.clone().requires_grad_(True), TARGET)[:, 0].detach().numpy()


def _min_max(maps: np.ndarray) -> np.ndarray:
    maps = maps.astype(np.float64) - maps.min(axis=(1, 2), keepdims=True)
    return maps / maps.max(axis=(1, 2), keepdims=True)


def _relative_to_peak(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    """Per image: max |got - want| over the image / the peak of `want` (> 0: the maps must not be all zero)."""
    peak = want.max(axis=(1, 2))
    assert (peak > 0).all()
    return np.abs(got.astype(np.float64) - want).max(axis=(1, 2)) / peak


@pytest.mark.parametrize("layer", ["net.layer4", "net.layer3"])
@pytest.mark.parametrize("name", sorted(PEER))
def test_layer_map_equals_pytorch_grad_cam_get_cam_image(name, layer, classifier, samples):
    # layer3's gradient varies over space (layer4's is constant: global average pooling follows it)
    scale = LAMBDA if name == "gradcam_plus_plus" else 1.0  # the eps convention, see the module docstring
    want, _ = _peer(name, classifier.model, layer, samples, scale)
    got = _project_layer_map(name, classifier.model, layer, samples)
    assert got.shape == want.shape == ((3, 4, 5) if layer == "net.layer4" else (3, 7, 9))
    assert (want.min(axis=(1, 2)) < want.max(axis=(1, 2))).all()
    assert _relative_to_peak(got, want).max() <= REL_LAYER


@pytest.mark.parametrize("path", ["attribute", "predict_and_attribute"])
@pytest.mark.parametrize("name", sorted(PEER))
def test_min_max_map_at_input_size_equals_pytorch_grad_cam(name, path, classifier, samples):
    # predict_and_attribute is the pipeline's one-pass path (its own hook; gradcam: `cam`, not captum)
    scale = LAMBDA if name == "gradcam_plus_plus" else 1.0
    _, want = _peer(name, classifier.model, "net.layer4", samples, scale)
    method, x = build_attribution(name, classifier.model), samples.clone().requires_grad_(True)
    got = method.attribute(x, TARGET) if path == "attribute" else method.predict_and_attribute(x, TARGET)[1]
    assert got.shape == want.shape == (3, *SIZE)
    np.testing.assert_allclose(_min_max(got.detach().numpy()), want, rtol=0, atol=ATOL_INPUT)


def test_gradcam_plus_plus_differs_from_pytorch_grad_cam_by_its_eps_only(classifier, samples):
    """The project divides exactly; pytorch-grad-cam's default eps = 1e-6 changes the map on these images."""
    model, x = classifier.model, samples
    default_layer, default_out = _peer("gradcam_plus_plus", model, "net.layer4", x)
    eps_free_layer, eps_free_out = _peer("gradcam_plus_plus", model, "net.layer4", x, LAMBDA)
    got = _project_layer_map("gradcam_plus_plus", model, "net.layer4", x)
    # the convention matters here (measured 22-26% of the peak per image, 0.024-0.035 after min-max) ...
    assert (_relative_to_peak(default_layer, eps_free_layer) > 0.1).all()
    assert np.abs(default_out - eps_free_out).max() > 0.01
    # ... and it is the whole difference: the project is pytorch-grad-cam's own arithmetic with eps -> 0
    assert _relative_to_peak(got, eps_free_layer).max() <= REL_LAYER
    assert (_relative_to_peak(got, default_layer) > 0.1).all()


@pytest.mark.parametrize("name", sorted(PEER))
def test_cam_on_gradients_with_exact_zeros_equals_pytorch_grad_cam(name, classifier):
    """Spatially varying gradients with exact zeros and negatives (alpha's guards), ReLU'd activations, float64.

    Grad-CAM++ with eps -> 0 as above: the residual shrinks with λ (measured 1.3e-2 at λ = 1, 1.2e-9 at 2**13,
    7e-14 at 2**20, 2e-16 at 2**30), so what is left is pytorch-grad-cam's eps and nothing else.
    """
    rng = np.random.default_rng(0)
    acts = np.maximum(rng.normal(size=(2, 16, 5, 6)), 0)
    grads = rng.normal(scale=1e-2, size=acts.shape) * (rng.random(acts.shape) > 0.3)
    assert (grads == 0).mean() > 0.2
    scale = LAMBDA if name == "gradcam_plus_plus" else 1.0
    module = classifier.model.net.layer4
    with PEER[name](model=classifier.model, target_layers=[module]) as cam:
        want = np.maximum(cam.get_cam_image(None, module, None, acts / scale, grads * scale, False), 0)
    method = build_attribution(name, classifier.model)
    got = method.cam(torch.from_numpy(grads), torch.from_numpy(acts))[:, 0].numpy()
    assert _relative_to_peak(got, want).max() <= 1e-12


def test_gradcam_plus_plus_on_gradients_of_exactly_one_equals_pytorch_grad_cam(classifier):
    """Gradients of exactly +1 and -1 among small ones: alpha's guards test for 0 only, not for any other value."""
    rng = np.random.default_rng(1)
    acts = np.maximum(rng.normal(size=(2, 8, 4, 5)), 0)
    grads = rng.normal(scale=0.5, size=acts.shape)
    grads[0, :4, 1, 2], grads[1, 3:6, 0, :] = 1.0, -1.0
    module = classifier.model.net.layer4
    with PEER["gradcam_plus_plus"](model=classifier.model, target_layers=[module]) as cam:
        want = np.maximum(cam.get_cam_image(None, module, None, acts / LAMBDA, grads * LAMBDA, False), 0)
    got = build_attribution("gradcam_plus_plus", classifier.model).cam(torch.from_numpy(grads),
                                                                         torch.from_numpy(acts))[:, 0].numpy()
    assert _relative_to_peak(got, want).max() <= 1e-12


@pytest.mark.parametrize("layer", ["net.layer4", "net.layer3"])
def test_gradcam_plus_plus_with_the_peers_eps_is_pytorch_grad_cam_itself(layer, classifier, samples):
    """attribution.options.eps=1e-6 reproduces pytorch-grad-cam's default Grad-CAM++, unscaled, at the layer and at
    the input size."""
    want_layer, want_out = _peer("gradcam_plus_plus", classifier.model, layer, samples)
    method = build_attribution("gradcam_plus_plus", classifier.model, layer=layer, eps=1e-6)
    got = method.layer_map(samples.clone().requires_grad_(True), TARGET)[:, 0].detach().numpy()
    assert _relative_to_peak(got, want_layer).max() <= REL_LAYER
    out = method.attribute(samples.clone().requires_grad_(True), TARGET).detach().numpy()
    np.testing.assert_allclose(_min_max(out), want_out, rtol=0, atol=ATOL_INPUT)


@pytest.mark.parametrize("eps", [-1e-6, "small", float("nan")])
def test_gradcam_plus_plus_eps_must_be_a_number_at_least_zero(eps, classifier):
    from iqa_saliency.errors import ConfigError

    with pytest.raises(ConfigError, match=r"eps=.* Use 0 \(the paper\) or 1e-6 \(pytorch-grad-cam\)\.$"):
        build_attribution("gradcam_plus_plus", classifier.model, eps=eps)
