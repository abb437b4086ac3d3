"""timm classifiers (classifier=timm): predictions equal timm's own forward on the same weights and its own input
normalisation; the weights file's identity is recorded; a missing extra or offline weights is one line."""

from __future__ import annotations

import pytest
import torch

from iqa_saliency.errors import ConfigError, WeightsUnavailableError
from iqa_saliency.models.classifier import load_classifier, load_timm_classifier

timm = pytest.importorskip("timm", reason="the zoo extra (pip install 'iqa-saliency[zoo]') is not installed")

# small members of the families the registry knows: ViT, DeiT, Swin, ConvNeXt, EfficientNet
NAMES = ["vit_tiny_patch16_224", "deit_tiny_patch16_224", "swin_tiny_patch4_window7_224", "convnext_atto",
         "efficientnet_b0"]


def _images(n: int = 2, size: int = 224) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("name", NAMES)
def test_predictions_equal_timm_forward(name: str, tmp_path) -> None:
    torch.manual_seed(11)
    reference = timm.create_model(name, pretrained=False).eval()
    path = tmp_path / f"{name}.pth"
    torch.save(reference.state_dict(), path)
    ours = load_timm_classifier(name, checkpoint=str(path), seed=0)
    x = _images()
    # timm's own preprocessing for the model: its data config's mean/std on [0, 1] pixels
    cfg = timm.data.resolve_data_config({}, model=reference)
    mean, std = torch.tensor(cfg["mean"]).view(1, 3, 1, 1), torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = reference((x - mean) / std)
        got = ours.model(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert ours.arch == f"timm/{name}" and ours.weights.sha256 and ours.num_classes == 1000


def test_vit_mean_std_are_the_models() -> None:
    """ViT augreg weights expect mean = std = 0.5, not ImageNet's: read from timm's pretrained config."""
    ours = load_timm_classifier("vit_tiny_patch16_224", pretrained=False)
    assert ours.model.mean.flatten().tolist() == pytest.approx([0.5] * 3)
    assert ours.model.std.flatten().tolist() == pytest.approx([0.5] * 3)


def test_untrained_is_seeded_and_marked() -> None:
    a = load_timm_classifier("convnext_atto", pretrained=False, seed=4)
    b = load_timm_classifier("convnext_atto", pretrained=False, seed=4)
    assert a.weights.name == "untrained"
    for (ka, va), (_, vb) in zip(a.model.state_dict().items(), b.model.state_dict().items(), strict=True):
        assert torch.equal(va, vb), ka


def test_unknown_name_is_one_line() -> None:
    with pytest.raises(ConfigError, match="Unknown timm model 'vit_nope'.*classifier.name") as info:
        load_timm_classifier("vit_nope", pretrained=False)
    assert "\n" not in str(info.value)


def test_offline_uncached_is_one_line(monkeypatch, tmp_path) -> None:
    hub = pytest.importorskip("huggingface_hub")

    def offline(*args, **kwargs):
        raise hub.errors.LocalEntryNotFoundError("offline")

    monkeypatch.setattr(hub, "hf_hub_download", offline)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # nor in the torch hub cache
    with pytest.raises(WeightsUnavailableError, match="pretrained=false") as info:
        load_classifier("timm/vit_tiny_patch16_224", weights="default")
    assert "\n" not in str(info.value) and "classifier.checkpoint=PATH" in str(info.value)


def test_cached_hub_file_is_loaded_by_timm(monkeypatch, tmp_path) -> None:
    """A weights file in the hub cache is loaded through timm's own pretrained loading and its sha256 recorded."""
    hub = pytest.importorskip("huggingface_hub")
    from iqa_saliency.models.weights import sha256_file

    torch.manual_seed(5)
    reference = timm.create_model("convnext_atto", pretrained=False).eval()
    path = tmp_path / "pytorch_model.bin"
    torch.save(reference.state_dict(), path)
    monkeypatch.setattr(hub, "hf_hub_download", lambda repo, filename, **kw: str(path))
    ours = load_timm_classifier("convnext_atto")
    assert ours.weights.sha256 == sha256_file(path) and ours.weights.source.startswith("hf://timm/convnext_atto")
    x = _images(1)
    with torch.no_grad():
        torch.testing.assert_close(ours.model(x), reference((x - ours.model.mean) / ours.model.std))


def test_missing_extra_is_one_line(monkeypatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "timm", None)  # import timm raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'iqa-saliency\[zoo\]'") as info:
        load_timm_classifier("vit_tiny_patch16_224", pretrained=False)
    assert "\n" not in str(info.value)
