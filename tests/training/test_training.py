"""Training pieces: the LR schedule, atomic checkpoint files, checkpoints evaluate.py can load."""

from __future__ import annotations

import math

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torchvision
from PIL import Image

from iqa_saliency.data.sources import ImageFolder
from iqa_saliency.data.splits import split_source
from iqa_saliency.models.classifier import load_classifier, read_checkpoint_meta
from iqa_saliency.training.module import (
    AtomicCheckpointIO,
    ClassificationData,
    ClassifierModule,
    OptimSettings,
    build_network_for,
    warmup_cosine,
)


def test_warmup_cosine_by_hand():
    assert [warmup_cosine(s, 4, 12) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert warmup_cosine(4, 4, 12) == 1.0
    assert warmup_cosine(8, 4, 12) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert warmup_cosine(12, 4, 12) == pytest.approx(0.0)


def test_interrupted_checkpoint_write_keeps_the_previous_file(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"epoch": 0, "w": torch.ones(3)}, path)
    real_save = torch.save

    def dies_halfway(obj, fh, *a, **k):
        real_save(obj, fh, *a, **k)
        fh.truncate(10)
        raise KeyboardInterrupt  # as if the process were stopped while writing

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"epoch": 1, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["epoch"] == 0
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left behind


def test_lightning_checkpoint_loads_with_weights_only_into_the_same_network(tmp_path):
    root = tmp_path / "data"
    for c, name in enumerate(["dark", "light"]):
        for i in range(4):
            (root / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((36, 36, 3), 40 + 150 * c + i, np.uint8)).save(root / name / f"{i}.png")
    source = ImageFolder(root)
    data = ClassificationData(split_source(source, "train", 0.25, 0), split_source(source, "val", 0.25, 0),
                              crop=32, resize=36, batch_size=4, num_workers=0)
    net, _ = build_network_for("resnet18", 2, pretrained=False, weights=None)
    module = ClassifierModule(net, source.class_names, "resnet18", OptimSettings(), {"selection": {"x": [1]}})
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, plugins=[AtomicCheckpointIO()], default_root_dir=tmp_path)
    trainer.fit(module, datamodule=data)
    ckpt = tmp_path / "model.ckpt"
    trainer.save_checkpoint(ckpt)
    meta = read_checkpoint_meta(str(ckpt))
    assert meta["class_names"] == ["dark", "light"] and meta["arch"] == "resnet18" and meta["selection"] == {"x": [1]}
    assert set(meta["metrics"]) >= {"val/loss", "val/acc_top1"}
    clf = load_classifier(checkpoint=str(ckpt))  # torch.load(weights_only=True) inside
    assert clf.class_names == ["dark", "light"] and clf.extra["arch"] == "resnet18"
    x = torch.rand(2, 3, 32, 32)
    module.eval()
    with torch.no_grad():
        torch.testing.assert_close(clf.model(x), module(x))


def test_validation_images_are_the_ones_evaluate_sees(class_folder):
    from iqa_saliency.data.pairs import CorruptedPairs
    from iqa_saliency.data.protocol import Cell, Inputs
    from iqa_saliency.training.module import eval_transform

    source = ImageFolder(class_folder)
    pairs = CorruptedPairs(source, Cell("none", 0, 0), Inputs(resize=72, crop=64))
    transform = eval_transform(72, 64)
    for i, record in enumerate(source.records):
        expected = pairs[i]["clean"].float() / 255
        torch.testing.assert_close(transform(source.load(record)), expected, rtol=0, atol=0)


def _fit_one_epoch(module, data, tmp_path):
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, plugins=[AtomicCheckpointIO()], default_root_dir=tmp_path)
    trainer.fit(module, datamodule=data)
    ckpt = tmp_path / "study.ckpt"
    trainer.save_checkpoint(ckpt)
    return ckpt


def test_study_network_fine_tuned_here_loads_as_the_study_classifier(tmp_path, class_folder):
    """train.py classifier=study_resnet18: the study's ResNet_Model on unnormalised pixels; evaluate.py loads the
    checkpoint with classifier=study_resnet18 (same logits, class names by folder) and refuses normalised input."""
    from iqa_saliency.errors import ConfigError
    from iqa_saliency.models.classifier import STUDY_ARCH, StudyResNet18

    source = ImageFolder(class_folder)
    data = ClassificationData(split_source(source, "train", 0.5, 0), split_source(source, "val", 0.5, 0),
                              crop=32, resize=36, batch_size=2, num_workers=0, augment=False)
    net, start = build_network_for(STUDY_ARCH, 2, pretrained=False, weights=None, normalize=False)
    assert isinstance(net.net, StudyResNet18) and net.net.fc.out_features == 2 and start is None
    module = ClassifierModule(net, source.class_names, STUDY_ARCH, OptimSettings(scheduler="none"))
    ckpt = _fit_one_epoch(module, data, tmp_path)
    assert read_checkpoint_meta(str(ckpt))["normalize"] is False
    clf = load_classifier(STUDY_ARCH, checkpoint=str(ckpt), normalize=False)
    assert clf.arch == STUDY_ARCH and clf.class_names == ["alpha", "beta"] and not clf.imagenet_classes
    x = torch.rand(3, 3, 32, 32)
    module.eval()
    with torch.no_grad():
        torch.testing.assert_close(clf.model(x), module(x))
        torch.testing.assert_close(clf.model(x), clf.model(x), rtol=0, atol=0)  # no dropout in eval
    with pytest.raises(ConfigError, match="unnormalised.*classifier.normalize=false"):
        load_classifier("resnet18", checkpoint=str(ckpt))  # normalize=True by default


def test_study_body_starts_from_torchvision_resnet18_and_the_head_is_new(monkeypatch):
    from iqa_saliency.models import classifier as classifiers
    from iqa_saliency.models.classifier import STUDY_ARCH
    from iqa_saliency.models.weights import WeightsIdentity
    from iqa_saliency.training import module as training

    torch.manual_seed(3)
    body = torchvision.models.resnet18(weights=None)
    asked = []

    def fake_torchvision(arch, weights=None, pretrained=True, **kwargs):
        asked.append((arch, weights, pretrained))
        return classifiers.Classifier(classifiers.NormalizedClassifier(body), arch, [], WeightsIdentity("rn18"))

    monkeypatch.setattr(training, "load_classifier", fake_torchvision)
    net, start = build_network_for(STUDY_ARCH, 5, pretrained=True, weights=None, seed=1, normalize=False)
    assert asked == [("resnet18", "IMAGENET1K_V1", True)] and start.name == "rn18" and not net.normalize
    own = net.net.ResNet_Module.state_dict()
    assert set(own) == {k for k in body.state_dict() if not k.startswith("fc.")}
    assert all(torch.equal(v, body.state_dict()[k]) for k, v in own.items())
    assert net.net.fc.out_features == 5
    again, _ = build_network_for(STUDY_ARCH, 5, pretrained=True, weights=None, seed=1, normalize=False)
    assert torch.equal(again.net.fc.weight, net.net.fc.weight)  # the new head is seeded


def test_without_augmentation_train_images_are_prepared_as_val_images(class_folder):
    from iqa_saliency.training.module import eval_transform

    source = ImageFolder(class_folder)
    data = ClassificationData(source, source, crop=32, resize=36, batch_size=2, num_workers=0, augment=False)
    prepare = eval_transform(36, 32)
    for i, record in enumerate(source.records):
        image, label = data.train_set[i]
        torch.testing.assert_close(image, prepare(source.load(record)), rtol=0, atol=0)
        assert label == record.label
