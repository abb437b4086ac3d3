"""Building and reading classifiers (models/classifier.py) against values known by construction: the input
normalisation against (x - mean) / std worked per channel, heads replaced with the right sizes per architecture,
each checkpoint format (train.py's Lightning file with its metadata, a plain state_dict, the study's layout) in
files the tests write, the key prefixes stripped, the class count read, and every message exactly.

Small networks (ShuffleNet V2 x0.5, timm's test_resnet, hand-made modules) keep these tests fast: the mutation
campaign runs them once per mutant."""

from __future__ import annotations

import argparse
import hashlib
import re

import pytest
import torch
import torchvision
from torch import nn

from iqa_saliency.errors import ConfigError, UserError, WeightsUnavailableError
from iqa_saliency.models import classifier as C
from iqa_saliency.models.weights import WeightsIdentity

# ImageNet's published mean/std (torchvision's reference scripts)
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
SMALL = "shufflenet_v2_x0_5"  # a torchvision classifier with an `fc` head (1024 inputs), quick to build


def _normalised_by_hand(x: torch.Tensor, mean, std) -> torch.Tensor:
    out = torch.empty_like(x)
    for c in range(x.shape[1]):
        out[:, c] = (x[:, c] - mean[c]) / std[c]
    return out


def _small(classes: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return torchvision.models.shufflenet_v2_x0_5(weights=None, num_classes=classes).eval()


def _pixels() -> torch.Tensor:
    return torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(7))


def _same_logits(clf: C.Classifier, net: nn.Module, mean=MEAN, std=STD, normalized: bool = True) -> None:
    """`clf` holds `net`'s weights exactly, in eval mode, and feeds it the pixels normalised by hand (or raw).

    The inputs are compared, not only the logits: an untrained network's logits hardly depend on its input."""
    x = _pixels()
    assert not clf.model.training and not clf.model.net.training
    own, want = clf.model.net.state_dict(), net.state_dict()
    assert list(own) == list(want) and all(torch.equal(own[k], want[k]) for k in want)
    seen = []
    hook = clf.model.net.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    try:
        with torch.no_grad():
            logits = clf.model(x)
    finally:
        hook.remove()
    torch.testing.assert_close(seen[0], _normalised_by_hand(x, mean, std) if normalized else x)
    with torch.no_grad():
        torch.testing.assert_close(logits, net.eval()(seen[0]))


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- input normalisation -------------------------------------------------------------------------------------


def test_normalisation_is_x_minus_mean_over_std_per_channel_and_keeps_no_state():
    x = _pixels()
    wrapped = C.NormalizedClassifier(nn.Identity())
    torch.testing.assert_close(wrapped(x), _normalised_by_hand(x, MEAN, STD))
    own = C.NormalizedClassifier(nn.Identity(), (0.5, 0.25, 0.0), (2.0, 0.5, 4.0))
    torch.testing.assert_close(own(x), _normalised_by_hand(x, (0.5, 0.25, 0.0), (2.0, 0.5, 4.0)))
    raw = C.NormalizedClassifier(nn.Identity(), (0.5, 0.25, 0.0), (2.0, 0.5, 4.0), normalize=False)
    assert raw.normalize is False and wrapped.normalize is True
    torch.testing.assert_close(raw(x), x)
    # mean/std are not part of the weights: a checkpoint holds the network's keys only
    net = nn.Linear(3, 2)
    assert list(C.NormalizedClassifier(net).state_dict()) == ["net.weight", "net.bias"]
    assert C.NormalizedClassifier(net).net is net
    assert (C.IMAGENET_MEAN, C.IMAGENET_STD) == (MEAN, STD)


def test_the_study_network_is_resnet18_without_fc_then_dropout_and_its_own_fc():
    torch.manual_seed(0)
    net = C.StudyResNet18().eval()
    assert net.fc.in_features == 512 and net.fc.out_features == 67 and net.dropout.p == 0.25
    assert isinstance(net.ResNet_Module.fc, nn.Identity) and isinstance(net.dropout, nn.Dropout)
    assert C.StudyResNet18(5, dropout=0.5).dropout.p == 0.5
    keys = set(net.state_dict())
    assert {"fc.weight", "fc.bias", "ResNet_Module.conv1.weight", "ResNet_Module.layer4.1.bn2.running_var"} <= keys
    assert not any(k.startswith("ResNet_Module.fc") for k in keys)
    x = _pixels()
    body = torchvision.models.resnet18(weights=None)
    body.fc = nn.Identity()
    body.load_state_dict(net.ResNet_Module.state_dict())
    with torch.no_grad():
        features = body.eval()(x).reshape(2, 512)
        torch.testing.assert_close(net(x), features @ net.fc.weight.T + net.fc.bias)
        net.train()  # dropout only in training
        torch.manual_seed(1)
        dropped = net(x)
        assert not torch.allclose(dropped, features @ net.fc.weight.T + net.fc.bias)


# --- heads ---------------------------------------------------------------------------------------------------


class _Head(nn.Module):
    """A network whose head is `attr`; `reset_classifier` set to a value that is not callable."""

    def __init__(self, attr: str, head: nn.Module, reset=None) -> None:
        super().__init__()
        self.body = nn.Linear(4, 6)
        setattr(self, attr, head)
        self.reset_classifier = reset


class _Resettable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 3)
        self.calls: list[int] = []

    def reset_classifier(self, n: int) -> None:
        self.calls.append(n)


@pytest.mark.parametrize("attr", ["fc", "classifier", "head", "heads"])
def test_a_linear_head_is_replaced_with_the_same_inputs_and_the_new_outputs(attr):
    net = _Head(attr, nn.Linear(6, 1000))
    body = net.body
    assert C.replace_head(net, 9) is net
    head = getattr(net, attr)
    assert isinstance(head, nn.Linear) and (head.in_features, head.out_features) == (6, 9)
    assert net.body is body


@pytest.mark.parametrize("attr", ["fc", "classifier", "head", "heads"])
def test_the_last_linear_layer_of_a_sequential_head_is_replaced(attr):
    first, last = nn.Linear(6, 5), nn.Linear(5, 1000)
    net = _Head(attr, nn.Sequential(first, nn.ReLU(), last, nn.Dropout(0.1)))
    assert C.replace_head(net, 4) is net
    seq = getattr(net, attr)
    assert seq[0] is first and isinstance(seq[1], nn.ReLU) and isinstance(seq[3], nn.Dropout)
    assert isinstance(seq[2], nn.Linear) and seq[2] is not last
    assert (seq[2].in_features, seq[2].out_features) == (5, 4)
    only = _Head(attr, nn.Sequential(nn.Linear(6, 1000)))  # the head's first (index 0) layer is the last linear
    C.replace_head(only, 2)
    assert getattr(only, attr)[0].out_features == 2 and getattr(only, attr)[0].in_features == 6


def test_heads_are_looked_up_in_order_and_timm_models_reset_their_own():
    net = _Head("fc", nn.Linear(6, 10))
    net.classifier = nn.Linear(6, 10)
    C.replace_head(net, 3)
    assert net.fc.out_features == 3 and net.classifier.out_features == 10  # fc first, the rest untouched
    later = _Head("head", nn.Linear(6, 10))
    later.classifier = nn.Sequential(nn.ReLU())  # a sequential head without a linear layer is passed over
    C.replace_head(later, 3)
    assert later.head.out_features == 3
    resettable = _Resettable()
    assert C.replace_head(resettable, 12) is resettable
    assert resettable.calls == [12] and resettable.fc.out_features == 3  # timm's reset_classifier does the work
    for bad in (nn.Sequential(nn.Conv2d(3, 3, 1)), _Head("classifier", nn.Sequential(nn.Conv2d(3, 3, 1)))):
        with pytest.raises(ConfigError) as err:
            C.replace_head(bad, 3)
        assert str(err.value) == (f"Cannot find the final linear layer of {type(bad).__name__}. "
                                  "Use a ResNet-style classifier.")


def test_torchvision_and_timm_heads_per_architecture():
    mobile = torchvision.models.mobilenet_v3_small(weights=None)
    C.replace_head(mobile, 7)
    assert (mobile.classifier[-1].in_features, mobile.classifier[-1].out_features) == (1024, 7)
    assert mobile.classifier[0].out_features == 1024  # the hidden layer stays
    timm_net = C.build_network("timm/test_resnet", 5)
    assert timm_net.num_classes == 5 and timm_net.get_classifier().out_features == 5
    C.replace_head(timm_net, 3)
    assert timm_net.get_classifier().out_features == 3


def test_build_network_sizes_and_names():
    assert C.build_network(SMALL).fc.out_features == 1000
    small = C.build_network(SMALL, 6)
    assert (small.fc.in_features, small.fc.out_features) == (1024, 6)
    study = C.build_network("study_resnet18", 9)
    assert type(study) is C.StudyResNet18 and study.fc.out_features == 9
    assert C.build_network("study_resnet18").fc.out_features == 1000  # the default head size
    timm_net = C.build_network("timm/test_resnet")
    assert timm_net.num_classes == 1000 and type(timm_net).__module__.startswith("timm.")
    with pytest.raises(ConfigError) as err:
        C.build_network("resnet19")
    assert str(err.value) == ("Unknown classifier 'resnet19'. Use a torchvision model name such as: "
                              "resnet101, resnet152, resnet18, resnet34, resnet50.")


# --- state_dict keys and class count -------------------------------------------------------------------------


def test_strip_to_network_keeps_matching_keys_and_strips_the_first_wrapper_prefix():
    net = nn.Sequential(nn.Linear(2, 3))
    own = {k: torch.full(tuple(v.shape), float(i)) for i, (k, v) in enumerate(net.state_dict().items())}
    same = dict(own) | {"extra.step": torch.zeros(1)}
    assert C._strip_to_network(same, net) is same  # any own key: left as it is
    decoy = {"x0.weight": torch.ones(3, 2)}  # ends in "0.weight" but not in ".0.weight"
    wrapped = decoy | {f"model.net.{k}": v for k, v in own.items()} | {"ema.0.weight": torch.ones(1)}
    stripped = C._strip_to_network(wrapped, net)
    assert list(stripped) == ["0.weight", "0.bias"]
    assert all(stripped[k] is wrapped[f"model.net.{k}"] for k in own)
    foreign = {"x.weight": torch.zeros(1)}
    assert C._strip_to_network(foreign, net) is foreign


def test_output_size_is_the_out_size_of_the_last_two_dimensional_weight():
    state = {"conv.weight": torch.zeros(8, 3, 3, 3), "fc1.weight": torch.zeros(16, 8), "fc2.weight": torch.zeros(5, 16),
             "fc2.bias": torch.zeros(5), "pos_embed": torch.zeros(4, 4), "norm.weight": torch.zeros(5),
             "proj.weight_g": torch.zeros(3, 3)}
    assert C._output_size(state) == 5
    assert C._output_size({"head_weight": torch.zeros(2, 4)}) == 2
    for state in ({"a.weight": torch.zeros(8, 3, 3, 3), "b.bias": torch.zeros(2, 2)}, {}):
        with pytest.raises(UserError) as err:
            C._output_size(state)
        assert str(err.value) == ("The checkpoint has no linear layer to read the class count from. "
                                  "Set classifier.checkpoint=PATH to a classifier's state_dict.")


# --- checkpoints ---------------------------------------------------------------------------------------------


def _train_py_checkpoint(path, net, meta, prefix="classifier.net."):
    torch.save({"epoch": 3, "state_dict": {f"{prefix}{k}": v for k, v in net.state_dict().items()},
                C.CHECKPOINT_META_KEY: meta}, path)
    return path


def test_a_train_py_checkpoint_is_rebuilt_from_its_metadata(tmp_path):
    net = _small(3, 1)
    meta = {"arch": SMALL, "class_names": ["c", "a", "b"], "normalize": True, "epoch": 2, "metrics": {"val/loss": 1.5}}
    path = _train_py_checkpoint(tmp_path / "best.ckpt", net, meta)
    assert C.CHECKPOINT_META_KEY == "iqa_saliency"
    clf = C.load_classifier(arch="resnet50", checkpoint=str(path))  # the checkpoint's arch wins
    assert (clf.arch, clf.class_names, clf.imagenet_classes, clf.extra) == (SMALL, ["c", "a", "b"], False, meta)
    assert clf.weights == WeightsIdentity(f"{SMALL}:best.ckpt", str(path), _sha(path))
    assert clf.model.normalize is True and clf.num_classes == 3
    _same_logits(clf, net)
    assert C.read_checkpoint_meta(str(path)) == meta
    # the same through the study's loader (the study's network fine-tuned by train.py)
    study = C.load_classifier(arch="study_resnet18", checkpoint=str(path), normalize=True)
    assert (study.arch, study.class_names, study.extra) == (SMALL, ["c", "a", "b"], meta)
    assert study.weights == WeightsIdentity(f"{SMALL}:best.ckpt", str(path), _sha(path))
    _same_logits(study, net)


def test_a_train_py_checkpoint_without_class_names_or_normalize_key(tmp_path):
    net = _small(4, 2)
    path = _train_py_checkpoint(tmp_path / "last.ckpt", net, {"arch": SMALL, "class_names": []}, prefix="")
    clf = C.load_classifier(checkpoint=str(path))  # no `normalize` recorded: it was normalised
    assert (clf.class_names, clf.imagenet_classes, clf.arch) == (["0", "1", "2", "3"], False, SMALL)
    _same_logits(clf, net)
    with pytest.raises(ConfigError) as err:
        C.load_classifier(checkpoint=str(path), normalize=False)
    assert str(err.value) == (f"'{path}' was trained on ImageNet mean/std normalised pixels. "
                              "Set classifier.normalize=true to evaluate it as it was trained.")
    raw = _train_py_checkpoint(tmp_path / "raw.ckpt", net, {"arch": SMALL, "normalize": False})
    with pytest.raises(ConfigError) as err:
        C.load_classifier(checkpoint=str(raw))
    assert str(err.value) == (f"'{raw}' was trained on unnormalised [0, 1] pixels. "
                              "Set classifier.normalize=false to evaluate it as it was trained.")
    clf = C.load_classifier(arch="resnet18", checkpoint=str(raw), normalize=False)
    assert clf.model.normalize is False and clf.arch == SMALL
    _same_logits(clf, net, normalized=False)


def test_a_plain_state_dict_takes_the_configured_arch_and_its_normalisation(tmp_path):
    net = _small(5, 3)
    path = tmp_path / "five.pth"
    torch.save(net.state_dict(), path)
    for normalize in (True, False):  # no metadata: the setting is taken as it is
        clf = C.load_classifier(arch=SMALL, checkpoint=str(path), normalize=normalize, pretrained=False)
        assert (clf.arch, clf.class_names, clf.imagenet_classes, clf.extra) == (SMALL, list("01234"), False, {})
        assert clf.weights == WeightsIdentity(f"{SMALL}:five.pth", str(path), _sha(path))
        _same_logits(clf, net, normalized=normalize)
    assert C.read_checkpoint_meta(str(path)) is None
    full = tmp_path / "imagenet.pth"
    torch.save({"model": _small(1000, 4).state_dict()}, full)
    clf = C.load_classifier(arch=SMALL, checkpoint=str(full))
    assert clf.imagenet_classes is True and clf.class_names == C.imagenet_categories() and clf.extra == {}
    listed = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], listed)
    with pytest.raises(UserError) as err:
        C.load_classifier(arch=SMALL, checkpoint=str(listed))
    assert str(err.value) == (f"'{listed}' holds no state_dict (a dict of tensors, plain or under "
                              "'model'/'state_dict'). Set classifier.checkpoint=PATH to a checkpoint saved with "
                              "torch.save(model.state_dict()).")
    assert C.read_checkpoint_meta(str(listed)) is None
    missing = tmp_path / "absent.pth"
    with pytest.raises(WeightsUnavailableError) as err:
        C.load_classifier(arch=SMALL, checkpoint=str(missing))
    assert str(err.value) == (f"Weights file '{missing}' does not exist. Set classifier.checkpoint=PATH to an "
                              "existing file.")
    wrong = tmp_path / "wrong.pth"
    torch.save(_small(5, 3).state_dict() | {"spare.weight": torch.zeros(1)}, wrong)
    with pytest.raises(UserError) as err:
        C.load_classifier(arch=SMALL, checkpoint=str(wrong))
    assert str(err.value) == (f"'{wrong}' does not fit ShuffleNetV2: 1 unexpected (e.g. spare.weight). "
                              "Set classifier.checkpoint=PATH to weights of the configured architecture.")


def test_a_timm_checkpoint_gets_the_models_own_mean_and_std(tmp_path):
    net = C.build_network("timm/test_resnet", 3).eval()
    path = _train_py_checkpoint(tmp_path / "timm.ckpt", net, {"arch": "timm/test_resnet", "class_names": list("xyz")})
    clf = C.load_classifier(checkpoint=str(path))
    assert clf.arch == "timm/test_resnet" and clf.class_names == ["x", "y", "z"]
    _same_logits(clf, net, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))  # test_resnet's pretrained config


def _study_checkpoint(path, net, hyper=None):
    obj = {"state_dict": {f"model.{k}": v for k, v in net.state_dict().items()}, "epoch": 9}
    if hyper is not None:
        obj["hyper_parameters"] = hyper
    torch.save(obj, path)
    return path


def test_the_studys_checkpoint_layout(tmp_path):
    torch.manual_seed(5)
    net = C.StudyResNet18(4).eval()
    args = argparse.Namespace(lr=0.001, epochs=30, pretrained=True, name=None, device=torch.device("cpu"),
                              sizes=[1, 2])
    path = _study_checkpoint(tmp_path / "best_model.ckpt", net, {"args": args})
    clf = C.load_study_classifier(str(path))
    assert (clf.arch, clf.class_names, clf.imagenet_classes) == ("study_resnet18", ["0", "1", "2", "3"], False)
    assert clf.extra == {"label_order": "folders",
                         "study_args": {"lr": 0.001, "epochs": 30, "pretrained": True, "name": None,
                                        "device": "cpu", "sizes": "[1, 2]"}}
    assert clf.weights == WeightsIdentity("study_resnet18:best_model.ckpt", str(path), _sha(path))
    assert clf.model.normalize is False
    _same_logits(clf, net, normalized=False)
    assert C.read_checkpoint_meta(str(path)) is None
    normalised = C.load_classifier(arch="study_resnet18", checkpoint=str(path), normalize=True, pretrained=False)
    assert normalised.model.normalize is True
    _same_logits(normalised, net)
    # train.py's metadata without an arch: the study's network
    meta = {"normalize": False, "epoch": 1}
    tuned = _train_py_checkpoint(tmp_path / "tuned.ckpt", net, meta)
    clf = C.load_study_classifier(str(tuned))
    assert (clf.arch, clf.class_names, clf.extra) == ("study_resnet18", ["0", "1", "2", "3"], meta)
    assert clf.weights == WeightsIdentity("study_resnet18:tuned.ckpt", str(tuned), _sha(tuned))
    _same_logits(clf, net, normalized=False)
    # keys without the "model." prefix are read as they are; no hyper-parameters, no study_args
    bare = tmp_path / "bare.ckpt"
    torch.save({"state_dict": net.state_dict()}, bare)
    clf = C.load_study_classifier(str(bare))
    assert clf.extra == {"label_order": "folders"}
    _same_logits(clf, net, normalized=False)


def test_the_studys_checkpoint_errors(tmp_path):
    for name, obj in (("plain.ckpt", {"weights": {"a": torch.zeros(1)}}), ("list.ckpt", [1, 2]),
                      ("tensor.ckpt", {"state_dict": torch.zeros(1)})):
        path = tmp_path / name
        torch.save(obj, path)
        with pytest.raises(UserError) as err:
            C.load_study_classifier(str(path))
        assert str(err.value) == (f"'{path}' is not a Lightning checkpoint of the study (no 'state_dict'). Set "
                                  "classifier.checkpoint=PATH to one of its .ckpt files, or use classifier=resnet18 "
                                  "for other weights.")
    no_fc = tmp_path / "nofc.ckpt"
    torch.save({"state_dict": {"model.x": torch.zeros(1), "model.fc.bias": torch.zeros(2)}}, no_fc)
    with pytest.raises(UserError) as err:
        C.load_study_classifier(str(no_fc))
    assert str(err.value) == (f"'{no_fc}' has no model.fc.weight: not the study's ResNet_Model. Set "
                              "classifier.checkpoint=PATH to a checkpoint of the study's classifier.")
    with pytest.raises(ConfigError) as err:
        C.load_classifier(arch="study_resnet18")
    assert str(err.value) == ("classifier=study_resnet18 needs the study's checkpoint. Set classifier.checkpoint=PATH "
                              "to its .ckpt file (or pretrained=false for untrained weights).")
    missing = tmp_path / "absent.ckpt"
    with pytest.raises(WeightsUnavailableError, match=re.escape(f"'{missing}' does not exist. Set classifier.")):
        C.load_study_classifier(str(missing))
    head_only = tmp_path / "head.ckpt"
    torch.save({"state_dict": {"model.fc.weight": torch.zeros(3, 512), "model.fc.bias": torch.zeros(3)}}, head_only)
    with pytest.raises(UserError) as err:
        C.load_study_classifier(str(head_only))
    # resnet18's 122 entries less its fc's two
    assert str(err.value) == (f"'{head_only}' does not fit StudyResNet18: 120 missing (e.g. "
                              "ResNet_Module.conv1.weight, ResNet_Module.bn1.weight, ResNet_Module.bn1.bias). "
                              "Set classifier.checkpoint=PATH "
                              "to weights of the configured architecture.")


def _corrupt(path):
    path.write_bytes(b"not a checkpoint")
    return path


def test_a_file_torch_cannot_read_names_the_key_to_set(tmp_path):
    bad = _corrupt(tmp_path / "bad.ckpt")

    def message(override):
        return re.compile(re.escape(f"Could not load weights from '{bad}' (") + r"\w+: .*" +
                          re.escape(f"). Check that the file is a complete PyTorch checkpoint, or set {override}=PATH "
                                    "to another file."))

    for load in (lambda: C.load_study_classifier(str(bad)), lambda: C.load_classifier(checkpoint=str(bad)),
                 lambda: C.read_checkpoint_meta(str(bad))):
        with pytest.raises(UserError) as err:
            load()
        assert message("classifier.checkpoint").fullmatch(str(err.value))
    with pytest.raises(UserError) as err:
        C.read_checkpoint_meta(str(bad), override="train.init_checkpoint")
    assert message("train.init_checkpoint").fullmatch(str(err.value))


def test_untrained_study_network_is_seeded_with_its_class_count():
    torch.manual_seed(11)
    before = torch.random.get_rng_state()
    clf = C.load_study_classifier(None)  # seed 0 by default
    assert torch.equal(torch.random.get_rng_state(), before)
    torch.manual_seed(0)
    want = C.StudyResNet18(67).eval()
    assert clf.class_names == [str(i) for i in range(67)] and clf.num_classes == 67
    assert (clf.arch, clf.imagenet_classes, clf.weights) == ("study_resnet18", False, WeightsIdentity("untrained"))
    assert clf.extra == {"label_order": "folders"} and clf.model.normalize is False
    _same_logits(clf, want, normalized=False)
    via = C.load_classifier(arch="study_resnet18", pretrained=False, seed=4, num_classes=3, normalize=True)
    assert via.class_names == ["0", "1", "2"] and via.model.normalize is True
    torch.manual_seed(4)
    _same_logits(via, C.StudyResNet18(3))


def test_untrained_torchvision_network_is_seeded():
    torch.manual_seed(11)
    before = torch.random.get_rng_state()
    clf = C.load_classifier(arch=SMALL, pretrained=False, seed=3)
    assert torch.equal(torch.random.get_rng_state(), before)
    want = _small(1000, 3)
    assert (clf.arch, clf.weights, clf.imagenet_classes) == (SMALL, WeightsIdentity("untrained"), True)
    assert clf.class_names == C.imagenet_categories()
    _same_logits(clf, want)
    raw = C.load_classifier(arch=SMALL, weights=None, normalize=False)  # no weights name: untrained too, seed 0
    assert raw.weights.name == "untrained"
    _same_logits(raw, _small(1000, 0), normalized=False)


def test_torchvision_weights_by_name_are_fetched_by_url_and_hash_prefix(tmp_path, monkeypatch):
    net = _small(1000, 6)
    path = tmp_path / "shufflenet.pth"
    torch.save(net.state_dict(), path)
    calls = []

    def fetch(source, sha256, override, download=True):
        calls.append((source, sha256, override, download))
        return path, "d" * 64

    monkeypatch.setattr(C, "fetch_weights", fetch)
    url = "https://download.pytorch.org/models/shufflenetv2_x0.5-f707e7126e.pth"
    for normalize, download in ((True, True), (False, False)):
        kwargs = {} if download else {"download": False}  # downloads by default
        clf = C.load_classifier(arch=SMALL, weights="IMAGENET1K_V1", normalize=normalize, **kwargs)
        assert calls[-1] == (url, "f707e7126e", "classifier.checkpoint", download)
        assert clf.weights == WeightsIdentity(f"{SMALL}:IMAGENET1K_V1", url, "d" * 64)
        assert (clf.arch, clf.imagenet_classes, clf.extra) == (SMALL, True, {})
        assert clf.class_names == torchvision.models.ShuffleNet_V2_X0_5_Weights.IMAGENET1K_V1.meta["categories"]
        assert clf.class_names[281] == "tabby"
        _same_logits(clf, net, normalized=normalize)
    with pytest.raises(ConfigError) as err:
        C.load_classifier(arch=SMALL, weights="IMAGENET9K")
    assert str(err.value) == f"'IMAGENET9K' is not a weights name of {SMALL}. Use one of: IMAGENET1K_V1."
    assert len(calls) == 2


def test_the_hash_prefix_is_after_the_files_last_hyphen_and_feature_weights_get_imagenets_names(tmp_path,
                                                                                              monkeypatch):
    # a stand-in network for alexnet and vgg16 (large to build): the weights' URL, hash and names are the point here
    stand_in = tmp_path / "stand_in.pth"
    torch.save(nn.Linear(2, 3).state_dict(), stand_in)
    built, fetched = [], []

    def build(arch, num_classes=1000):
        built.append((arch, num_classes))
        return nn.Linear(2, 3)

    def fetch(source, sha256, override, download=True):
        fetched.append((source, sha256))
        return stand_in, "f" * 64

    monkeypatch.setattr(C, "build_network", build)
    monkeypatch.setattr(C, "fetch_weights", fetch)
    alexnet = C.load_classifier(arch="alexnet", weights="IMAGENET1K_V1")
    assert fetched[-1] == ("https://download.pytorch.org/models/alexnet-owt-7be5be79.pth", "7be5be79")
    assert alexnet.class_names == torchvision.models.AlexNet_Weights.IMAGENET1K_V1.meta["categories"]
    features = C.load_classifier(arch="vgg16", weights="IMAGENET1K_FEATURES")  # its meta has no categories
    assert fetched[-1] == ("https://download.pytorch.org/models/vgg16_features-amdegroot-88682ab5.pth", "88682ab5")
    assert features.class_names == C.imagenet_categories() and len(features.class_names) == 1000
    assert features.weights == WeightsIdentity("vgg16:IMAGENET1K_FEATURES", fetched[-1][0], "f" * 64)
    with pytest.raises(ConfigError) as err:
        C.load_classifier(arch="mobilenet_v2", weights="V3")
    assert str(err.value) == "'V3' is not a weights name of mobilenet_v2. Use one of: IMAGENET1K_V1, IMAGENET1K_V2."
    assert built == [("alexnet", 1000), ("vgg16", 1000), ("mobilenet_v2", 1000)]


def test_torchvision_weights_that_do_not_load_name_the_file_and_the_key_to_set(tmp_path, monkeypatch):
    files = {"corrupt": _corrupt(tmp_path / "corrupt.pth"), "list": tmp_path / "list.pth",
             "wrong": tmp_path / "wrong.pth"}
    torch.save([torch.zeros(1)], files["list"])
    torch.save(_small(1000, 0).state_dict() | {"spare.weight": torch.zeros(1)}, files["wrong"])
    served = []
    monkeypatch.setattr(C, "fetch_weights", lambda *args, **kwargs: (served[-1], "d" * 64))
    expected = {
        "corrupt": re.escape(f"Could not load weights from '{files['corrupt']}' (") + r"\w+: .*" + re.escape(
            "). Check that the file is a complete PyTorch checkpoint, or set classifier.checkpoint=PATH to another "
            "file."),
        "list": re.escape(f"'{files['list']}' holds no state_dict (a dict of tensors, plain or under "
                          "'model'/'state_dict'). Set classifier.checkpoint=PATH to a checkpoint saved with "
                          "torch.save(model.state_dict())."),
        "wrong": re.escape(f"'{files['wrong']}' does not fit ShuffleNetV2: 1 unexpected (e.g. spare.weight). "
                           "Set classifier.checkpoint=PATH to weights of the configured architecture."),
    }
    for name, path in files.items():
        served.append(path)
        with pytest.raises(UserError) as err:
            C.load_classifier(arch=SMALL, weights="IMAGENET1K_V1")
        assert re.fullmatch(expected[name], str(err.value)), name


def test_timm_weights_by_name_go_through_timms_loader(monkeypatch):
    net = C.build_network("timm/test_resnet").eval()
    calls = []

    def pretrained(name, tag, download=True):
        calls.append((name, tag, download))
        return net, WeightsIdentity("timm/test_resnet.tag", "hf://x", "e" * 64)

    monkeypatch.setattr(C, "pretrained_timm_network", pretrained)
    clf = C.load_classifier(arch="timm/test_resnet", weights="tag", download=False)
    assert calls == [("test_resnet", "tag", False)]
    assert clf.weights == WeightsIdentity("timm/test_resnet.tag", "hf://x", "e" * 64)
    assert clf.imagenet_classes and clf.class_names == C.imagenet_categories() and clf.arch == "timm/test_resnet"
    _same_logits(clf, net, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    clf = C.load_classifier(arch="timm/test_resnet", weights="tag", normalize=False)
    assert calls[-1] == ("test_resnet", "tag", True) and clf.model.normalize is False


def test_read_checkpoint_meta_of_each_source(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise AssertionError("read_checkpoint_meta must not fetch a URL")

    monkeypatch.setattr(C, "fetch_weights", offline)
    for source in (None, "", "https://example.com/w.pth", "http://example.com/w.ckpt"):
        assert C.read_checkpoint_meta(source) is None
    monkeypatch.undo()
    meta = {"arch": SMALL, "class_names": ["a"], "normalize": False}
    path = tmp_path / "meta.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, C.CHECKPOINT_META_KEY: meta,
                "hyper_parameters": {"args": argparse.Namespace(lr=1)}}, path)
    got = C.read_checkpoint_meta(str(path))
    assert got == meta and type(got) is dict
    not_dict = tmp_path / "odd.ckpt"
    torch.save({C.CHECKPOINT_META_KEY: "resnet18"}, not_dict)
    assert C.read_checkpoint_meta(str(not_dict)) is None
    missing = tmp_path / "absent.ckpt"
    with pytest.raises(WeightsUnavailableError) as err:
        C.read_checkpoint_meta(str(missing), override="train.init_checkpoint")
    assert str(err.value) == (f"Weights file '{missing}' does not exist. Set train.init_checkpoint=PATH to an "
                              "existing file.")
    with pytest.raises(WeightsUnavailableError, match=r"Set classifier\.checkpoint=PATH"):
        C.read_checkpoint_meta(str(missing))
