"""Sanity checks of tests/helpers/study_reference.py, the independent restatement of the study."""

from __future__ import annotations

import argparse
import math
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helpers import study_reference as ref  # noqa: E402

# ---------------------------------------------------------------- checkpoint and model

def test_checkpoint_round_trips_into_study_resnet(tmp_path):
    path = tmp_path / "best_model.ckpt"
    sd = ref.write_study_checkpoint(path, num_classes=5, seed=3)
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    for key in ("epoch", "global_step", "pytorch-lightning_version", "state_dict", "loops", "callbacks",
                "optimizer_states", "lr_schedulers", "hparams_name", "hyper_parameters"):
        assert key in ckpt
    keys = list(ckpt["state_dict"])
    assert all(k.startswith(("model.ResNet_Module.", "model.fc.")) for k in keys)
    assert {"model.fc.weight", "model.fc.bias", "model.ResNet_Module.conv1.weight"} <= set(keys)
    assert not any(k.startswith("model.ResNet_Module.fc.") for k in keys)
    assert ckpt["hparams_name"] == "kwargs"
    args = ckpt["hyper_parameters"]["args"]
    assert isinstance(args, argparse.Namespace) and args.batch_size == 32 and args.model_name == "resnet18"

    model = ref.load_study_checkpoint_into(ref.StudyResNet(5), path)  # strict=True inside
    for k, v in model.state_dict().items():
        assert torch.equal(v, sd[k]), k
    # BN buffers were randomised, so a loader that skips buffers would be caught
    assert not torch.equal(sd["ResNet_Module.bn1.running_var"], torch.ones(64))
    # same seed, same weights; other seed, other weights
    assert torch.equal(ref.random_study_state_dict(5, 3)["fc.weight"], sd["fc.weight"])
    assert not torch.equal(ref.random_study_state_dict(5, 4)["fc.weight"], sd["fc.weight"])


def test_checkpoint_needs_namespace_allow_listed(tmp_path):
    path = tmp_path / "last.ckpt"
    ref.write_study_checkpoint(path, num_classes=3, seed=0)
    with pytest.raises(pickle.UnpicklingError, match="Namespace"):
        torch.load(path, map_location="cpu", weights_only=True)
    with torch.serialization.safe_globals([argparse.Namespace]):
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    assert isinstance(ckpt["hyper_parameters"]["args"], argparse.Namespace)


def test_study_resnet_returns_logits_and_dropout_bug_flag():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 64, 64)
    fixed = ref.StudyResNet(4).eval()
    with torch.no_grad():
        a, b = fixed(x), fixed(x)
    assert a.shape == (2, 4) and torch.equal(a, b)
    assert not torch.allclose(a.sum(1), torch.ones(2))  # raw logits, no softmax in forward
    buggy = ref.StudyResNet(4, dropout_bug=True)
    buggy.load_state_dict(fixed.state_dict())
    buggy.eval()
    with torch.no_grad():
        c, d = buggy(x), buggy(x)
    assert not torch.equal(c, d)  # dropout stays on under eval(), as in the study


# ---------------------------------------------------------------- split

def test_split_sizes_stratification_and_determinism():
    pytest.importorskip("sklearn", reason="the study's split is sklearn's train_test_split")
    targets = [0] * 40 + [1] * 25 + [2] * 35
    train, val = ref.study_split(targets)
    assert len(val) == ref.study_validation_size(100) == 20 and len(train) == 80
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(100))
    counts = np.bincount(np.asarray(targets)[val], minlength=3)
    assert counts.tolist() == [8, 5, 7]
    train2, val2 = ref.study_split(targets)
    assert np.array_equal(train, train2) and np.array_equal(val, val2)
    # MIT Indoor's size: the checkpoint names (391 steps/epoch at batch 32) match all 15620 images
    assert math.ceil((15620 - ref.study_validation_size(15620)) / 32) == 391


# ---------------------------------------------------------------- normalisation

def test_fit_normalization_hand_computed():
    scores = [70.2, 70.9, 71.5, 72.3, 72.8, 72.1, 75.0, 68.0]
    peak, std_left, std_right = ref.fit_normalization(scores)
    assert peak == 72  # ints 70,70,71,72,72,72,75,68
    # left: 70.2 70.9 71.5 68.0 -> deviations -1.8 -1.1 -0.5 -4.0
    assert std_left == pytest.approx(math.sqrt((1.8**2 + 1.1**2 + 0.5**2 + 4.0**2) / 4), rel=1e-12)
    # right (>= 72): 72.3 72.8 72.1 75.0 -> deviations .3 .8 .1 3.0
    assert std_right == pytest.approx(math.sqrt((0.3**2 + 0.8**2 + 0.1**2 + 3.0**2) / 4), rel=1e-12)
    # ties: the integer seen first wins; a score exactly at the peak counts on the right
    assert ref.fit_normalization([1.5, 2.5, 2.7, 1.2])[0] == 1
    peak, std_left, std_right = ref.fit_normalization([5.0, 5.0, 4.0, 7.0])
    assert (peak, std_left) == (5, 1.0) and std_right == pytest.approx(math.sqrt(4 / 3))


def test_normalize_and_category():
    p, sl, sr = ref.DEFAULT_NORM_PARAMS
    assert ref.normalize(72) == 72 and ref.category(ref.normalize(72)) == "Good"
    assert ref.normalize(p - 3.5 * sl) == pytest.approx(0)
    assert ref.normalize(p - 10 * sl) == 0 and ref.category(0) == "Bad"
    assert ref.normalize(p + 3.5 * sr) == 99.9 and ref.category(99.9) == "Excellent"
    assert ref.normalize(60) == pytest.approx(72 - 72 * 12 / (3.5 * sl))
    assert ref.category(ref.normalize(60)) == "Fair"
    assert [ref.category(v) for v in (19.99, 20, 59.9, 60, 80)] == ["Bad", "Poor", "Fair", "Good", "Excellent"]
    for v in (3.0, 30.0, 50.0, 72.5, 95.0):
        assert ref.normalize(ref.denormalize(v)) == pytest.approx(v)
    with pytest.raises(ValueError):
        ref.category(100)


# ---------------------------------------------------------------- transform and dataset

def test_center_crop_matches_torchvision():
    for h, w in [(249, 301), (251, 303), (224, 224), (151, 197), (300, 100), (225, 226)]:
        t = torch.rand(3, h, w)
        assert torch.equal(ref.study_center_crop(t), transforms.CenterCrop(224)(t)), (h, w)
    t = ref.study_center_crop(torch.ones(3, 151, 197))
    assert t[:, :36].sum() == 0 and t[:, 36 + 151:].sum() == 0 and t[:, 36:187, 13:210].min() == 1


def test_make_study_dataset_and_transform(tmp_path):
    root = tmp_path / "mit"
    manifest = ref.make_study_dataset(root, classes=3, per_class=4, seed=0, prefix=str(root))
    assert [m["mode"] for m in manifest[:4]] == ["L", "CMYK", "P", "RGB"]
    assert manifest[3]["size"] == (197, 151)
    assert all(w != h for w, h in (m["size"] for m in manifest))
    assert all(min(m["size"]) > 224 for m in manifest[:3] + manifest[4:])

    samples = ref.study_samples(root)
    assert len(samples) == 12 and [t for _, t in samples] == [0] * 4 + [1] * 4 + [2] * 4
    mos = ref.read_study_mos_csv(root / "mos.csv")
    assert set(mos) == {p for p, _ in samples}
    assert ref.study_quality_filter(samples, mos) == samples  # as run: keeps everything
    kept = ref.study_quality_filter(samples, mos, as_run=False)
    assert 0 < len(kept) < len(samples) and all(mos[p] in ("Good", "Excellent") for p, _ in kept)

    for (path, _), m in zip(samples, manifest, strict=True):
        x = ref.study_transform(Image.open(path))
        assert x.shape == (3, 224, 224) and x.dtype == torch.float32
        rgb = ref.study_load_image(path)
        assert torch.equal(x, transforms.Compose([transforms.ToTensor(), transforms.CenterCrop(224)])(rgb))
        if m["mode"] == "L":
            assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])
    small = ref.study_transform(Image.open(samples[3][0]))
    assert small[:, :36].abs().sum() == 0 and small[:, :, :13].abs().sum() == 0

    # deterministic corruption at full size, then crop == ToTensor(corrupt(uint8)) cropped
    from imagecorruptions import corrupt

    rgb = ref.study_load_image(samples[5][0])
    x = ref.study_transform(rgb, "contrast", 2)
    expected = transforms.CenterCrop(224)(transforms.ToTensor()(
        corrupt(np.asarray(rgb), corruption_name="contrast", severity=2)))
    assert torch.equal(x, expected)
    # random corruptions: repeatable under one seed, different under another
    a = ref.study_transform(rgb, "gaussian_noise", 1, seed=7)
    assert torch.equal(a, ref.study_transform(rgb, "gaussian_noise", 1, seed=7))
    assert not torch.equal(a, ref.study_transform(rgb, "gaussian_noise", 1, seed=8))
    assert ref.corruption_accepts_seed("glass_blur") and not ref.corruption_accepts_seed("motion_blur")


def test_mos_csv_format_and_path_styles(tmp_path):
    rows = [("bar/a.jpg", 76.61452), ("bar/b.jpg", 40.0, 1.5, "Bad")]
    out = ref.write_study_mos_csv(tmp_path, rows)
    lines = out.read_text().splitlines()
    assert lines[0] == "image_path,global_score,normalized_global_score,category"
    assert lines[1].startswith("datasets/mit-indoor-scenes/bar/a.jpg,76.61452,")
    assert lines[2] == "datasets/mit-indoor-scenes/bar/b.jpg,40.0,1.5,Bad"
    out = ref.write_study_mos_csv(tmp_path, rows, path_style="windows")
    assert out.read_text().splitlines()[1].startswith("datasets\\mit-indoor-scenes\\bar\\a.jpg,")
    assert ref.study_mos_path("bar/a.jpg", path_style="mixed") == "datasets/mit-indoor-scenes\\bar\\a.jpg"
