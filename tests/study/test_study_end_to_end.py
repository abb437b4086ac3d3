"""Issue 12's done-when command, end to end, against the study's code restated (tests/helpers/study_reference.py):

    python evaluate.py dataset=mit_indoor dataset.root=ROOT dataset.split=val dataset.quality_scores=ROOT/mos.csv
        classifier=study_resnet18 classifier.checkpoint=STUDY.ckpt quality.checkpoint=PAQ.pth
        corruption=zoom_blur severity=1 dataset.save_images=true logger=none

must give, per validation image, what the study's code gives on the same inputs and weights: the same images and
labels, the same clean and corrupted predictions, pred_prob within 1e-4, raw MOS within 1e-3 (relative) and the
saved corrupted crops within one grey level.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import study_reference as ref
from helpers.cli import run_cli
from PIL import Image

pytest.importorskip("sklearn", reason="the study's split is sklearn's train_test_split")


@pytest.mark.slow
def test_done_when_command_equals_the_study_code(tmp_path):
    root = tmp_path / "mit-indoor-scenes"
    ref.make_study_dataset(root, classes=3, per_class=5, seed=3)
    n_classes = 3
    study_state = ref.write_study_checkpoint(tmp_path / "STUDY.ckpt", num_classes=n_classes, seed=4)
    paq_state = ref.random_paq2piq_state(5)
    torch.save({"model": paq_state}, tmp_path / "PAQ.pth")
    run_dir = tmp_path / "run"
    out = run_cli("evaluate.py", "dataset=mit_indoor", f"dataset.root={root}", "dataset.split=val",
                  f"dataset.quality_scores={root}/mos.csv", "classifier=study_resnet18",
                  f"classifier.checkpoint={tmp_path / 'STUDY.ckpt'}", f"quality.checkpoint={tmp_path / 'PAQ.pth'}",
                  "corruption=zoom_blur", "severity=1", "dataset.save_images=true", "logger=none",
                  "dataset.num_workers=0", f"hydra.run.dir={run_dir}")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "records no train/val split" in out.stderr + out.stdout
    rows = pd.read_csv(run_dir / "per_image.csv").sort_values("index", ignore_index=True)

    # the study: ImageFolder samples, sklearn split, val subset in sklearn's order
    samples = ref.study_samples(root)
    _, val = ref.study_split([t for _, t in samples])
    model = ref.StudyResNet(n_classes).eval()  # dropout off: the bug is documented, not copied
    model.load_state_dict(study_state)
    assert len(rows) == len(val)
    for i, j in enumerate(val):
        path, label = samples[j]
        row = rows.iloc[i]
        assert row["index"] == i
        assert Path(root / row["image"]) == Path(path)
        assert row["label"] == label
        image = Image.open(path)
        clean = ref.study_transform(image)
        corrupted = ref.study_transform(image, "zoom_blur", 1)  # zoom_blur draws nothing at random
        with torch.no_grad():
            logits = model(torch.stack([clean, corrupted]))
        probs = logits.softmax(dim=1)
        assert row["clean_pred"] == int(probs[0].argmax())
        assert row["pred"] == int(probs[1].argmax())
        assert row["pred_prob"] == pytest.approx(float(probs[1].max()), abs=1e-4)
        # the study's mean-MOS pass: PaQ-2-PiQ on Image.fromarray(uint8(255 * crop)), raw global score
        crop_u8 = np.uint8(255 * corrupted.permute(1, 2, 0).numpy())
        mos = ref.study_paq2piq_global(paq_state, torch.from_numpy(crop_u8).permute(2, 0, 1).float() / 255)
        assert math.isclose(row["mos"], mos, rel_tol=1e-3), (row["image"], row["mos"], mos)
        saved = np.asarray(Image.open(run_dir / "images" / f"{i:06d}_{row['image'].replace('/', '_')}.png"))
        assert saved.shape == crop_u8.shape
        assert np.abs(saved.astype(int) - crop_u8.astype(int)).max() <= 1


@pytest.mark.slow
def test_train_on_the_study_split_then_evaluate_exactly_its_val_split(tmp_path):
    root = tmp_path / "mit-indoor-scenes"
    ref.make_study_dataset(root, classes=3, per_class=5, seed=6)
    samples = ref.study_samples(root)
    train, val = ref.study_split([t for _, t in samples])
    rel = [Path(p).relative_to(root).as_posix() for p, _ in samples]
    out = run_cli("train.py", "dataset=mit_indoor", f"dataset.root={root}", "epochs=1", "pretrained=false",
                  "logger=none", "dataset.num_workers=0", "dataset.batch_size=4", f"hydra.run.dir={tmp_path / 'train'}")
    assert out.returncode == 0, out.stderr[-3000:]
    split = pd.read_csv(tmp_path / "train" / "split.csv")
    assert split[split["split"] == "train"]["image"].tolist() == [rel[i] for i in train]
    assert split[split["split"] == "val"]["image"].tolist() == [rel[i] for i in val]
    ckpt = tmp_path / "train" / "checkpoints" / "best.ckpt"
    common = ("dataset=mit_indoor", f"dataset.root={root}", "dataset.split=val", f"classifier.checkpoint={ckpt}",
              "quality.pretrained=false", "corruption=contrast", "severity=1", "logger=none", "dataset.num_workers=0",
              "figures=0")
    out = run_cli("evaluate.py", *common, f"hydra.run.dir={tmp_path / 'eval'}")
    assert out.returncode == 0, out.stderr[-3000:]
    rows = pd.read_csv(tmp_path / "eval" / "per_image.csv").sort_values("index")
    assert rows["image"].tolist() == [rel[i] for i in val]
    out = run_cli("evaluate.py", *common, "dataset.split_method=project", f"hydra.run.dir={tmp_path / 'other'}")
    assert out.returncode != 0 and "dataset.split_method=study" in out.stderr
