"""Classifier loading: weights enum, state_dict files, offline errors, normalisation."""

from __future__ import annotations

import urllib.error

import pytest
import torch
import torchvision

from iqa_saliency.errors import ConfigError, UserError, WeightsUnavailableError
from iqa_saliency.models.classifier import IMAGENET_MEAN, IMAGENET_STD, load_classifier


def test_normalisation_is_applied_inside(tmp_path):
    net = torchvision.models.resnet18(weights=None).eval()
    path = tmp_path / "r18.pth"
    torch.save(net.state_dict(), path)
    clf = load_classifier(checkpoint=str(path))
    x = torch.rand(2, 3, 64, 64)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(clf.model(x), net((x - mean) / std))
    assert clf.num_classes == 1000 and clf.class_names[281] == "tabby"
    assert len(clf.weights.sha256) == 64


def test_wrong_architecture_checkpoint_names_mismatch(tmp_path):
    path = tmp_path / "r34.pth"
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), path)
    with pytest.raises(UserError, match=r"unexpected .*layer1\.2.*classifier\.checkpoint=PATH"):
        load_classifier(arch="resnet18", checkpoint=str(path))


def test_unknown_arch_and_weights_names():
    with pytest.raises(ConfigError, match="Unknown classifier 'resnet19'.*resnet18"):
        load_classifier(arch="resnet19", pretrained=False)
    with pytest.raises(ConfigError, match="IMAGENET1K_V1"):
        load_classifier(arch="resnet18", weights="IMAGENET9K")


def test_offline_weights_error_names_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*a, **k):
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(WeightsUnavailableError, match=r"resnet18-f37072fd\.pth.*classifier\.checkpoint=PATH"):
        load_classifier()


def test_cached_torchvision_weights_are_hash_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), cache / "resnet18-f37072fd.pth")
    with pytest.raises(WeightsUnavailableError, match="sha256"):
        load_classifier()  # our random file does not have the release's hash


def test_untrained_marked_and_seeded():
    a = load_classifier(pretrained=False, seed=1)
    b = load_classifier(pretrained=False, seed=1)
    assert a.weights.name == "untrained"
    assert torch.equal(a.model.net.fc.weight, b.model.net.fc.weight)
