"""Reading classifiers back: the head a checkpoint's class count needs, the class names and label order it carries,
the input normalisation it was trained with, and wrapper prefixes of its keys. Each loaded classifier is held
against the network the test saved (its logits on the same pixels, normalised here with ImageNet's published
mean/std where it should be)."""

from __future__ import annotations

import argparse

import pytest
import torch
import torchvision
from torch import nn

from iqa_saliency.errors import ConfigError, UserError
from iqa_saliency.models import classifier as C

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def _net(arch: str, classes: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return getattr(torchvision.models, arch)(weights=None, num_classes=classes).eval()


def _same(clf: C.Classifier, net: nn.Module, normalized: bool) -> None:
    x = torch.rand(2, 3, 40, 40, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(clf.model.eval()(x), net((x - MEAN) / STD if normalized else x))


def test_normalised_wrapper_feeds_imagenet_normalised_or_raw_pixels():
    net = _net("resnet18", 4, 0)
    _same(C.Classifier(C.NormalizedClassifier(net), "resnet18", [], None), net, normalized=True)
    _same(C.Classifier(C.NormalizedClassifier(net, normalize=False), "resnet18", [], None), net, normalized=False)


@pytest.mark.parametrize(("arch", "head"), [("resnet18", "fc"), ("mobilenet_v3_small", "classifier")])
def test_replace_head_swaps_the_last_linear_layer(arch, head):
    net = getattr(torchvision.models, arch)(weights=None)
    body = {k: v.clone() for k, v in net.state_dict().items() if not k.startswith(head)}
    C.replace_head(net, 7)
    last = getattr(net, head) if arch == "resnet18" else getattr(net, head)[-1]
    assert isinstance(last, nn.Linear) and last.out_features == 7
    for k, v in body.items():  # the rest of the network is untouched
        torch.testing.assert_close(net.state_dict()[k], v)
    assert net.eval()(torch.rand(1, 3, 64, 64)).shape == (1, 7)
    with pytest.raises(ConfigError, match="final linear layer"):
        C.replace_head(nn.Sequential(nn.Conv2d(3, 3, 1)), 3)


def test_build_network_head_size():
    assert C.build_network("resnet18").fc.out_features == 1000
    assert C.build_network("resnet18", 5).fc.out_features == 5
    study = C.build_network("study_resnet18", 9)
    assert isinstance(study, C.StudyResNet18) and study.fc.out_features == 9


def test_a_train_py_checkpoint_brings_its_arch_classes_normalisation_and_wrapper_prefix(tmp_path):
    net = _net("resnet18", 3, 2)
    meta = {"arch": "resnet18", "class_names": ["bar", "attic", "zoo"], "normalize": False, "epoch": 4}
    path = tmp_path / "best.ckpt"
    torch.save({"state_dict": {f"classifier.net.{k}": v for k, v in net.state_dict().items()},
                C.CHECKPOINT_META_KEY: meta}, path)
    clf = C.load_classifier(arch="resnet50", checkpoint=str(path), normalize=False)  # the checkpoint's arch wins
    assert (clf.arch, clf.class_names, clf.imagenet_classes) == ("resnet18", ["bar", "attic", "zoo"], False)
    assert clf.extra == meta and clf.weights.name == "resnet18:best.ckpt" and len(clf.weights.sha256) == 64
    _same(clf, net, normalized=False)
    assert C.read_checkpoint_meta(str(path)) == meta
    with pytest.raises(ConfigError, match="unnormalised.*classifier.normalize=false"):
        C.load_classifier(checkpoint=str(path), normalize=True)


def test_a_plain_state_dict_brings_its_class_count(tmp_path):
    net = _net("resnet18", 6, 3)
    path = tmp_path / "six.pth"
    torch.save(net.state_dict(), path)
    clf = C.load_classifier(checkpoint=str(path))
    assert (clf.class_names, clf.imagenet_classes, clf.extra) == ([str(i) for i in range(6)], False, {})
    _same(clf, net, normalized=True)
    assert C.read_checkpoint_meta(str(path)) is None
    imagenet = tmp_path / "imagenet.pth"
    torch.save(_net("resnet18", 1000, 4).state_dict(), imagenet)
    full = C.load_classifier(checkpoint=str(imagenet))
    assert full.imagenet_classes and full.class_names == C.imagenet_categories()


def test_output_size_is_the_last_linear_layer():
    state = {"a.weight": torch.zeros(8, 3, 3, 3), "b.weight": torch.zeros(16, 8), "c.weight": torch.zeros(5, 16),
             "c.bias": torch.zeros(5)}
    assert C._output_size(state) == 5
    with pytest.raises(UserError, match="no linear layer"):
        C._output_size({"a.weight": torch.zeros(8, 3, 3, 3)})


def test_strip_to_network_drops_only_a_wrapper_prefix():
    net = nn.Sequential(nn.Linear(2, 2))
    own = net.state_dict()
    assert C._strip_to_network(dict(own), net).keys() == own.keys()
    wrapped = {f"module.classifier.net.{k}": v for k, v in own.items()} | {"other.step": torch.zeros(1)}
    assert C._strip_to_network(wrapped, net).keys() == own.keys()
    foreign = {"x.weight": torch.zeros(1)}
    assert C._strip_to_network(foreign, net) == foreign


def test_the_studys_lightning_checkpoint_loads_in_folder_order(tmp_path):
    torch.manual_seed(5)
    net = C.StudyResNet18(4).eval()
    path = tmp_path / "best_model.ckpt"
    args = argparse.Namespace(lr=0.001, dataset="mit-indoor-scenes", device=torch.device("cpu"))
    torch.save({"state_dict": {f"model.{k}": v for k, v in net.state_dict().items()},
                "hyper_parameters": {"args": args}}, path)
    clf = C.load_classifier(arch="study_resnet18", checkpoint=str(path), normalize=False)
    assert (clf.arch, clf.class_names, clf.imagenet_classes) == ("study_resnet18", ["0", "1", "2", "3"], False)
    assert clf.extra == {"label_order": C.FOLDER_ORDER,
                         "study_args": {"lr": 0.001, "dataset": "mit-indoor-scenes", "device": "cpu"}}
    assert clf.weights.name == "study_resnet18:best_model.ckpt"
    _same(clf, net, normalized=False)
    untrained = C.load_classifier(arch="study_resnet18", pretrained=False, num_classes=3)
    assert untrained.class_names == ["0", "1", "2"] and untrained.weights.name == "untrained"
    assert untrained.extra == {"label_order": C.FOLDER_ORDER}
    bad = tmp_path / "plain.ckpt"
    torch.save({"weights": 1}, bad)
    with pytest.raises(UserError, match="no 'state_dict'"):
        C.load_classifier(arch="study_resnet18", checkpoint=str(bad))
    no_fc = tmp_path / "nofc.ckpt"
    torch.save({"state_dict": {"model.x": torch.zeros(1)}}, no_fc)
    with pytest.raises(UserError, match="no model.fc.weight"):
        C.load_classifier(arch="study_resnet18", checkpoint=str(no_fc))


def test_untrained_classifiers_are_seeded_and_leave_the_callers_generator_alone():
    torch.manual_seed(11)
    before = torch.random.get_rng_state()
    a = C.load_classifier(pretrained=False, seed=3)
    assert torch.equal(torch.random.get_rng_state(), before)
    b = C.load_classifier(pretrained=False, seed=3)
    c = C.load_classifier(pretrained=False, seed=4)
    assert torch.equal(a.model.net.fc.weight, b.model.net.fc.weight)
    assert not torch.equal(a.model.net.fc.weight, c.model.net.fc.weight)
    assert a.imagenet_classes and a.class_names == C.imagenet_categories() and a.weights.name == "untrained"
    raw = C.load_classifier(pretrained=False, seed=3, normalize=False)
    _same(raw, b.model.net, normalized=False)
