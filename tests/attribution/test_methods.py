"""Attribution registry and methods: against captum called directly, hand-written references and completeness."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from captum.attr import (
    GuidedGradCam,
    IntegratedGradients,
    LayerAttribution,
    LayerGradCam,
    NoiseTunnel,
    Occlusion,
    Saliency,
)

from iqa_saliency.attribution.base import default_layer, make_baseline
from iqa_saliency.attribution.registry import (
    ATTRIBUTION_METHODS,
    build_attribution,
    check_attribution,
    general_methods,
    method_defaults,
)
from iqa_saliency.attribution.surgery import ReluMaxPool2d, separate_relus
from iqa_saliency.data.images import prepare_image
from iqa_saliency.data.sources import SampleImages
from iqa_saliency.errors import ConfigError
from iqa_saliency.models.classifier import load_classifier
from iqa_saliency.models.paq2piq import GlobalScore, load_paq2piq

CONF = Path(__file__).resolve().parents[2] / "conf" / "attribution"


@pytest.fixture(scope="module")
def classifier():
    return load_classifier(pretrained=False, seed=0)


@pytest.fixture(scope="module")
def quality_score():
    return GlobalScore(load_paq2piq(pretrained=False, seed=0)[0]).eval()


@pytest.fixture(scope="module")
def samples() -> torch.Tensor:
    """Two real photos (chelsea, coffee) prepared as the pipeline does, at 128x128, RGB in [0, 1]."""
    src = SampleImages(["chelsea", "coffee"])
    images = [np.asarray(prepare_image(src.load(r), 128, 128)) for r in src.records]
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255


def _grad_input(x: torch.Tensor) -> torch.Tensor:
    return x.clone().requires_grad_(True)


@pytest.mark.parametrize("which", ["classifier", "quality"])
@pytest.mark.parametrize("name", general_methods())
def test_every_method_gives_finite_nonconstant_maps_on_a_batch(name, which, classifier, quality_score, samples):
    if which == "classifier":
        model, x = classifier.model, samples
        with torch.no_grad():
            target = model(x).argmax(dim=1)  # as the pipeline's attribution.target=pred
    else:  # PaQ-2-PiQ's global score, on smaller copies to keep the suite fast
        model, x, target = quality_score, F.interpolate(samples, size=(64, 64), mode="area"), 0
    maps = build_attribution(name, model).attribute(_grad_input(x), target)
    assert maps.shape == x[:, 0].shape
    assert torch.isfinite(maps).all()
    assert (maps.flatten(1).std(dim=1) > 0).all()


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


def test_saliency_equals_captum_directly(classifier, samples):
    target = torch.tensor([281, 967])
    got = build_attribution("saliency", classifier.model).attribute(_grad_input(samples), target)
    want = Saliency(classifier.model).attribute(_grad_input(samples), target=target, abs=True).sum(dim=1)
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("baseline", ["black", "blurred", "mean"])
def test_integrated_gradients_equals_captum_directly(classifier, samples, baseline):
    model, target = classifier.model, torch.tensor([281, 967])
    method = build_attribution("integrated_gradients", model, baseline=baseline, n_steps=8, internal_batch_size=4)
    got = method.attribute(_grad_input(samples), target)
    base = {"black": torch.zeros_like(samples),
            "mean": torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1).expand_as(samples),
            "blurred": F.conv2d(F.pad(samples, (15, 15, 15, 15), mode="reflect"),
                                _gauss_kernel(5.0, 31).expand(3, 1, 31, 31), groups=3)}[baseline]
    want = IntegratedGradients(model).attribute(_grad_input(samples), baselines=base, target=target, n_steps=8)
    torch.testing.assert_close(got, want.abs().sum(dim=1), rtol=1e-4, atol=1e-5)


def _gauss_kernel(sigma: float, size: int) -> torch.Tensor:
    r = torch.arange(size, dtype=torch.float32) - size // 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def _target_output(model, x, target):
    with torch.no_grad():
        return model(x).gather(1, target[:, None])[:, 0]


def test_integrated_gradients_completeness_error_shrinks_with_steps(classifier, samples):
    model, target = classifier.model, torch.tensor([281, 967])
    delta = _target_output(model, samples, target) - _target_output(model, torch.zeros_like(samples), target)
    errors = {}
    for steps in (4, 64):
        raw = build_attribution("integrated_gradients", model, n_steps=steps).raw(_grad_input(samples), target)
        errors[steps] = ((raw.sum(dim=(1, 2, 3)) - delta).abs() / delta.abs()).max().item()
    print(f"IG relative completeness error: {errors}")
    assert errors[64] < 0.02
    assert errors[64] < errors[4]


@pytest.mark.parametrize("baseline", ["black", "blurred"])
def test_deeplift_completeness_holds(classifier, samples, baseline):
    model, target = classifier.model, torch.tensor([281, 967])
    method = build_attribution("deeplift", model, baseline=baseline)
    raw = method.raw(_grad_input(samples), target)
    reference = make_baseline(samples, baseline)
    delta = _target_output(model, samples, target) - _target_output(model, reference, target)
    torch.testing.assert_close(raw.sum(dim=(1, 2, 3)), delta, rtol=1e-4, atol=1e-4)


def test_separate_relus_same_function_each_relu_once(classifier, samples):
    model = classifier.model
    twin = separate_relus(model, maxpool=True)
    calls: dict[int, int] = {}
    relus = [m for m in twin.modules() if isinstance(m, torch.nn.ReLU)]
    for m in relus:
        m.register_forward_hook(lambda mod, i, o: calls.__setitem__(id(mod), calls.get(id(mod), 0) + 1))
    with torch.no_grad():
        torch.testing.assert_close(twin(samples), model(samples), rtol=1e-5, atol=1e-5)
    assert relus and all(not m.inplace for m in relus)
    assert set(calls.values()) == {1} and len(calls) == len(relus)
    assert any(m.inplace for m in model.modules() if isinstance(m, torch.nn.ReLU))  # the original is untouched


@pytest.mark.parametrize(("kernel", "stride", "padding"), [(3, 2, 1), (2, 2, 0), (3, 1, 1), (5, 3, 2)])
def test_relu_maxpool_equals_max_pool2d(kernel, stride, padding):
    x = torch.randn(2, 3, 17, 14, generator=torch.Generator().manual_seed(kernel + stride))
    pool = torch.nn.MaxPool2d(kernel, stride, padding)
    torch.testing.assert_close(ReluMaxPool2d(pool)(x), pool(x), rtol=0, atol=1e-6)


def _layer_grads_acts(model, layer, x, target):
    store = {}
    handle = layer.register_forward_hook(lambda m, i, o: store.__setitem__("a", o))
    out = model(x)
    handle.remove()
    selected = out.gather(1, target[:, None]).sum()
    (grads,) = torch.autograd.grad(selected, store["a"])
    return grads.detach(), store["a"].detach()


def test_layer_cam_equals_hand_written_reference(classifier, samples):
    model, target = classifier.model, torch.tensor([281, 967])
    g, a = _layer_grads_acts(model, model.net.layer4, _grad_input(samples), target)
    cam = (g.clamp_min(0) * a).sum(1, keepdim=True).clamp_min(0)
    want = F.interpolate(cam, size=(128, 128), mode="bilinear", align_corners=False)[:, 0]
    got = build_attribution("layer_cam", model).attribute(_grad_input(samples), target)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)


def test_gradcam_plus_plus_equals_numpy_reference(classifier, samples):
    model, target = classifier.model, torch.tensor([281, 967])
    g, a = (t.double().numpy() for t in _layer_grads_acts(model, model.net.layer4, _grad_input(samples), target))
    # the paper's closed form: alpha = g² / (2g² + ΣA·g³), weights = Σ alpha·ReLU(g) (pytorch-grad-cam adds eps 1e-6)
    denom = 2 * g**2 + a.sum(axis=(2, 3), keepdims=True) * g**3
    alpha = np.where(denom != 0, g**2 / np.where(denom != 0, denom, 1), 0)
    weights = (alpha * np.maximum(g, 0)).sum(axis=(2, 3), keepdims=True)
    cam = np.maximum((weights * a).sum(axis=1, keepdims=True), 0)
    want = F.interpolate(torch.from_numpy(cam).float(), size=(128, 128), mode="bilinear", align_corners=False)[:, 0]
    got = build_attribution("gradcam_plus_plus", model).attribute(_grad_input(samples), target)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_smoothgrad_is_seeded_and_equals_noise_tunnel(classifier, samples):
    model, target = classifier.model, torch.tensor([281, 967])
    a = build_attribution("smoothgrad", model, nt_samples=4, seed=3).attribute(_grad_input(samples), target)
    b = build_attribution("smoothgrad", model, nt_samples=4, seed=3).attribute(_grad_input(samples), target)
    c = build_attribution("smoothgrad", model, nt_samples=4, seed=4).attribute(_grad_input(samples), target)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, c)
    torch.manual_seed(3)
    want = NoiseTunnel(Saliency(model)).attribute(_grad_input(samples), nt_type="smoothgrad", nt_samples=4,
                                                  stdevs=0.15, target=target, abs=True)
    torch.testing.assert_close(a, want.abs().sum(dim=1))


def test_guided_gradcam_on_split_relus_equals_captum_on_the_original(classifier, samples):
    model, target = classifier.model, torch.tensor([281, 967])
    got = build_attribution("guided_gradcam", model).attribute(_grad_input(samples), target)
    want = GuidedGradCam(model, model.net.layer4).attribute(_grad_input(samples), target=target)
    torch.testing.assert_close(got, want.abs().sum(dim=1), rtol=1e-4, atol=1e-7)


def test_occlusion_equals_captum_directly(classifier, samples):
    model, target = classifier.model, torch.tensor([281, 967])
    got = build_attribution("occlusion", model, window=64, stride=32).attribute(_grad_input(samples), target)
    want = Occlusion(model).attribute(samples, sliding_window_shapes=(3, 64, 64), strides=(3, 32, 32),
                                      baselines=0.0, target=target)
    torch.testing.assert_close(got, want.abs().sum(dim=1), rtol=1e-4, atol=1e-6)


def test_every_method_has_a_config_matching_its_defaults():
    for name in ATTRIBUTION_METHODS:
        conf = yaml.safe_load((CONF / f"{name}.yaml").read_text())
        assert conf["name"] == name and conf["target"] == "pred"
        defaults = method_defaults(name)
        assert set(conf["options"]) == set(defaults), name
        for key, value in conf["options"].items():
            if value != "${seed}":
                assert value == defaults[key], (name, key)


def test_default_layer_is_layer4(classifier, quality_score):
    assert default_layer(classifier.model) == "net.layer4"
    assert default_layer(quality_score) == "model.body.7"


def test_unknown_method_lists_names(classifier):
    with pytest.raises(ConfigError, match="Unknown attribution method 'gradcamm'.*gradcam"):
        build_attribution("gradcamm", classifier.model)


def test_unknown_layer_names_a_valid_one(classifier):
    with pytest.raises(ConfigError, match="net.layer4"):
        build_attribution("gradcam", classifier.model, layer="net.layer9")


@pytest.mark.parametrize(("name", "options", "needle"), [
    ("integrated_gradients", {"n_step": 3}, "no option n_step.*n_steps"),
    ("integrated_gradients", {"baseline": "white"}, "baseline='white'.*black, blurred, mean"),
    ("integrated_gradients", {"n_steps": 0}, "n_steps=0 must be a positive"),
    ("saliency", {"reduce": "mean"}, "reduce='mean'.*abs_sum"),
    ("gradient_shap", {"baseline": "blurred"}, "baseline=black"),
])
def test_bad_options_are_config_errors(classifier, name, options, needle):
    with pytest.raises(ConfigError, match=needle):
        build_attribution(name, classifier.model, **options)


def test_check_attribution_needs_no_model():
    check_attribution("occlusion", {"window": 8})
    with pytest.raises(ConfigError, match="no option windw"):
        check_attribution("occlusion", {"windw": 8})


@pytest.mark.parametrize("name", sorted(ATTRIBUTION_METHODS))
def test_check_attribution_checks_values_and_leaves_the_rng_alone(name):
    """Values are checked before any model exists (the method's own checks on a stand-in); the caller's random
    stream does not move, so checking cannot change a seeded run's numbers."""
    state = torch.random.get_rng_state()
    check_attribution(name, {k: v for k, v in method_defaults(name).items() if k != "layer"})
    assert torch.equal(torch.random.get_rng_state(), state)
    option = "reduce" if "reduce" in method_defaults(name) else "interpolate"
    if option in method_defaults(name):
        with pytest.raises(ConfigError, match=option):
            check_attribution(name, {option: "no-such-choice"})


def test_occlusion_window_larger_than_image_is_a_config_error(classifier, samples):
    with pytest.raises(ConfigError, match="window.*at most 128"):
        build_attribution("occlusion", classifier.model, window=160).attribute(samples, torch.tensor([1, 2]))


def test_bench_prints_a_row_per_method(capsys):
    from benchmarks.attribution import main

    main(["--methods", "gradcam", "deeplift", "--size", "64", "--images", "1", "--batch-size", "1"])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| gradcam") or line.startswith("| deeplift")]
    assert len(rows) == 2
    assert float(rows[1].split("|")[4]) < 1e-3  # DeepLift's completeness error column


@pytest.mark.cuda
@pytest.mark.parametrize("name", general_methods())
def test_every_method_on_gpu_matches_cpu(name, samples, monkeypatch):
    # TF32 convolutions and matmuls (PyTorch's GPU default for cuDNN) round to 10-bit mantissas; compare fp32 maths
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    cpu_model = load_classifier(pretrained=False, seed=0).model
    gpu_model = load_classifier(pretrained=False, seed=0).model.cuda()
    with torch.no_grad():
        target = cpu_model(samples).argmax(dim=1)
    want = build_attribution(name, cpu_model).attribute(_grad_input(samples), target)
    got = build_attribution(name, gpu_model).attribute(_grad_input(samples.cuda()), target.cuda()).cpu()
    assert got.shape == want.shape and torch.isfinite(got).all()
    if name in ("smoothgrad", "gradient_shap"):  # their noise comes from the device's own generator
        return
    if name in ("gradcam", "layer_cam", "gradcam_plus_plus", "guided_gradcam", "occlusion"):
        torch.testing.assert_close(got, want, rtol=1e-2, atol=1e-3 * float(want.abs().max()))
    else:
        # input gradients pass ReLU and max-pool switches, where last-bit differences between cuDNN and the CPU
        # kernels flip single pixels: compare the maps as wholes
        from iqa_saliency.evaluation.similarity import pearson_cc

        assert float(pearson_cc(got, want).min()) > 0.98
