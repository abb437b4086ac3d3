"""A caller's captum object or function as the pipeline's attribution method (attribution.given): the maps equal
captum called directly on the same inputs, post-processed as the named methods do (restated here), and equal the
named methods themselves; what cannot work is refused in one line."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
import torchvision
from captum.attr import DeepLift, IntegratedGradients, LayerGradCam, NoiseTunnel, Saliency
from torch import nn

from iqa_saliency.attribution import build_attribution
from iqa_saliency.attribution.given import given_attribution
from iqa_saliency.models.classifier import NormalizedClassifier
from iqa_saliency.models.folding import explains_folded_output, fold_batchnorm

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                         nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 6, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 5)).eval()


def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    return x, torch.tensor([1, 3])


def run(attribution, net: nn.Module, model: nn.Module) -> torch.Tensor:
    x, target = inputs()
    return given_attribution(attribution, net).build(model).attribute(x.clone().requires_grad_(True), target)


@pytest.mark.parametrize("normalize", [False, True])
def test_a_captum_saliency_object_gives_captum_s_maps_reduced_as_the_named_method(normalize):
    net = small_net()
    model = NormalizedClassifier(net, normalize=normalize)
    got = run(Saliency(net), net, model)
    x, target = inputs()
    # captum on the same [0, 1] pixels, the normalisation written out here; abs_sum over channels
    forward = (lambda v: net((v - MEAN) / STD)) if normalize else net
    reference = Saliency(forward).attribute(x.clone().requires_grad_(True), target=target).abs().sum(dim=1)
    torch.testing.assert_close(got, reference, rtol=1e-6, atol=0)
    named = build_attribution("saliency", model).attribute(x.clone().requires_grad_(True), target)
    torch.testing.assert_close(got, named, rtol=1e-6, atol=0)


def test_integrated_gradients_with_arguments_through_functools_partial():
    net = small_net()
    model = NormalizedClassifier(net)
    ig = IntegratedGradients(net)
    got = run(functools.partial(ig.attribute, n_steps=12), net, model)
    x, target = inputs()
    reference = IntegratedGradients(lambda v: net((v - MEAN) / STD)).attribute(
        x, target=target, n_steps=12).abs().sum(dim=1)  # black baseline: captum's default zeros
    torch.testing.assert_close(got, reference, rtol=1e-5, atol=1e-9)
    named = build_attribution("integrated_gradients", model, n_steps=12).attribute(x, target)
    torch.testing.assert_close(got, named, rtol=1e-5, atol=1e-9)


def test_a_layer_method_explains_the_same_layer_upsampled_as_grad_cam():
    net = small_net()
    model = NormalizedClassifier(net, normalize=False)
    cam = LayerGradCam(net, net[6])
    method = given_attribution(functools.partial(cam.attribute, relu_attributions=True), net).build(model)
    assert method.layer_path == "net.6" and method.layer is model.net[6]
    x, target = inputs()
    got = method.attribute(x, target)
    coarse = LayerGradCam(net, net[6]).attribute(x, target=target, relu_attributions=True)  # (B, 1, 16, 16)
    reference = F.interpolate(coarse, size=(32, 32), mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(got, reference, rtol=1e-5, atol=1e-9)
    named = build_attribution("gradcam", model, layer="net.6").attribute(x, target)
    torch.testing.assert_close(got, named, rtol=1e-5, atol=1e-9)


def test_the_rebound_object_follows_the_pipeline_s_folded_copy():
    net = small_net()
    folded = fold_batchnorm(NormalizedClassifier(net))
    assert folded.net[1].__class__ is nn.Identity  # the BatchNorm went into the convolution
    method = given_attribution(LayerGradCam(net, net[0]), net).build(folded)
    assert method.layer is folded.net[0] and explains_folded_output(method)  # so the run keeps it unfolded
    pixel = given_attribution(NoiseTunnel(Saliency(net)), net).build(folded)
    assert not explains_folded_output(pixel)


def test_deeplift_runs_on_single_use_relus_as_the_named_method():
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=4).eval()  # its blocks call one ReLU module twice
    model = NormalizedClassifier(net)
    x, target = inputs()
    got = given_attribution(DeepLift(net), net).build(model).attribute(x, target)
    named = build_attribution("deeplift", model).attribute(x, target)
    torch.testing.assert_close(got, named, rtol=1e-5, atol=1e-9)


def test_a_function_gets_the_pixels_and_its_output_is_post_processed_by_shape():
    net = small_net()
    model = NormalizedClassifier(net, normalize=False)
    seen = {}

    def pixels(x, target):
        seen["args"] = (x.shape, target.tolist())
        return x * 2 - 1  # (B, 3, H, W): abs-summed over channels

    x, target = inputs()
    torch.testing.assert_close(run(pixels, net, model), (x * 2 - 1).abs().sum(dim=1))
    assert seen["args"] == ((2, 3, 32, 32), [1, 3])
    coarse = torch.arange(2 * 2 * 4 * 4, dtype=torch.float32).view(2, 2, 4, 4)  # a layer map: upsampled, summed
    torch.testing.assert_close(run(lambda v, t: coarse, net, model),
                               F.interpolate(coarse, size=(32, 32), mode="bilinear").sum(dim=1))
    torch.testing.assert_close(run(lambda v, t: v[:, 0] - 0.5, net, model), x[:, 0] - 0.5)  # (B, H, W) as it is
    method = given_attribution(pixels, net).build(model)
    assert method.needs_unfolded and explains_folded_output(method)  # it calls the caller's module itself
    with pytest.raises(ValueError, match=r"returned \(2, 5\)"):
        run(lambda v, t: net(v), net, model)


@pytest.mark.parametrize("thing", [42, object(), IntegratedGradients, nn.Linear(2, 2)])
def test_what_has_no_attribute_and_is_no_function_is_refused(thing):
    with pytest.raises(ValueError, match="is not an attribution") as caught:
        given_attribution(thing, small_net())
    assert "\n" not in str(caught.value)


def test_a_captum_object_bound_to_another_model_or_without_the_model_is_refused():
    net, other = small_net(), small_net()
    with pytest.raises(ValueError, match="bound to another model") as caught:
        given_attribution(Saliency(other), net)
    assert "\n" not in str(caught.value)
    with pytest.raises(ValueError, match="bound to another model"):
        given_attribution(Saliency(lambda v: net(v)), net)  # a wrapper around it is another model
    with pytest.raises(ValueError, match="pass it as classifier="):
        given_attribution(Saliency(net), "resnet18")
    assert given_attribution(Saliency(net.forward), net).name == "given:captum.Saliency"
