"""The training module (training/module.py) against values known by construction, without a Trainer run: a
"network" whose logits are its input (an identity linear layer), losses and accuracies computed here from the same
logits with log-softmax by hand, what each step logs under which name and options, the LR schedules stepped by hand
against hand-computed factors, the checkpoint metadata from a stand-in trainer's metrics, and images held in memory
whose crops are slices, reaching the loaders with the split's rank and world."""

from __future__ import annotations

import argparse
import math
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn
from torch.utils.data import DistributedSampler, RandomSampler
from torchvision import transforms as T

from iqa_saliency.data.sources import NO_LABEL, ImageRecord, ImageSource
from iqa_saliency.errors import ConfigError, DatasetError, UserError
from iqa_saliency.models import classifier as classifiers
from iqa_saliency.models.classifier import STUDY_ARCH, NormalizedClassifier, StudyResNet18
from iqa_saliency.models.weights import WeightsIdentity
from iqa_saliency.training import module as training
from iqa_saliency.training.module import (
    AtomicCheckpointIO,
    ClassificationData,
    ClassifierModule,
    LabelledImages,
    OptimSettings,
    build_network_for,
    eval_transform,
    train_transform,
    warmup_cosine,
)

RNG = np.random.default_rng(5)
NOISE = RNG.integers(0, 256, (10, 12, 3), dtype=np.uint8)  # H x W: its centre 4 x 4 is [3:7, 4:8]


class Memory(ImageSource):
    """Images held in memory: record i is image i with label labels[i]."""

    def __init__(self, images: list[np.ndarray], labels: list[int], class_names: list[str] | None) -> None:
        self.images = images
        self.records = [ImageRecord(f"m{i}", label) for i, label in enumerate(labels)]
        self.class_names = class_names

    def load(self, record: ImageRecord) -> Image.Image:
        return Image.fromarray(self.images[int(record.image_id[1:])])


def _flat(rgb: tuple[int, int, int], h: int = 6, w: int = 6) -> np.ndarray:
    return np.broadcast_to(np.array(rgb, np.uint8), (h, w, 3)).copy()


def _unit(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a.astype(np.float32) / 255).permute(2, 0, 1)


def _source(n: int = 3) -> Memory:
    return Memory([_flat((10 * i, 20, 30)) for i in range(n)], [i % 2 for i in range(n)], ["a", "b"])


# --- transforms and datasets ---------------------------------------------------------------------------------


def test_eval_transform_crops_resizes_and_treats_small_images():
    image = Image.fromarray(NOISE)
    torch.testing.assert_close(eval_transform(None, 4)(image), _unit(NOISE[3:7, 4:8]), rtol=0, atol=0)
    torch.testing.assert_close(eval_transform(None, None)(image), _unit(NOISE), rtol=0, atol=0)
    # resize: shorter side 10 -> 5, the other 12 -> 6, as PIL's bilinear resize
    want = np.asarray(image.resize((6, 5), Image.BILINEAR))
    torch.testing.assert_close(eval_transform(5, None)(image), _unit(want), rtol=0, atol=0)
    # centre 3 x 3 of 5 x 6: offsets round((5 - 3) / 2) = 1 and round((6 - 3) / 2) = 2 (half to even)
    torch.testing.assert_close(eval_transform(5, 3)(image), _unit(want[1:4, 2:5]), rtol=0, atol=0)
    # an image below the crop: upscaled by default (a flat colour stays flat), zero-padded with small="pad"
    flat = Image.fromarray(_flat((90, 120, 150)))
    torch.testing.assert_close(eval_transform(None, 8)(flat), _unit(_flat((90, 120, 150), 8, 8)), rtol=0, atol=0)
    padded = np.zeros((8, 8, 3), np.uint8)
    padded[1:7, 1:7] = (90, 120, 150)
    torch.testing.assert_close(eval_transform(None, 8, "pad")(flat), _unit(padded), rtol=0, atol=0)
    torch.testing.assert_close(eval_transform(None, 8, small="pad")(flat), _unit(padded), rtol=0, atol=0)
    torch.testing.assert_close(eval_transform(None, 8, "upscale")(flat), _unit(_flat((90, 120, 150), 8, 8)), rtol=0,
                               atol=0)


@pytest.mark.parametrize("small", ["Pad", "upscaled", ""])
def test_an_unknown_small_mode_is_refused_not_read_as_upscale(small):
    message = f"^{re.escape(f'dataset.small={small!r} is not valid. Use dataset.small=upscale or pad.')}$"
    with pytest.raises(ConfigError, match=message):
        eval_transform(None, 8, small)
    for augment in (True, False):
        with pytest.raises(ConfigError, match=message):
            ClassificationData(_source(), _source(), crop=8, resize=None, small=small, augment=augment)


def _random_resized_crop_then_flip(image: Image.Image, crop: int) -> torch.Tensor:
    """torchvision's documented RandomResizedCrop (scale 0.08-1, ratio 3/4-4/3) and a flip with p = 0.5."""
    i, j, h, w = T.RandomResizedCrop.get_params(image, scale=[0.08, 1.0], ratio=[3 / 4, 4 / 3])
    out = image.crop((j, i, j + w, i + h)).resize((crop, crop), Image.BILINEAR)
    if torch.rand(1) < 0.5:
        out = out.transpose(Image.FLIP_LEFT_RIGHT)
    return _unit(np.asarray(out))


def test_train_transform_is_a_random_resized_crop_and_a_flip():
    image = Image.fromarray(RNG.integers(0, 256, (40, 48, 3), dtype=np.uint8))
    flipped = 0
    for seed in range(8):
        torch.manual_seed(seed)
        got = train_transform(16)(image)
        torch.manual_seed(seed)
        want = _random_resized_crop_then_flip(image, 16)
        torch.testing.assert_close(got, want, rtol=0, atol=0)
        torch.manual_seed(seed)
        T.RandomResizedCrop.get_params(image, scale=[0.08, 1.0], ratio=[3 / 4, 4 / 3])
        flipped += bool(torch.rand(1) < 0.5)
    assert 0 < flipped < 8  # both branches of the flip were compared


def test_labelled_images_are_the_transformed_images_with_their_labels():
    source = Memory([NOISE, 255 - NOISE, NOISE // 2], [2, 0, 1], ["a", "b", "c"])
    dataset = LabelledImages(source, eval_transform(None, 4))
    assert len(dataset) == 3
    for i, pixels in enumerate([NOISE, 255 - NOISE, NOISE // 2]):
        image, label = dataset[i]
        torch.testing.assert_close(image, _unit(pixels[3:7, 4:8]), rtol=0, atol=0)
        assert label == [2, 0, 1][i]


# --- the data module ---------------------------------------------------------------------------------------


def _message(name: str) -> str:
    return (f"The {name} images have no class labels. Point dataset.root at a folder with one subfolder per "
            "class.")


@pytest.mark.parametrize("bad", [
    Memory([NOISE], [0], None), Memory([NOISE], [0], []),
    Memory([NOISE, NOISE], [0, NO_LABEL], ["a"]), Memory([NOISE, NOISE], [NO_LABEL, 0], ["a"])])
def test_unlabelled_train_or_val_images_are_refused(bad):
    good = _source()
    for name, args in (("train", (bad, good)), ("val", (good, bad))):
        with pytest.raises(DatasetError, match=f"^{re.escape(_message(name))}$"):
            ClassificationData(*args, crop=4, resize=None)


def test_data_module_defaults_and_transforms():
    train = Memory([NOISE, 255 - NOISE], [1, 0], ["a", "b"])
    val = Memory([_flat((90, 120, 150)), NOISE], [0, 1], ["a", "b"])
    data = ClassificationData(train, val, crop=8, resize=None)
    loader = data.val_dataloader()
    assert (loader.batch_size, loader.num_workers, loader.pin_memory, loader.persistent_workers) == (32, 2, False, True)
    assert data.train_dataloader().batch_size == 32
    # val: the evaluation preparation, small images upscaled by default
    torch.testing.assert_close(data.val_set[0][0], _unit(_flat((90, 120, 150), 8, 8)), rtol=0, atol=0)
    assert [data.val_set[i][1] for i in range(2)] == [0, 1] and len(data.train_set) == 2
    # train: augmented by default (the random resized crop and flip)
    for seed in (0, 1, 2):
        torch.manual_seed(seed)
        got, label = data.train_set[0]
        torch.manual_seed(seed)
        torch.testing.assert_close(got, _random_resized_crop_then_flip(Image.fromarray(NOISE), 8), rtol=0, atol=0)
        assert label == 1


def test_without_augmentation_both_sets_take_resize_crop_and_small():
    small = _flat((90, 120, 150))
    source = Memory([NOISE, small], [0, 1], ["a", "b"])
    data = ClassificationData(source, source, crop=3, resize=5, augment=False, small="pad")
    want = np.asarray(Image.fromarray(NOISE).resize((6, 5), Image.BILINEAR))[1:4, 2:5]
    for dataset in (data.train_set, data.val_set):
        torch.testing.assert_close(dataset[0][0], _unit(want), rtol=0, atol=0)
    padded = np.zeros((8, 8, 3), np.uint8)
    padded[1:7, 1:7] = (90, 120, 150)
    data = ClassificationData(source, source, crop=8, resize=None, augment=False, small="pad")
    for dataset in (data.train_set, data.val_set):
        torch.testing.assert_close(dataset[1][0], _unit(padded), rtol=0, atol=0)


def test_loaders_take_batch_size_workers_and_pinning():
    data = ClassificationData(_source(5), _source(5), crop=4, resize=None, batch_size=3, num_workers=1,
                              pin_memory=True)
    for loader in (data.train_dataloader(), data.val_dataloader()):
        assert (loader.batch_size, loader.num_workers, loader.pin_memory, loader.persistent_workers) == (
            3, 1, True, True)
    data = ClassificationData(_source(5), _source(5), crop=4, resize=None, batch_size=2, num_workers=0)
    for loader in (data.train_dataloader(), data.val_dataloader()):
        assert (loader.batch_size, loader.num_workers, loader.pin_memory, loader.persistent_workers) == (
            2, 0, False, False)
    val = data.val_dataloader()
    assert [list(b[1]) for b in val] == [[0, 1], [0, 1], [0]]  # every val image once, in order, batches of 2


def test_one_process_shuffles_train_and_reads_every_val_image_in_order():
    data = ClassificationData(_source(7), _source(7), crop=4, resize=None, num_workers=0)
    assert type(data.train_dataloader().sampler) is RandomSampler
    assert list(data.val_dataloader().sampler) == list(range(7))


def test_several_processes_share_train_and_val_by_rank():
    data = ClassificationData(_source(7), _source(8), crop=4, resize=None, num_workers=0)
    data.trainer = SimpleNamespace(global_rank=1, world_size=3)
    torch.manual_seed(2**31 + 7)
    sampler = data.train_dataloader().sampler
    assert type(sampler) is DistributedSampler
    assert (sampler.num_replicas, sampler.rank, sampler.seed, sampler.shuffle, len(sampler.dataset)) == (
        3, 1, 7, True, 7)
    loader = data.train_dataloader()
    assert loader.dataset is data.train_set
    order = list(loader.sampler)
    assert [int(y) for _, labels in loader for y in labels] == [i % 2 for i in order]  # the rank's images
    assert list(data.val_dataloader().sampler) == [1, 4, 7]  # every third image from the rank, no padding
    data.trainer = SimpleNamespace(global_rank=2, world_size=3)
    assert list(data.val_dataloader().sampler) == [2, 5]
    assert data.train_dataloader().sampler.rank == 2


# --- optimisation settings and schedule --------------------------------------------------------------------


def test_optim_settings_defaults_and_messages():
    o = OptimSettings()
    assert (o.optimizer, o.lr, o.momentum, o.nesterov, o.weight_decay, o.scheduler, o.warmup_epochs, o.step_size,
            o.gamma, o.label_smoothing) == ("sgd", 0.01, 0.9, False, 1e-4, "cosine", 1.0, 10, 0.1, 0.1)
    with pytest.raises(ConfigError, match=re.escape(
            "optimizer.name='adam' is not known. Use optimizer.name=sgd or adamw.") + "$"):
        OptimSettings(optimizer="adam")
    with pytest.raises(ConfigError, match=re.escape(
            "scheduler.name='linear' is not known. Use scheduler.name=cosine, step or none.") + "$"):
        OptimSettings(scheduler="linear")
    for bad in (1.0, -0.01, 1.5):
        with pytest.raises(ConfigError, match=re.escape(
                f"label_smoothing={bad} is out of range. Use a value in [0, 1).") + "$"):
            OptimSettings(label_smoothing=bad)
    for good in (0.0, 0.999):
        assert OptimSettings(label_smoothing=good).label_smoothing == good
    for name in ("sgd", "adamw"):
        assert OptimSettings(optimizer=name).optimizer == name
    for name in ("cosine", "step", "none"):
        assert OptimSettings(scheduler=name).scheduler == name


def test_warmup_cosine_edges():
    assert warmup_cosine(0, 0, 4) == 1.0  # no warm-up: the cosine starts at once
    assert warmup_cosine(2, 0, 4) == pytest.approx(0.5)
    assert warmup_cosine(2, 2, 2) == 1.0 and warmup_cosine(3, 2, 2) == pytest.approx(0.0)  # nothing after warm-up
    assert warmup_cosine(3, 2, 3) == pytest.approx(0.0)  # the last step of one cosine step
    assert warmup_cosine(9, 2, 6) == pytest.approx(0.0)  # past the end: stays at 0
    assert warmup_cosine(1, 3, 9) == pytest.approx(2 / 3)


# --- the Lightning module ----------------------------------------------------------------------------------


class _Trainer:
    """Stands in for the Lightning trainer attributes the module reads."""

    def __init__(self, **attrs) -> None:
        self.__dict__.update(attrs)


def _module(n: int = 3, optim: OptimSettings | None = None, meta: dict | None = None,
            normalize: bool = False) -> ClassifierModule:
    """Logits = input: an identity linear layer on (B, n) inputs."""
    linear = nn.Linear(n, n)
    with torch.no_grad():
        linear.weight.copy_(torch.eye(n))
        linear.bias.zero_()
    net = NormalizedClassifier(linear, normalize=normalize)
    return ClassifierModule(net, [f"c{i}" for i in range(n)], "tiny", optim or OptimSettings(), meta).double()


def _recording(module: ClassifierModule) -> list[tuple]:
    calls: list[tuple] = []
    module.log = lambda name, value, **kwargs: calls.append((name, value, kwargs))
    return calls


def _log_softmax(row: list[float]) -> list[float]:
    top = max(row)
    lse = top + math.log(sum(math.exp(v - top) for v in row))
    return [v - lse for v in row]


def _smoothed_ce(logits: list[list[float]], labels: list[int], eps: float) -> float:
    """Mean over rows of -(1 - eps) log p_y - eps/n * sum_j log p_j (PyTorch's label smoothing)."""
    total = 0.0
    for row, y in zip(logits, labels, strict=True):
        logp = _log_softmax(row)
        total += -(1 - eps) * logp[y] - eps / len(row) * sum(logp)
    return total / len(logits)


# class 0 twice, both right; class 1 twice, once right; class 2 once, wrong: 3 of 5 right (micro), while the mean of
# the per-class accuracies (macro) would be 0.5
LOGITS = [[2.0, 0.5, -1.0], [0.1, 0.3, 0.2], [-0.5, 1.5, 3.0], [1.0, 2.0, 0.0], [3.0, 0.0, 0.0]]
LABELS = [0, 2, 1, 1, 0]


def test_training_step_loss_accuracy_and_logs():
    module = _module(optim=OptimSettings(label_smoothing=0.3))
    calls = _recording(module)
    loss = module.training_step((torch.tensor(LOGITS, dtype=torch.float64), torch.tensor(LABELS)), 0)
    assert float(loss) == pytest.approx(_smoothed_ce(LOGITS, LABELS, 0.3), rel=1e-6)
    assert [(name, kwargs) for name, _, kwargs in calls] == [
        ("train/loss", {"prog_bar": True, "on_step": True, "on_epoch": True, "sync_dist": True, "batch_size": 5}),
        ("train/acc_top1", {"on_step": False, "on_epoch": True, "batch_size": 5})]
    assert calls[0][1] is loss and calls[1][1] is module.train_top1
    assert float(module.train_top1.compute()) == pytest.approx(3 / 5)  # rows 0, 3 and 4 ranked their label first
    default = _module()
    _recording(default)
    loss = default.training_step((torch.tensor(LOGITS, dtype=torch.float64), torch.tensor(LABELS)), 0)
    assert float(loss) == pytest.approx(_smoothed_ce(LOGITS, LABELS, 0.1), rel=1e-6)


def test_forward_is_the_classifier_on_normalised_pixels():
    module = ClassifierModule(NormalizedClassifier(nn.Identity()), ["a", "b", "c"], "x", OptimSettings())
    x = torch.rand(2, 3, 4, 4)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(module(x), (x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1))


def _rank(row: list[float], label: int) -> int:
    return sorted(range(len(row)), key=lambda j: -row[j]).index(label)


def test_validation_metrics_weigh_every_image_once_and_log_their_names():
    # seven classes: labels ranked 1st, 5th, 6th, 1st and 7th; batches of 3 and 2 (a mean of batch means differs);
    # 2 of 5 right at top-1, while the mean of the per-class accuracies (classes 0, 1, 4, 5) would be 0.5
    base = [0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1]
    rows = [base, base, base, [0.1, 0.9, 0.8, 0.3, 0.2, 0.05, 0.0], [3.0, 0.0, 1.0, 2.0, -1.0, 0.5, 0.25]]
    labels = [0, 4, 5, 1, 4]
    assert [_rank(r, y) for r, y in zip(rows, labels, strict=True)] == [0, 4, 5, 0, 6]
    module = _module(n=7, optim=OptimSettings(label_smoothing=0.5))
    calls = _recording(module)
    for batch_idx, (lo, hi) in enumerate(((0, 3), (3, 5))):
        module.validation_step((torch.tensor(rows[lo:hi], dtype=torch.float64), torch.tensor(labels[lo:hi])),
                               batch_idx)
    plain_ce = [-_log_softmax(r)[y] for r, y in zip(rows, labels, strict=True)]
    assert float(module.val_loss.compute()) == pytest.approx(sum(plain_ce) / 5, rel=1e-6)
    assert float(module.val_top1.compute()) == pytest.approx(2 / 5)
    assert float(module.val_top5.compute()) == pytest.approx(3 / 5)  # ranks 1, 5 and 1; a top-6 would hold 4
    want = []
    for n in (3, 2):
        want += [("val/loss", module.val_loss, {"prog_bar": True, "on_epoch": True, "batch_size": n}),
                 ("val/acc_top1", module.val_top1, {"prog_bar": True, "on_epoch": True, "batch_size": n}),
                 ("val/acc_top5", module.val_top5, {"on_epoch": True, "batch_size": n})]
    assert [(a, kw) for a, _, kw in calls] == [(a, kw) for a, _, kw in want]
    assert all(got is metric for (_, got, _), (_, metric, _) in zip(calls, want, strict=True))


def test_top5_of_three_classes_is_their_top3():
    module = _module(n=3)
    _recording(module)
    module.validation_step((torch.tensor(LOGITS, dtype=torch.float64), torch.tensor(LABELS)), 0)
    assert float(module.val_top5.compute()) == 1.0
    assert float(module.val_top1.compute()) == pytest.approx(3 / 5)


def test_sgd_and_adamw_take_their_settings():
    module = _module(optim=OptimSettings(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.002, scheduler="none"))
    sgd = module.configure_optimizers()
    assert type(sgd) is torch.optim.SGD
    assert {k: sgd.defaults[k] for k in ("lr", "momentum", "nesterov", "weight_decay", "dampening")} == {
        "lr": 0.05, "momentum": 0.8, "nesterov": True, "weight_decay": 0.002, "dampening": 0}
    assert sgd.param_groups[0]["params"] == list(module.parameters()) and len(sgd.param_groups) == 1
    defaults = _module(optim=OptimSettings(scheduler="none")).configure_optimizers()
    assert (defaults.defaults["momentum"], defaults.defaults["nesterov"]) == (0.9, False)
    module = _module(optim=OptimSettings(optimizer="adamw", lr=0.02, weight_decay=0.03, scheduler="none"))
    adamw = module.configure_optimizers()
    assert type(adamw) is torch.optim.AdamW
    assert {k: adamw.defaults[k] for k in ("lr", "weight_decay", "betas", "eps", "amsgrad")} == {
        "lr": 0.02, "weight_decay": 0.03, "betas": (0.9, 0.999), "eps": 1e-8, "amsgrad": False}
    assert adamw.param_groups[0]["params"] == list(module.parameters())


def _lrs(config: dict, steps: int) -> list[float]:
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    lrs = [optimizer.param_groups[0]["lr"]]
    for _ in range(steps):
        optimizer.step()
        scheduler.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    return lrs


def test_step_schedule_per_epoch():
    config = _module(optim=OptimSettings(lr=0.08, scheduler="step", step_size=3, gamma=0.5)).configure_optimizers()
    assert set(config) == {"optimizer", "lr_scheduler"} and set(config["lr_scheduler"]) == {"scheduler", "interval"}
    assert config["lr_scheduler"]["interval"] == "epoch"
    assert _lrs(config, 7) == pytest.approx([0.08, 0.08, 0.08, 0.04, 0.04, 0.04, 0.02, 0.02])


def _cosine(k: int, n: int) -> float:
    return 0.5 * (1 + math.cos(math.pi * k / n))


@pytest.mark.parametrize(("total", "epochs", "warmup_epochs", "factors"), [
    # 22 steps over 4 epochs: 5 per epoch (floored), 1 epoch of warm-up = 5 steps, then 17 cosine steps
    (22, 4, 1.0, [0.2, 0.4, 0.6, 0.8, 1.0] + [_cosine(k, 17) for k in range(18)]),
    # 0.7 epochs of 5 steps = 3.5 steps, rounded to 4
    (10, 2, 0.7, [0.25, 0.5, 0.75, 1.0] + [_cosine(k, 6) for k in range(7)]),
    # no max_epochs: one epoch of all 6 steps; half an epoch of warm-up = 3 steps
    (6, None, 0.5, [1 / 3, 2 / 3, 1.0, _cosine(0, 3), _cosine(1, 3), _cosine(2, 3), 0.0]),
    # one epoch of 4 steps
    (4, 1, 0.5, [0.5, 1.0, _cosine(0, 2), _cosine(1, 2), 0.0]),
    # fewer steps than epochs: one step per epoch at least
    (2, 4, 1.0, [1.0, _cosine(0, 1), 0.0]),
    # a warm-up longer than the run is cut at the last step
    (4, 2, 10.0, [0.25, 0.5, 0.75, 1.0, 1.0]),
])
def test_cosine_schedule_per_step_with_warmup(total, epochs, warmup_epochs, factors):
    module = _module(optim=OptimSettings(lr=0.5, warmup_epochs=warmup_epochs))
    module.trainer = _Trainer(estimated_stepping_batches=float(total), max_epochs=epochs)
    config = module.configure_optimizers()
    assert config["lr_scheduler"]["interval"] == "step" and set(config["lr_scheduler"]) == {"scheduler", "interval"}
    assert type(config["optimizer"]) is torch.optim.SGD
    assert _lrs(config, len(factors) - 1) == pytest.approx([0.5 * f for f in factors], abs=1e-12)


def test_checkpoint_metadata_holds_what_evaluate_needs():
    meta = {"arch": "not this one", "seed": 5, "selection": {"val_fraction": 0.2}}
    module = _module(n=2, meta=meta, normalize=True)
    meta["seed"] = 6  # the module keeps its own copy
    metrics = {"val/loss": torch.tensor(0.25), "val/acc_top1": torch.tensor(0.5, dtype=torch.float64),
               "train/loss": torch.tensor(1.0), "val/per_class": torch.tensor([0.1, 0.2]), "val/count": 3,
               "xval/loss": torch.tensor(9.0), "val/acc_top5": torch.tensor([1.0])}
    module.trainer = _Trainer(callback_metrics=metrics, current_epoch=4)
    checkpoint = {"state_dict": {}}
    module.on_save_checkpoint(checkpoint)
    assert checkpoint == {"state_dict": {}, "iqa_saliency": {
        "arch": "tiny", "seed": 5, "selection": {"val_fraction": 0.2}, "class_names": ["c0", "c1"],
        "normalize": True, "epoch": 4, "metrics": {"val/loss": 0.25, "val/acc_top1": 0.5, "val/acc_top5": 1.0}}}
    saved = checkpoint["iqa_saliency"]
    assert type(saved["epoch"]) is int and all(type(v) is float for v in saved["metrics"].values())
    assert type(saved["class_names"]) is list and type(saved["normalize"]) is bool


def test_checkpoint_metadata_without_meta_and_class_names_copied():
    names = ["x", "y", "z"]
    module = ClassifierModule(NormalizedClassifier(nn.Identity(), normalize=False), names, "other", OptimSettings())
    names.append("w")
    module.trainer = _Trainer(callback_metrics={}, current_epoch=0)
    checkpoint: dict = {}
    module.on_save_checkpoint(checkpoint)
    assert checkpoint == {"iqa_saliency": {"arch": "other", "class_names": ["x", "y", "z"], "normalize": False,
                                           "epoch": 0, "metrics": {}}}
    assert module.class_names == ["x", "y", "z"] and module.arch == "other"


def test_checkpoint_files_round_trip_with_lightning_hyperparameters(tmp_path):
    io = AtomicCheckpointIO()
    path = tmp_path / "a.ckpt"
    io.save_checkpoint({"epoch": 3, "hparams": argparse.Namespace(lr=0.1), "w": torch.arange(4)}, path)
    loaded = io.load_checkpoint(path)
    assert loaded["epoch"] == 3 and loaded["hparams"] == argparse.Namespace(lr=0.1)
    assert torch.equal(loaded["w"], torch.arange(4))
    assert [p.name for p in tmp_path.iterdir()] == ["a.ckpt"]
    path.write_bytes(path.read_bytes()[:50])  # a truncated file: refused, naming train.py's setting
    with pytest.raises(UserError, match=r"^Could not load weights from .* or set ckpt_path=PATH to another file\.$"):
        io.load_checkpoint(path)


# --- the network to fine-tune ------------------------------------------------------------------------------


def _seeded_resnet18(seed: int, n: int) -> nn.Module:
    torch.manual_seed(seed)
    net = torchvision.models.resnet18(weights=None)
    net.fc = nn.Linear(512, n)
    return net


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return set(sa) == set(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_untrained_network_is_seeded_and_leaves_the_global_generator_alone():
    torch.manual_seed(99)
    state = torch.get_rng_state()
    net, start = build_network_for("resnet18", 3, pretrained=False, weights=None, seed=4)
    assert torch.equal(torch.get_rng_state(), state)
    assert start is None and type(net) is NormalizedClassifier and net.normalize is True
    torch.testing.assert_close(net.mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))
    assert _same_weights(net.net, _seeded_resnet18(4, 3))
    default, _ = build_network_for("resnet18", 3, pretrained=True, weights=None, normalize=False)
    assert default.normalize is False and _same_weights(default.net, _seeded_resnet18(0, 3))


def _fake_loader(monkeypatch) -> list[dict]:
    asked: list[dict] = []

    def fake_load_classifier(arch=None, **kwargs):
        asked.append({"arch": arch, **kwargs})
        body = torchvision.models.resnet18(weights=None)
        return classifiers.Classifier(NormalizedClassifier(body), arch, [], WeightsIdentity("loaded"))

    monkeypatch.setattr(training, "load_classifier", fake_load_classifier)
    return asked


@pytest.mark.parametrize(("pretrained", "weights", "checkpoint"), [
    (False, None, "run.ckpt"), (True, "IMAGENET1K_V1", None), (True, "W", "run.ckpt")])
def test_a_loaded_network_gets_a_seeded_head(monkeypatch, pretrained, weights, checkpoint):
    asked = _fake_loader(monkeypatch)
    net, start = build_network_for("resnet18", 4, pretrained=pretrained, weights=weights, seed=2,
                                   checkpoint=checkpoint, normalize=False)
    assert asked == [{"arch": "resnet18", "weights": weights, "checkpoint": checkpoint, "pretrained": True,
                      "normalize": False}]
    assert start == WeightsIdentity("loaded") and type(net) is NormalizedClassifier and net.normalize is False
    # the loader's network is built under the seed, then the new head drawn: as a seeded build with 4 classes
    assert _same_weights(net.net, _seeded_resnet18(2, 4))


def test_study_network_untrained_checkpointed_or_from_named_weights(monkeypatch):
    asked = _fake_loader(monkeypatch)
    net, start = build_network_for(STUDY_ARCH, 3, pretrained=False, weights="W", seed=6)
    assert asked == [] and start is None and type(net.net) is StudyResNet18 and net.normalize is True
    torch.manual_seed(6)
    assert _same_weights(net.net, StudyResNet18(3))
    net, start = build_network_for(STUDY_ARCH, 3, pretrained=True, weights="W", seed=6, normalize=False)
    assert [(a["arch"], a["weights"], a["pretrained"]) for a in asked] == [("resnet18", "W", True)]
    assert start == WeightsIdentity("loaded") and net.normalize is False and net.net.fc.out_features == 3
    asked.clear()
    net, start = build_network_for(STUDY_ARCH, 3, pretrained=False, weights=None, checkpoint="s.ckpt")
    assert asked == [{"arch": STUDY_ARCH, "weights": None, "checkpoint": "s.ckpt", "pretrained": True,
                      "normalize": True}]
    assert start == WeightsIdentity("loaded")


def test_timm_networks_take_their_own_input_statistics(monkeypatch):
    timm = pytest.importorskip("timm")
    net, start = build_network_for("timm/test_resnet", 3, pretrained=False, weights=None)
    assert start is None and net.net.pretrained_cfg["mean"] == (0.5, 0.5, 0.5)  # timm's config, not ImageNet's
    torch.testing.assert_close(net.mean.flatten(), torch.full((3,), 0.5))
    torch.testing.assert_close(net.std.flatten(), torch.full((3,), 0.5))

    def fake_load_classifier(arch=None, **kwargs):
        body = timm.create_model("test_resnet", pretrained=False)
        return classifiers.Classifier(NormalizedClassifier(body), arch, [], WeightsIdentity("loaded"))

    monkeypatch.setattr(training, "load_classifier", fake_load_classifier)
    net, start = build_network_for("timm/test_resnet", 3, pretrained=False, weights=None, checkpoint="t.ckpt")
    assert start == WeightsIdentity("loaded") and net.net.num_classes == 3
    torch.testing.assert_close(net.mean.flatten(), torch.full((3,), 0.5))
