"""train.py end to end on generated images: learns, evaluates the same on the val split, resumes, survives kills."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.cli import ROOT, run_cli
from PIL import Image

from iqa_saliency.models.classifier import load_classifier

COLOURS = {"blue": (40, 60, 200), "green": (40, 180, 60), "red": (200, 40, 40)}
SMALL = ["pretrained=false", "logger=csv", "trainer.enable_progress_bar=false", "dataset.resize=40",
         "dataset.crop=32", "dataset.batch_size=8", "dataset.num_workers=0", "dataset.val_fraction=0.25"]
EVAL = "attribution=saliency"  # at 32 px ResNet18's layer4 is 1x1: Grad-CAM there is refused (no spatial map)
ALL_CATEGORIES = "dataset.quality_filter=[Bad,Poor,Fair,Good,Excellent]"


def make_dataset(root: Path, per_class: int, classes=COLOURS) -> Path:
    """Noisy striped images; the classes differ in colour and stripe direction."""
    for c, (name, rgb) in enumerate(classes.items()):
        for i in range(per_class):
            rng = np.random.default_rng(100 * c + i)
            yy, xx = np.mgrid[0:48, 0:48]
            stripes = [(yy // 4) % 2, (xx // 4) % 2, ((xx + yy) // 4) % 2][c % 3]
            img = np.array(rgb)[None, None] * (0.6 + 0.4 * stripes[..., None]) + rng.normal(0, 25, (48, 48, 3))
            path = root / name / f"{i:02d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path)
    return root


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Three epochs on 3 classes x 12 images, through the quality gate (every category kept)."""
    tmp = tmp_path_factory.mktemp("train")
    data = make_dataset(tmp / "data", 12)
    cache = tmp / "quality.csv"
    run = tmp / "run"
    proc = run_cli("train.py", "dataset=folder", f"dataset.root={data}", *SMALL, "epochs=3", "optimizer.name=adamw",
                   "optimizer.lr=0.001", ALL_CATEGORIES, f"dataset.quality_cache={cache}", f"hydra.run.dir={run}")
    ok(proc)
    return {"data": data, "run": run, "cache": cache, "tmp": tmp}


@pytest.mark.slow
def test_training_learns_and_evaluate_reproduces_val_accuracy(trained):
    run, data = trained["run"], trained["data"]
    ckpt = torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    meta = ckpt["iqa_saliency"]
    assert meta["class_names"] == ["blue", "green", "red"]
    assert meta["metrics"]["val/acc_top1"] >= 0.8  # chance is 1/3
    metrics = read_csv(run / "csv" / "metrics.csv")
    val_losses = [float(r["val/loss"]) for r in metrics if r.get("val/loss")]
    assert len(val_losses) == 3 and meta["metrics"]["val/loss"] == pytest.approx(min(val_losses))
    split = read_csv(run / "split.csv")
    val_images = sorted(r["image"] for r in split if r["split"] == "val")
    assert len(val_images) == 9 and sorted(r["image"] for r in split) == sorted(
        f"{c}/{i:02d}.png" for c in COLOURS for i in range(12))
    report = json.loads((run / "quality_filter.json").read_text())
    assert report["n_total"] == 36 == report["n_kept"] and report["n_scored_now"] == 36

    ev = run / "eval"
    proc = run_cli("evaluate.py", "dataset=folder", f"dataset.root={data}", *SMALL, EVAL, "logger=none",
                   "dataset.split=val",
                   f"classifier.checkpoint={run / 'checkpoints' / 'best.ckpt'}", "corruption=none", "severity=0",
                   ALL_CATEGORIES, f"dataset.quality_cache={trained['cache']}", "figures=0", f"hydra.run.dir={ev}")
    ok(proc)
    rows = read_csv(ev / "per_image.csv")
    assert sorted(r["image"] for r in rows) == val_images
    summary = json.loads((ev / "summary.json").read_text())
    assert summary["label_source"] == "checkpoint"
    assert summary["metrics"]["acc/top1"] == pytest.approx(meta["metrics"]["val/acc_top1"], abs=1e-6)
    assert json.loads((ev / "quality_filter.json").read_text())["n_scored_now"] == 0  # cached by training

    # Independent check of the predictions: the network straight from the file, PIL resize + centre crop.
    clf = load_classifier(checkpoint=str(run / "checkpoints" / "best.ckpt"))
    for r in rows:
        with Image.open(data / r["image"]) as im:
            im = im.convert("RGB").resize((40, 40), Image.BILINEAR).crop((4, 4, 36, 36))
        x = torch.from_numpy(np.asarray(im, dtype=np.float32) / 255).permute(2, 0, 1)[None]
        with torch.no_grad():
            assert int(clf.model(x).argmax()) == int(r["pred"])


@pytest.mark.slow
def test_study_recipe_trains_the_study_network_and_evaluate_loads_it_as_study_resnet18(trained, tmp_path):
    """recipe=study classifier=study_resnet18: the study's network and hyperparameters, unnormalised input; the
    checkpoint evaluates with classifier=study_resnet18 to the val accuracy training reported."""
    data, run = trained["data"], tmp_path / "study"
    proc = run_cli("train.py", "recipe=study", "classifier=study_resnet18", "dataset=folder", f"dataset.root={data}",
                   *SMALL, "epochs=2", ALL_CATEGORIES, f"dataset.quality_cache={trained['cache']}",
                   f"hydra.run.dir={run}")
    ok(proc)
    summary = json.loads((run / "train_summary.json").read_text())
    config = summary["config"]
    assert (config["optimizer"]["lr"], config["optimizer"]["momentum"], config["optimizer"]["weight_decay"]) == (
        1e-3, 0.0, 1e-3)
    assert config["scheduler"]["name"] == "none" and config["label_smoothing"] == 0.0 and config["augment"] is False
    meta = torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)["iqa_saliency"]
    assert meta["arch"] == "study_resnet18" and meta["normalize"] is False
    ev, best = run / "eval", run / "checkpoints" / "best.ckpt"
    proc = run_cli("evaluate.py", "classifier=study_resnet18", f"classifier.checkpoint={best}", "dataset=folder",
                   f"dataset.root={data}", *SMALL, EVAL, "logger=none", "dataset.split=val",
                   "corruption=none", "severity=0", ALL_CATEGORIES, f"dataset.quality_cache={trained['cache']}",
                   "figures=0", f"hydra.run.dir={ev}")
    ok(proc)
    result = json.loads((ev / "summary.json").read_text())
    assert result["metrics"]["acc/top1"] == pytest.approx(meta["metrics"]["val/acc_top1"], abs=1e-6)


@pytest.mark.slow
def test_resume_continues_the_epoch_count_and_reuses_quality_scores(trained):
    run2 = trained["tmp"] / "resumed"
    proc = run_cli("train.py", "dataset=folder", f"dataset.root={trained['data']}", *SMALL, "epochs=4",
                   "optimizer.name=adamw", "optimizer.lr=0.001", ALL_CATEGORIES,
                   f"dataset.quality_cache={trained['cache']}",
                   f"ckpt_path={trained['run'] / 'checkpoints' / 'last.ckpt'}", f"hydra.run.dir={run2}")
    ok(proc)
    epochs = {r["epoch"] for r in read_csv(run2 / "csv" / "metrics.csv") if r.get("val/loss")}
    assert epochs == {"3"}  # only the fourth epoch ran
    last = torch.load(run2 / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["epoch"] == 3 and last["iqa_saliency"]["epoch"] == 3
    assert json.loads((run2 / "quality_filter.json").read_text())["n_scored_now"] == 0


@pytest.mark.slow
def test_checkpoint_refuses_other_classes_and_another_split(trained, tmp_path):
    best = trained["run"] / "checkpoints" / "best.ckpt"
    other = make_dataset(tmp_path / "other", 4, {**COLOURS, "yellow": (220, 220, 30)})
    common = [*SMALL, EVAL, "logger=none", "corruption=none", "severity=0", f"classifier.checkpoint={best}",
              f"hydra.run.dir={tmp_path / 'ev'}"]
    proc = run_cli("evaluate.py", "dataset=folder", f"dataset.root={other}", *common)
    assert proc.returncode == 2 and "classes do not match the checkpoint" in proc.stderr
    assert "unexpected ['yellow']" in proc.stderr.strip().splitlines()[-1]

    proc = run_cli("evaluate.py", "dataset=folder", f"dataset.root={trained['data']}", *common, "dataset.split=val",
                   "dataset.val_fraction=0.5")
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2 and last.startswith("error: ") and "dataset.val_fraction=0.25" in last
    assert "dataset.quality_filter=[Bad,Poor,Fair,Good,Excellent]" in last

    # Resuming training on another split is refused the same way, before any training.
    proc = run_cli("train.py", "dataset=folder", f"dataset.root={trained['data']}", *SMALL, "dataset.val_fraction=0.5",
                   f"ckpt_path={trained['run'] / 'checkpoints' / 'last.ckpt'}", f"hydra.run.dir={tmp_path / 'tr'}")
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2 and "dataset.val_fraction=0.25" in last and "GPU available" not in proc.stderr


@pytest.mark.slow
def test_killed_run_leaves_a_loadable_last_checkpoint(tmp_path):
    data = make_dataset(tmp_path / "data", 24)
    run = tmp_path / "run"
    cmd = [sys.executable, str(ROOT / "train.py"), "dataset=folder", f"dataset.root={data}", *SMALL, "epochs=50",
           "logger=none", "dataset.batch_size=4", f"hydra.run.dir={run}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = run / "checkpoints" / "last.ckpt"
    try:
        deadline = time.time() + 300
        while not last.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert last.exists()
        time.sleep(0.5)  # into the next epoch
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    ckpt = torch.load(last, map_location="cpu", weights_only=True)
    assert ckpt["epoch"] >= 0 and ckpt["iqa_saliency"]["class_names"] == ["blue", "green", "red"]
    assert load_classifier(checkpoint=str(last)).num_classes == 3


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-4000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), proc.stderr[-4000:]
    for needle in needles:
        assert needle in last
    assert "GPU available" not in proc.stdout + proc.stderr  # stopped before the trainer was built


@pytest.mark.slow  # a fresh Python process per run (imports torch): end to end
def test_unknown_quality_category_is_one_line_error(tmp_path):
    data = make_dataset(tmp_path / "data", 2)
    proc = run_cli("train.py", "dataset=folder", f"dataset.root={data}", *SMALL, "dataset.quality_filter=[Good,Great]",
                   f"hydra.run.dir={tmp_path / 'run'}")
    assert_one_line_error(proc, "Unknown quality category ['Great']", "dataset.quality_filter=[Good,Excellent]")


@pytest.mark.slow  # a fresh Python process per run (imports torch): end to end
def test_missing_pretrained_weights_offline_is_one_line_error_or_untrained_with_the_fallback(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty cache
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")  # and no way to download, even where there is a network
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    data = make_dataset(tmp_path / "data", 2)
    proc = run_cli("train.py", "dataset=folder", f"dataset.root={data}", *SMALL, "pretrained=true",
                   f"hydra.run.dir={tmp_path / 'run'}")
    assert_one_line_error(proc, "resnet18-f37072fd.pth", "classifier.checkpoint=PATH", "pretrained=false")
    assert not (tmp_path / "run").exists()  # a refused run leaves no stub folder
    fallback = run_cli("train.py", "dataset=folder", f"dataset.root={data}", *SMALL, "pretrained=true",
                       "allow_untrained_fallback=true", "epochs=1", f"hydra.run.dir={tmp_path / 'run'}")
    assert fallback.returncode == 0, fallback.stderr[-3000:]
    assert "Running with UNTRAINED weights" in fallback.stdout + fallback.stderr
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["meta"]["initial_weights"] == {"name": "untrained"}


@pytest.mark.slow  # a fresh Python process per run (imports torch): end to end
def test_flat_folder_cannot_be_trained_on(tmp_path):
    make_dataset(tmp_path / "nested", 1)
    flat = tmp_path / "flat"
    flat.mkdir()
    (tmp_path / "nested" / "red" / "00.png").rename(flat / "a.png")
    proc = run_cli("train.py", "dataset=folder", f"dataset.root={flat}", *SMALL, f"hydra.run.dir={tmp_path / 'run'}")
    assert_one_line_error(proc, "no class folders", "dataset.root")


@pytest.mark.slow
def test_ddp_two_cpu_processes_validate_every_image_once(trained, tmp_path):
    """trainer=ddp composes; the val accuracy over two processes is evaluate.py's on the same checkpoint."""
    run = tmp_path / "ddp"
    proc = run_cli("train.py", "dataset=folder", f"dataset.root={trained['data']}", *SMALL, "epochs=1",
                   "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", f"hydra.run.dir={run}")
    ok(proc)
    meta = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["iqa_saliency"]
    ev = tmp_path / "eval"
    proc = run_cli("evaluate.py", "dataset=folder", f"dataset.root={trained['data']}", *SMALL, EVAL, "logger=none",
                   "dataset.split=val", f"classifier.checkpoint={run / 'checkpoints' / 'last.ckpt'}",
                   "corruption=none", "severity=0", "figures=0", f"hydra.run.dir={ev}")
    ok(proc)
    summary = json.loads((ev / "summary.json").read_text())
    assert summary["n_images"] == 9
    assert summary["metrics"]["acc/top1"] == pytest.approx(meta["metrics"]["val/acc_top1"], abs=1e-6)
