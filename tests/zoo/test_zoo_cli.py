"""The zoo from the command line: a pyiqa quality model with a timm classifier runs end to end; a lower-is-better
metric's MOS drop is the rise of its score; unknown names are one line, before any model loads."""

from __future__ import annotations

import csv
import json

import pytest
from helpers.cli import run_cli

pytest.importorskip("timm", reason="the zoo extra (pip install 'iqa-saliency[zoo]') is not installed")
pytest.importorskip("pyiqa", reason="the zoo extra (pip install 'iqa-saliency[zoo]') is not installed")

SMALL = ["pretrained=false", "logger=csv", "trainer.enable_progress_bar=false", "dataset.resize=40",
         "dataset.crop=32", "dataset.batch_size=8", "dataset.num_workers=0", "dataset.val_fraction=0.25"]
ALL_CATEGORIES = "dataset.quality_filter=[Bad,Poor,Fair,Good,Excellent]"
FAST = ["pretrained=false", "logger=none", "trainer.enable_progress_bar=false", "figures=1"]


def _last_line(proc) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    return proc.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_piqe_and_a_vit_run_end_to_end(tmp_path):
    run = tmp_path / "run"
    proc = run_cli("evaluate.py", "quality=pyiqa", "quality.metric=piqe", "classifier=timm",
                   "classifier.name=vit_tiny_patch16_224", "corruption=gaussian_noise", "severity=3", *FAST,
                   f"hydra.run.dir={run}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["quality_map_kind"] == "model:piqe_distortion_masks" and summary["quality_lower_better"]
    assert summary["classifier"]["arch"] == "timm/vit_tiny_patch16_224"
    assert summary["score_normalizer"]["lower_better"] is True
    assert "Default attribution layer of the vit family: 'net.blocks.11.norm1'" in proc.stdout + proc.stderr
    with open(run / "per_image.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert {row["quality_map_kind"] for row in rows} == {"model:piqe_distortion_masks"}  # on every row too
    for row in rows:  # PIQE: lower is better, so the drop is the corrupted score minus the clean one
        assert float(row["mos_drop"]) == pytest.approx(float(row["mos"]) - float(row["mos_clean"]), rel=1e-5)


@pytest.mark.parametrize(("override", "needle"), [
    ("quality.metric=topiq_nrr", "not a no-reference metric of pyiqa"),
    ("classifier.name=vit_nope", "Unknown timm model 'vit_nope'"),
])
def test_unknown_zoo_names_are_one_line(tmp_path, override, needle):
    proc = run_cli("evaluate.py", "quality=pyiqa", "classifier=timm", override, *FAST, f"hydra.run.dir={tmp_path}")
    assert needle in _last_line(proc)
    assert not (tmp_path / "summary.json").exists()


@pytest.mark.slow
def test_train_fine_tunes_a_timm_classifier_and_evaluate_reads_it_back(tmp_path):
    import numpy as np
    import torch
    from PIL import Image

    data = tmp_path / "data"
    for c, name in enumerate(("blue", "green", "red")):
        (data / name).mkdir(parents=True)
        for i in range(6):
            pixels = np.random.default_rng(10 * c + i).integers(0, 80, (48, 48, 3))
            pixels[..., 2 - c] += 170
            Image.fromarray(pixels.astype(np.uint8)).save(data / name / f"{i:02d}.png")
    run = tmp_path / "run"
    proc = run_cli("train.py", "classifier=timm", "classifier.name=convnext_atto", "dataset=folder",
                   f"dataset.root={data}", *SMALL, "epochs=1", ALL_CATEGORIES, f"hydra.run.dir={run}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = run / "checkpoints" / "last.ckpt"
    meta = torch.load(ckpt, map_location="cpu", weights_only=True)["iqa_saliency"]
    assert meta["arch"] == "timm/convnext_atto" and len(meta["class_names"]) == 3
    ev = tmp_path / "eval"
    proc = run_cli("evaluate.py", "classifier=timm", "classifier.name=convnext_atto", f"classifier.checkpoint={ckpt}",
                   "dataset=folder", f"dataset.root={data}", *SMALL, "logger=none", "corruption=none", "severity=0",
                   "figures=0", "attribution=saliency",  # at 32 px ConvNeXt's last stage is 1x1: no layer map
                   f"hydra.run.dir={ev}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((ev / "summary.json").read_text())
    assert summary["classifier"] == {"arch": "timm/convnext_atto", "num_classes": 3}
