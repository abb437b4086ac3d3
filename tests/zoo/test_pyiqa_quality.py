"""Quality models from pyiqa (quality=pyiqa): scores equal pyiqa's own create_metric(name)(x) on the same images and
the same weights file (made here: random init with a fixed seed, saved, loaded by both); PaQ-2-PiQ's pyiqa weights
in the project's RoIPool model; PIQE (classical, no learned weights) with its own distortion masks as the map."""

from __future__ import annotations

import pytest
import torch

from iqa_saliency.errors import ConfigError, WeightsUnavailableError
from iqa_saliency.models.pyiqa_zoo import load_pyiqa_quality

pyiqa = pytest.importorskip("pyiqa", reason="the zoo extra (pip install 'iqa-saliency[zoo]') is not installed")

# metric -> the key pyiqa's network reads its weights file under (None: a plain state_dict)
LEARNED = {"musiq": None, "cnniqa": "params", "topiq_nr": "params", "hyperiqa": "params", "wadiqam_nr": "params"}
ARCH_MODULE = {"musiq": "musiq_arch", "cnniqa": "cnniqa_arch", "topiq_nr": "topiq_arch", "hyperiqa": "hypernet_arch",
               "wadiqam_nr": "wadiqam_arch", "paq2piq": "paq2piq_arch"}


@pytest.fixture()
def offline_backbones(monkeypatch):
    """The ImageNet backbones pyiqa's networks fetch while being built stay at a seeded random init (no network
    here); the metric's own weights then overwrite every parameter, in pyiqa and in the project alike."""
    import timm.models._builder
    from torchvision import models as tvm
    from torchvision.models._api import WeightsEnum

    def fresh(self, *args, **kwargs):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return tvm.get_model(type(self).__name__.lower().removesuffix("_weights")).state_dict()

    monkeypatch.setattr(WeightsEnum, "get_state_dict", fresh)
    monkeypatch.setattr(timm.models._builder, "load_pretrained", lambda *a, **k: None)


def _random_weights_file(metric: str, key: str | None, path, monkeypatch) -> None:
    """pyiqa's network for `metric` built with no weights loaded (seeded), its state_dict saved as pyiqa reads it."""
    import importlib

    module = importlib.import_module(f"pyiqa.archs.{ARCH_MODULE[metric]}")
    with monkeypatch.context() as m:
        m.setattr(module, "load_pretrained_network", lambda *a, **k: None)
        torch.manual_seed(21)
        state = pyiqa.create_metric(metric, device="cpu").net.state_dict()
    torch.save(state if key is None else {key: state}, path)


def _images(n: int = 2, size: int = 224) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(9))


# the loader has no per-metric code: hyperiqa (three ResNet-50s built per run) is a slow duplicate of the other
# "params" metrics
@pytest.mark.parametrize("metric", [pytest.param(m, marks=pytest.mark.slow) if m == "hyperiqa" else m
                                    for m in sorted(LEARNED)])
def test_learned_metric_scores_equal_pyiqa(metric, tmp_path, offline_backbones, monkeypatch) -> None:
    path = tmp_path / f"{metric}.pth"
    _random_weights_file(metric, LEARNED[metric], path, monkeypatch)
    reference = pyiqa.create_metric(metric, device="cpu", pretrained_model_path=str(path))
    ours, weights = load_pyiqa_quality(metric, checkpoint=str(path))
    x = _images()
    torch.manual_seed(0)
    want = reference(x).reshape(2, -1)[:, 0]
    torch.manual_seed(0)
    with torch.no_grad():
        got = ours.score(x)[:, 0]
    torch.testing.assert_close(got, want.float(), rtol=1e-5, atol=1e-5)
    assert weights.name == f"pyiqa:{metric}" and weights.sha256 and ours.map_kind == "attribution:saliency"


def test_paq2piq_runs_pyiqa_weights_in_the_roipool_model(tmp_path, offline_backbones, monkeypatch) -> None:
    path = tmp_path / "paq2piq.pth"
    _random_weights_file("paq2piq", None, path, monkeypatch)
    reference = pyiqa.create_metric("paq2piq", device="cpu", pretrained_model_path=str(path))
    ours, weights = load_pyiqa_quality("paq2piq", checkpoint=str(path))
    x = _images()
    with torch.no_grad():
        score, local = ours.split(ours(x))
    torch.testing.assert_close(score, reference(x).reshape(-1), rtol=1e-4, atol=1e-4)
    assert local.shape == (2, 20, 20) and weights.sha256


def test_piqe_classical_score_direction_and_own_map() -> None:
    reference = pyiqa.create_metric("piqe", device="cpu")
    ours, weights = load_pyiqa_quality("piqe")
    x = _images()
    with torch.no_grad():
        score, local = ours.split(ours(x))
    torch.testing.assert_close(score, reference(x).reshape(-1).float())
    assert ours.lower_better and reference.lower_better and ours.map_kind.startswith("model:")
    assert weights.sha256 is None and local.shape == (2, 20, 20)
    normalized = ours.score_normalizer(torch.tensor([0.0, 100.0]))
    assert normalized.tolist() == pytest.approx([99.9, 0.0])  # lower is better: PIQE 0 is the best category


def test_saliency_map_of_the_score_is_pooled_to_the_grid(tmp_path, offline_backbones, monkeypatch) -> None:
    path = tmp_path / "cnniqa.pth"
    _random_weights_file("cnniqa", "params", path, monkeypatch)
    ours, _ = load_pyiqa_quality("cnniqa", checkpoint=str(path))
    x = _images(1)
    _, local = ours.split(ours(x))
    x = x.clone().requires_grad_(True)
    ours.score(x)[:, 0].sum().backward()  # the saliency map by hand: |d score / d pixel| summed over channels
    by_hand = torch.nn.functional.adaptive_avg_pool2d(x.grad.abs().sum(dim=1, keepdim=True), 20)[:, 0]
    torch.testing.assert_close(local, by_hand, rtol=1e-5, atol=1e-8)


def test_unknown_or_full_reference_metric_is_one_line() -> None:
    for name in ("topiq_nrr", "lpips"):  # a typo; a full-reference metric
        with pytest.raises(ConfigError, match="not a no-reference metric of pyiqa.*quality.metric") as info:
            load_pyiqa_quality(name)
        assert "\n" not in str(info.value)


def test_offline_uncached_weights_are_one_line(monkeypatch, tmp_path) -> None:
    import pyiqa.utils.download_util as download_util

    monkeypatch.setattr(download_util, "DEFAULT_CACHE_DIR", str(tmp_path))
    with pytest.raises(WeightsUnavailableError, match="not in pyiqa's cache folder.*pretrained=false") as info:
        load_pyiqa_quality("musiq", download=False)
    assert "\n" not in str(info.value)


def test_untrained_is_seeded_without_downloads() -> None:
    a, wa = load_pyiqa_quality("topiq_nr", pretrained=False, seed=2)
    b, _ = load_pyiqa_quality("topiq_nr", pretrained=False, seed=2)
    assert wa.name == "untrained"
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k
