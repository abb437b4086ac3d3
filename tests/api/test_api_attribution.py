"""evaluate_images(attribution=<captum object | function>): the run's maps are the named method's and captum's own
on the same pixels, the run records the method as user-supplied; what cannot work is refused before any run."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients, Saliency
from torch import nn

from iqa_saliency.api import evaluate_images

SIDE = 48
OPTIONS = ["allow_untrained_fallback=true", f"dataset.resize={SIDE}", f"dataset.crop={SIDE}",
           "classifier.normalize=false", "figures=0"]


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5)).eval()


def photos() -> list[np.ndarray]:
    """Two real photos, already at the run's size (resize and crop leave them as they are)."""
    from PIL import Image
    from skimage import data

    return [np.array(Image.fromarray(image).resize((SIDE, SIDE))) for image in (data.chelsea(), data.coffee())]


@pytest.mark.slow
def test_a_captum_object_and_a_function_give_the_named_method_s_and_captum_s_maps():
    net, images = small_net(), photos()
    common = {"corruption": "contrast", "severity": 1, "classifier": net, "pretrained": False,
              "names": ["chelsea", "coffee"]}
    named = evaluate_images(images, attribution="integrated_gradients",
                            overrides=[*OPTIONS, "attribution.options.n_steps=20"], **common)
    ig = IntegratedGradients(net)
    given = evaluate_images(images, attribution=functools.partial(ig.attribute, n_steps=20), overrides=OPTIONS,
                            **common)
    calls = []

    def gradients(x, target):
        calls.append(tuple(x.shape))
        return Saliency(net).attribute(x, target=target)

    function = evaluate_images(images, attribution=gradients, overrides=OPTIONS, **common)
    assert given.summary["attribution"] == "given:captum.IntegratedGradients"
    assert given.summary["config"]["attribution"]["options"] == {
        "kind": "captum", "class": "captum.attr.IntegratedGradients", "layer": None, "arguments": {"n_steps": "20"}}
    assert function.summary["attribution"].startswith("given:") and "gradients" in function.summary["attribution"]
    assert calls and all(shape[1:] == (3, SIDE, SIDE) for shape in calls)
    for image, pixels in zip(common["names"], images, strict=True):
        for key in ("attribution", "attribution_clean"):  # the corrupted and the clean image's maps
            np.testing.assert_allclose(given.maps[image][key], named.maps[image][key], rtol=1e-4, atol=1e-8,
                                       err_msg=f"{image} {key}")
        # captum itself on the clean pixels, for the class the classifier predicted, abs-summed over channels
        x = torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255.0
        target = int(named.rows.set_index("image").loc[image, "clean_pred"])
        reference = IntegratedGradients(net).attribute(x, target=target, n_steps=20).abs().sum(dim=1)[0]
        np.testing.assert_allclose(given.maps[image]["attribution_clean"], reference.numpy(), rtol=1e-4, atol=1e-8)
        saliency = Saliency(net).attribute(x.requires_grad_(True), target=target).abs().sum(dim=1)[0]
        np.testing.assert_allclose(function.maps[image]["attribution_clean"], saliency.numpy(), rtol=1e-4,
                                   atol=1e-8)
    assert (given.rows["sim_cc"] - named.rows["sim_cc"]).abs().max() < 1e-4


def test_a_captum_object_that_cannot_work_is_refused_before_the_run():
    net, other = small_net(), small_net()
    image = np.zeros((SIDE, SIDE, 3), np.uint8)
    with pytest.raises(ValueError, match="bound to another model"):
        evaluate_images([image], attribution=Saliency(other), classifier=net, overrides=OPTIONS)
    with pytest.raises(ValueError, match="classifier="):
        evaluate_images([image], attribution=Saliency(net), overrides=OPTIONS)  # classifier by name
    with pytest.raises(ValueError, match="no attribute"):
        evaluate_images([image], attribution=net, classifier=net, overrides=OPTIONS)
