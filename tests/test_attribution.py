"""Attribution registry and Grad-CAM against captum called directly."""

from __future__ import annotations

import pytest
import torch
from captum.attr import LayerAttribution, LayerGradCam

from iqa_saliency.attribution import ATTRIBUTION_METHODS, build_attribution, default_layer
from iqa_saliency.errors import ConfigError
from iqa_saliency.models.classifier import load_classifier


@pytest.fixture(scope="module")
def classifier():
    return load_classifier(pretrained=False, seed=0)


def test_gradcam_equals_captum_directly(classifier):
    model = classifier.model
    torch.manual_seed(0)
    x = torch.rand(2, 3, 96, 96)
    target = torch.tensor([3, 7])
    got = build_attribution("gradcam", model).attribute(x, target)
    cam = LayerGradCam(model, model.net.layer4).attribute(x, target=target, relu_attributions=True)
    want = LayerAttribution.interpolate(cam, (96, 96), interpolate_mode="bilinear")[:, 0]
    assert got.shape == (2, 96, 96)
    torch.testing.assert_close(got, want)
    assert (got >= 0).all()


def test_default_layer_is_layer4(classifier):
    assert default_layer(classifier.model) == "net.layer4"


def test_unknown_method_lists_names(classifier):
    with pytest.raises(ConfigError, match="Unknown attribution method 'gradcamm'.*gradcam"):
        build_attribution("gradcamm", classifier.model)


def test_unknown_layer_names_a_valid_one(classifier):
    with pytest.raises(ConfigError, match="net.layer4"):
        build_attribution("gradcam", classifier.model, layer="net.layer9")


def test_registry_has_gradcam():
    assert "gradcam" in ATTRIBUTION_METHODS
