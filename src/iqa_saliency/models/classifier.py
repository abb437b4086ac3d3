"""torchvision classifiers with ImageNet normalisation built in, loaded from a weights enum or a file; and the
original study's ResNet18 loaded from its Lightning checkpoints (arch=study_resnet18)."""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torchvision import models as tvm

from ..errors import ConfigError, UserError
from .timm_zoo import (
    DEFAULT_TAG,
    TIMM_PREFIX,
    build_timm_network,
    check_timm_name,
    input_stats,
    is_timm_arch,
    pretrained_timm_network,
    timm_name,
)
from .weights import (
    UNTRAINED,
    WeightsIdentity,
    extract_state_dict,
    fetch_weights,
    is_url,
    load_checkpoint_file,
    load_matching_state_dict,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Key under which train.py checkpoints store what evaluate.py needs to rebuild the classifier.
CHECKPOINT_META_KEY = "iqa_saliency"
STUDY_ARCH = "study_resnet18"
# classifier.extra["label_order"]: "folders" = class index i is the dataset's i-th class folder in sorted order
# (torchvision ImageFolder's classes, which the study's checkpoints were trained on)
FOLDER_ORDER = "folders"
log = logging.getLogger(__name__)


class NormalizedClassifier(nn.Module):
    """A classifier that takes RGB in [0, 1] and applies ImageNet mean/std itself (normalize=False: feeds the
    [0, 1] pixels as they are, as the original study's classifier was trained).

    Attribution maps are then taken w.r.t. the same raw pixels the quality model sees.
    """

    def __init__(self, net: nn.Module, mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD,
                 normalize: bool = True):
        super().__init__()
        self.net = net
        self.normalize = normalize
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std if self.normalize else x)


class StudyResNet18(nn.Module):
    """The original study's ResNet_Model (models.py), with its parameter names: `ResNet_Module` = torchvision
    resnet18 with fc = Identity, then flatten, dropout 0.25 and `fc` = Linear(512, classes); returns logits.

    The study built its Dropout inside forward, a fresh module always in training mode, so its predictions were
    random even in evaluation mode; here the dropout is a registered module, active only in training.
    """

    def __init__(self, num_classes: int = 67, dropout: float = 0.25) -> None:
        super().__init__()
        self.ResNet_Module = tvm.resnet18(weights=None)
        self.ResNet_Module.fc = nn.Identity()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(torch.flatten(self.ResNet_Module(x), 1)))


@dataclass
class Classifier:
    """A ready classifier: the module (eval mode), its class names and where its weights came from."""

    model: NormalizedClassifier
    arch: str
    class_names: list[str]
    weights: WeightsIdentity
    extra: dict[str, Any] = field(default_factory=dict)
    # True when class indices are ImageNet-1k's (labels of the bundled samples apply).
    imagenet_classes: bool = True

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def classifier_names() -> list[str]:
    """Classification architectures torchvision offers."""
    return sorted(tvm.list_models(module=tvm))


def imagenet_categories() -> list[str]:
    """The 1000 ImageNet class names (from torchvision's metadata, no download)."""
    return list(tvm.ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def wrap(net: nn.Module, arch: str, normalize: bool = True) -> NormalizedClassifier:
    """`net` taking [0, 1] RGB: with the mean/std its weights expect (timm's pretrained config, else ImageNet's)."""
    if is_timm_arch(arch):
        mean, std = input_stats(net)
        return NormalizedClassifier(net, mean, std, normalize=normalize)
    return NormalizedClassifier(net, normalize=normalize)


def replace_head(net: nn.Module, num_classes: int) -> nn.Module:
    """Swap the final linear layer for one with `num_classes` outputs (timm models: their reset_classifier)."""
    if callable(getattr(net, "reset_classifier", None)):
        net.reset_classifier(num_classes)
        return net
    for attr in ("fc", "classifier", "head", "heads"):
        head = getattr(net, attr, None)
        if isinstance(head, nn.Linear):
            setattr(net, attr, nn.Linear(head.in_features, num_classes))
            return net
        if isinstance(head, nn.Sequential):
            for i in range(len(head) - 1, -1, -1):
                if isinstance(head[i], nn.Linear):
                    head[i] = nn.Linear(head[i].in_features, num_classes)
                    return net
    raise ConfigError(f"Cannot find the final linear layer of {type(net).__name__}. Use a ResNet-style classifier.")


def build_network(arch: str, num_classes: int = 1000) -> nn.Module:
    """An untrained network of the given architecture: a torchvision name, timm/<name>, or the study's."""
    if is_timm_arch(arch):
        return build_timm_network(timm_name(arch), num_classes)
    if arch == STUDY_ARCH:
        return StudyResNet18(num_classes)
    if arch not in classifier_names():
        raise ConfigError(f"Unknown classifier '{arch}'. Use a torchvision model name such as: "
                          f"{', '.join(n for n in classifier_names() if n.startswith('resnet'))}.")
    net = tvm.get_model(arch, weights=None)
    if num_classes != 1000:
        net = replace_head(net, num_classes)
    return net


def _strip_to_network(state: dict[str, torch.Tensor], net: nn.Module) -> dict[str, torch.Tensor]:
    """Drop a wrapper prefix (e.g. 'classifier.net.') so keys match the bare network."""
    own = set(net.state_dict())
    if own & set(state):
        return state
    for key in state:
        for own_key in own:
            if key.endswith("." + own_key):
                prefix = key[: -len(own_key)]
                return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return state


def load_classifier(
    arch: str = "resnet18",
    weights: str | None = "IMAGENET1K_V1",
    checkpoint: str | None = None,
    pretrained: bool = True,
    seed: int = 0,
    download: bool = True,
    normalize: bool = True,
    num_classes: int | None = None,
) -> Classifier:
    """Build a classifier: torchvision weights by enum name, a checkpoint file, or untrained.

    arch=study_resnet18 loads the original study's Lightning checkpoints (see load_study_classifier).
    normalize=False feeds unnormalised [0, 1] pixels (the study's classifier never saw ImageNet mean/std).
    """
    override = "classifier.checkpoint"
    if arch == STUDY_ARCH:
        if pretrained and not checkpoint:
            raise ConfigError("classifier=study_resnet18 needs the study's checkpoint. Set classifier.checkpoint=PATH "
                              "to its .ckpt file (or pretrained=false for untrained weights).")
        # a checkpoint given is used whatever `pretrained` says, as for the torchvision architectures
        return load_study_classifier(checkpoint, normalize=normalize, seed=seed, num_classes=num_classes)
    if checkpoint:
        path, digest = fetch_weights(checkpoint, None, override)
        return _from_loaded(load_checkpoint_file(path, override), arch, path, digest, normalize)
    if not pretrained or not weights:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = build_network(arch)
        return _classifier(net, arch, WeightsIdentity(UNTRAINED), normalize)
    if is_timm_arch(arch):
        net, identity = pretrained_timm_network(timm_name(arch), weights, download=download)
        return _classifier(net, arch, identity, normalize)
    net = build_network(arch)
    try:
        enum_cls = tvm.get_model_weights(arch)
        spec = enum_cls[weights]
    except KeyError as exc:
        valid = ", ".join(w.name for w in tvm.get_model_weights(arch))
        raise ConfigError(f"'{weights}' is not a weights name of {arch}. Use one of: {valid}.") from exc
    # torchvision file names end in a sha256 prefix, which fetch_weights checks.
    digest_prefix = spec.url.rsplit("-", 1)[-1].split(".")[0]
    path, digest = fetch_weights(spec.url, digest_prefix, "classifier.checkpoint", download=download)
    state = extract_state_dict(load_checkpoint_file(path, override), path, override)
    load_matching_state_dict(net, state, str(path), override)
    categories = list(spec.meta.get("categories") or imagenet_categories())
    return Classifier(NormalizedClassifier(net, normalize=normalize).eval(), arch, categories,
                      WeightsIdentity(f"{arch}:{weights}", spec.url, digest))


def _classifier(net: nn.Module, arch: str, identity: WeightsIdentity, normalize: bool) -> Classifier:
    """A Classifier around a network with ImageNet-1k outputs when it has 1000 (else numbered classes)."""
    n = int(getattr(net, "num_classes", 0) or 1000)
    imagenet = n == 1000
    names = imagenet_categories() if imagenet else [str(i) for i in range(n)]
    return Classifier(wrap(net, arch, normalize).eval(), arch, names, identity, imagenet_classes=imagenet)


def load_timm_classifier(name: str, weights: str | None = DEFAULT_TAG, checkpoint: str | None = None,
                         pretrained: bool = True, seed: int = 0, normalize: bool = True, download: bool = True,
                         arch: str | None = None) -> Classifier:
    """conf/classifier/timm.yaml's target: load_classifier for the arch timm/<name>, the name checked first."""
    check_timm_name(name)
    if arch is not None and arch != f"{TIMM_PREFIX}{name}":
        raise ConfigError(f"classifier.arch={arch} does not match classifier.name={name}. Leave classifier.arch "
                          "at its default (timm/${.name}).")
    return load_classifier(f"{TIMM_PREFIX}{name}", weights=weights, checkpoint=checkpoint, pretrained=pretrained,
                           seed=seed, download=download, normalize=normalize)


def load_study_classifier(checkpoint: str | None, normalize: bool = False, seed: int = 0,
                          num_classes: int | None = None) -> Classifier:
    """The original study's classifier from one of its Lightning checkpoints (best_model.ckpt, last.ckpt, ...).

    The file holds `state_dict` with keys model.ResNet_Module.<resnet18 keys without fc> and model.fc.weight/bias,
    and `hyper_parameters` = {"args": argparse.Namespace}. It is read with torch.load(weights_only=True) with
    argparse.Namespace allow-listed and nothing else. Class index i is the dataset's i-th class folder in sorted
    order (ImageFolder), so labels are matched by folder order (extra["label_order"]). Without a checkpoint
    (pretrained=false) the network is untrained with `num_classes` outputs (default 67, MIT Indoor's).
    """
    override = "classifier.checkpoint"
    extra = {"label_order": FOLDER_ORDER}
    if not checkpoint:
        n = int(num_classes or 67)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = StudyResNet18(n)
        return Classifier(NormalizedClassifier(net, normalize=normalize).eval(), STUDY_ARCH,
                          [str(i) for i in range(n)], WeightsIdentity(UNTRAINED), extra=extra, imagenet_classes=False)
    path, digest = fetch_weights(str(checkpoint), None, override)
    obj = load_checkpoint_file(path, override, allow=(argparse.Namespace,))
    if isinstance(obj, dict) and CHECKPOINT_META_KEY in obj:  # the study's network fine-tuned by train.py
        return _from_loaded(obj, STUDY_ARCH, path, digest, normalize)
    if not isinstance(obj, dict) or not isinstance(obj.get("state_dict"), dict):
        raise UserError(f"'{path}' is not a Lightning checkpoint of the study (no 'state_dict'). Set {override}=PATH "
                        "to one of its .ckpt files, or use classifier=resnet18 for other weights.")
    state = {k[len("model."):] if k.startswith("model.") else k: v for k, v in obj["state_dict"].items()}
    if "fc.weight" not in state:
        raise UserError(f"'{path}' has no model.fc.weight: not the study's ResNet_Model. Set {override}=PATH to a "
                        "checkpoint of the study's classifier.")
    n = int(state["fc.weight"].shape[0])
    net = StudyResNet18(n)
    load_matching_state_dict(net, state, str(path), override)
    args = (obj.get("hyper_parameters") or {}).get("args")
    if isinstance(args, argparse.Namespace):
        extra["study_args"] = {k: v if isinstance(v, (str, int, float, bool, type(None))) else str(v)
                               for k, v in vars(args).items()}
    return Classifier(NormalizedClassifier(net, normalize=normalize).eval(), STUDY_ARCH, [str(i) for i in range(n)],
                      WeightsIdentity(f"{STUDY_ARCH}:{path.name}", str(path), digest), extra=extra,
                      imagenet_classes=False)


def _from_loaded(obj: Any, arch: str, path: Any, digest: str, normalize: bool) -> Classifier:
    """A classifier from a loaded state_dict or train.py checkpoint (whose metadata names arch and classes)."""
    override = "classifier.checkpoint"
    meta = obj.get(CHECKPOINT_META_KEY, {}) if isinstance(obj, dict) else {}
    # train.py records the input normalisation it trained with (checkpoints without the key were normalised)
    trained = bool(meta.get("normalize", True)) if meta else normalize
    if trained != normalize:
        how = "ImageNet mean/std normalised" if trained else "unnormalised [0, 1]"
        raise ConfigError(f"'{path}' was trained on {how} pixels. Set classifier.normalize={str(trained).lower()} "
                          "to evaluate it as it was trained.")
    arch = meta.get("arch", arch)
    class_names = list(meta.get("class_names") or [])
    state = extract_state_dict(obj, path, override)
    num_classes = len(class_names) or _output_size(state)
    net = build_network(arch, num_classes)
    state = _strip_to_network(state, net)
    load_matching_state_dict(net, state, str(path), override)
    imagenet = not class_names and num_classes == 1000
    if not class_names:
        class_names = imagenet_categories() if imagenet else [str(i) for i in range(num_classes)]
    return Classifier(wrap(net, arch, normalize).eval(), arch, class_names,
                      WeightsIdentity(f"{arch}:{path.name}", str(path), digest), extra=dict(meta),
                      imagenet_classes=imagenet)


def _output_size(state: dict[str, torch.Tensor]) -> int:
    """Class count from the last 2-D weight in a state_dict (the final linear layer)."""
    weights = [v for k, v in state.items() if k.endswith("weight") and v.ndim == 2]
    if not weights:
        raise UserError("The checkpoint has no linear layer to read the class count from. "
                        "Set classifier.checkpoint=PATH to a classifier's state_dict.")
    return int(weights[-1].shape[0])


def read_checkpoint_meta(checkpoint: str | None, override: str = "classifier.checkpoint") -> dict[str, Any] | None:
    """The train.py metadata of a local checkpoint file (None for URLs, plain state_dicts, the study's Lightning
    files or no checkpoint)."""
    if not checkpoint or is_url(str(checkpoint)):
        return None
    path, _ = fetch_weights(str(checkpoint), None, override)
    obj = load_checkpoint_file(path, override, allow=(argparse.Namespace,))
    meta = obj.get(CHECKPOINT_META_KEY) if isinstance(obj, dict) else None
    return dict(meta) if isinstance(meta, dict) else None
