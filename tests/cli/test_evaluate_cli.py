"""evaluate.py end to end, as a user runs it (fresh interpreter, Hydra overrides, run folders)."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from helpers.cli import run_cli
from helpers.images import make_image
from imagecorruptions import corrupt
from PIL import Image

from iqa_saliency.data.sources import SAMPLE_IMAGES
from iqa_saliency.io.schema import PER_IMAGE_COLUMNS

REQUIRED = ["image", "label", "corruption", "severity", "mos", "mos_normalized", "quality_category",
            "mos_clean", "pred", "pred_prob", "clean_pred", "flipped", "correct_top1", "correct_top5",
            "sim_cc", "sim_sim", "sim_kld", "sim_spearman", "attr_stability_cc", "maps"]
FAST = ["pretrained=false", "logger=none", "trainer.enable_progress_bar=false"]


def read_rows(run: Path) -> list[dict[str, str]]:
    with open(run / "per_image.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def assert_user_error(proc, *needles: str) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), proc.stderr
    for needle in needles:
        assert needle in last
    assert "GPU available" not in proc.stdout + proc.stderr  # stopped before the trainer was built


def test_lightnings_advert_is_dropped_and_its_device_lines_kept_once(caplog, monkeypatch):
    from pytorch_lightning.utilities.rank_zero import rank_zero_info

    from iqa_saliency.cli import runtime
    from iqa_saliency.cli.runtime import quiet_known_adverts

    monkeypatch.setattr(runtime._DEVICE_LINES, "seen", set())  # as in a fresh process
    quiet_known_adverts()
    quiet_known_adverts()  # idempotent: one filter
    with caplog.at_level(logging.INFO):
        rank_zero_info("💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger]")
        rank_zero_info("GPU available: False, used: False")
        rank_zero_info("GPU available: False, used: False")  # the next cell of a sweep: not again
        rank_zero_info("Testing DataLoader 0")
    assert [r.getMessage() for r in caplog.records] == ["GPU available: False, used: False", "Testing DataLoader 0"]
    filters = logging.getLogger("pytorch_lightning.utilities.rank_zero").filters
    assert sum(type(f).__name__ == "_DropMessages" for f in filters) == 1


@pytest.mark.slow
def test_motion_blur_run_writes_every_output(tmp_path):
    run = tmp_path / "run"
    proc = run_cli("evaluate.py", "corruption=motion_blur", "severity=2", *FAST, f"hydra.run.dir={run}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Tip:" not in proc.stdout + proc.stderr  # Lightning's advertisement (quiet_known_adverts)
    rows = read_rows(run)
    assert len(rows) == len(SAMPLE_IMAGES)
    assert set(REQUIRED) <= set(rows[0]) and list(rows[0]) == PER_IMAGE_COLUMNS
    assert [r["image"] for r in rows] == list(SAMPLE_IMAGES)
    chelsea = next(r for r in rows if r["image"] == "chelsea")
    assert chelsea["label"] == "281" and chelsea["correct_top1"] in ("0", "1", "0.0", "1.0")
    assert next(r for r in rows if r["image"] == "astronaut")["correct_top1"] == ""
    for r in rows:
        assert r["corruption"] == "motion_blur" and r["severity"] == "2"
        assert r["quality_category"] in ("Bad", "Poor", "Fair", "Good", "Excellent")
        maps = np.load(run / r["maps"])
        assert maps["quality_map"].shape == (20, 20) and maps["quality_map"].dtype == np.float32
        assert maps["attribution"].shape == (224, 224) and maps["attribution"].dtype == np.float32
        assert np.isfinite(maps["attribution"]).all()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["weights"]["untrained"] is True
    assert summary["weights"]["quality"]["name"] == "untrained"
    assert summary["n_images"] == len(SAMPLE_IMAGES) and summary["n_skipped"] == 0
    assert summary["provenance"]["packages"]["torch"] == "2.14.1"
    mos = np.array([float(r["mos"]) for r in rows])
    assert summary["metrics"]["quality/mos_mean"] == pytest.approx(mos.mean())
    assert summary["metrics"]["quality/mos_std"] == pytest.approx(mos.std(ddof=1))
    assert summary["metrics"]["similarity/cc"] == pytest.approx(np.mean([float(r["sim_cc"]) for r in rows]))
    figures = sorted((run / "figures").glob("*.png"))
    assert len(figures) == len(SAMPLE_IMAGES)
    assert Image.open(figures[0]).size[0] > 600
    assert not list(run.glob(".*.part*"))  # streaming parts are merged away


@pytest.mark.slow
def test_saved_images_equal_backend_and_reruns_are_identical(tmp_path):
    args = ["corruption=contrast", "severity=3", *FAST, "dataset.save_images=true",
            "dataset.source.names=[chelsea,coffee]"]
    a, b = tmp_path / "a", tmp_path / "b"
    for run in (a, b):
        proc = run_cli("evaluate.py", *args, f"hydra.run.dir={run}")
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert (a / "per_image.csv").read_bytes() == (b / "per_image.csv").read_bytes()
    import skimage.data
    from torchvision.transforms import functional as TF

    clean = TF.center_crop(TF.resize(Image.fromarray(skimage.data.chelsea()), 256, antialias=True), [224, 224])
    saved = np.asarray(Image.open(a / "images" / "000000_chelsea.png"))
    np.testing.assert_array_equal(saved, corrupt(np.asarray(clean), 3, "contrast"))


@pytest.mark.slow
def test_run_without_maps_has_the_same_rows(tmp_path):
    args = ["corruption=contrast", "severity=3", *FAST, "dataset.source.names=[chelsea,coffee]", "figures=1"]
    with_maps, without = tmp_path / "with", tmp_path / "without"
    for run, extra in ((with_maps, []), (without, ["save_maps=false"])):
        proc = run_cli("evaluate.py", *args, *extra, f"hydra.run.dir={run}")
        assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = read_rows(with_maps), read_rows(without)
    assert [r["maps"] for r in b] == ["", ""] and all(r["maps"].endswith(".npz") for r in a)
    assert [{k: v for k, v in r.items() if k != "maps"} for r in a] == [
        {k: v for k, v in r.items() if k != "maps"} for r in b]
    assert not (without / "maps").exists() and len(list((without / "figures").glob("*.png"))) == 1


@pytest.mark.slow
def test_random_corruption_reruns_identical(tmp_path):
    args = ["corruption=gaussian_noise", "severity=4", *FAST, "dataset.source.names=[rocket,clock]"]
    outs = []
    for name in ("a", "b"):
        proc = run_cli("evaluate.py", *args, f"hydra.run.dir={tmp_path / name}")
        assert proc.returncode == 0, proc.stderr[-3000:]
        outs.append((tmp_path / name / "per_image.csv").read_bytes())
    assert outs[0] == outs[1]


@pytest.mark.slow
def test_two_job_sweep_writes_two_run_folders(tmp_path):
    proc = run_cli("evaluate.py", "-m", "corruption=contrast,brightness", "severity=1", *FAST,
                   "dataset.source.names=[coffee]", "figures=0", f"hydra.sweep.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = sorted(p.parent for p in tmp_path.glob("*/summary.json"))
    assert len(runs) == 2
    assert {json.loads((r / "summary.json").read_text())["corruption"] for r in runs} == {"contrast", "brightness"}


@pytest.mark.slow  # a fresh Python process per run (imports torch): end to end
def test_unknown_corruption_is_one_line_error(tmp_path):
    proc = run_cli("evaluate.py", "corruption=blurry", *FAST, f"hydra.run.dir={tmp_path}")
    assert_user_error(proc, "Unknown corruption 'blurry'", "motion_blur")
    assert not (tmp_path / "summary.json").exists()


@pytest.mark.slow  # a fresh Python process per run (imports torch): end to end
def test_severity_7_is_one_line_error(tmp_path):
    proc = run_cli("evaluate.py", "corruption=contrast", "severity=7", *FAST, f"hydra.run.dir={tmp_path}")
    assert_user_error(proc, "Severity 7", "0 (clean) to 5")


@pytest.mark.slow  # a fresh Python process per run (imports torch): end to end
def test_missing_dataset_root_is_one_line_error(tmp_path):
    proc = run_cli("evaluate.py", "dataset=folder", f"dataset.root={tmp_path / 'nope'}", *FAST,
                   f"hydra.run.dir={tmp_path / 'run'}")
    assert_user_error(proc, "does not exist", "dataset.root")


@pytest.mark.slow  # a fresh Python process per run (imports torch): end to end
def test_missing_weights_offline_names_the_override(tmp_path):
    proc = run_cli("evaluate.py", "logger=none", f"hydra.run.dir={tmp_path / 'run'}",
                   f"quality.checkpoint={tmp_path / 'missing.pth'}")
    assert_user_error(proc, "missing.pth", "quality.checkpoint=PATH")


@pytest.mark.slow
def test_folder_with_unreadable_file_warns_and_evaluates_the_rest(tmp_path):
    data = tmp_path / "data"
    make_image(data / "one.png", size=(64, 64), seed=1)
    make_image(data / "two.png", size=(64, 64), seed=2)
    (data / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    run = tmp_path / "run"
    proc = run_cli("evaluate.py", "dataset=folder", f"dataset.root={data}", "dataset.resize=null",
                   "dataset.crop=64", "corruption=jpeg_compression", "severity=1", *FAST, f"hydra.run.dir={run}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "broken.jpg" in proc.stdout + proc.stderr
    assert [r["image"] for r in read_rows(run)] == ["one.png", "two.png"]
    with open(run / "skipped.csv", newline="") as fh:
        skipped = list(csv.DictReader(fh))
    assert [s["image"] for s in skipped] == ["broken.jpg"] and skipped[0]["reason"]
    assert json.loads((run / "summary.json").read_text())["n_skipped"] == 1


@pytest.mark.slow
def test_wandb_offline_logger(tmp_path):
    run = tmp_path / "run"
    proc = run_cli("evaluate.py", "pretrained=false", "logger=wandb", "dataset.source.names=[chelsea]",
                   "figures=1", "trainer.enable_progress_bar=false", f"hydra.run.dir={run}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    offline = list((run / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and list(offline[0].glob("*.wandb"))


def _paq2piq_checkpoint(path: Path, seed: int) -> Path:
    import torch

    from iqa_saliency.models.paq2piq import PaQ2PiQ

    torch.manual_seed(seed)
    torch.save(PaQ2PiQ().state_dict(), path)
    return path


def _block_mean(x: np.ndarray, grid: int = 20) -> np.ndarray:
    h, w = x.shape
    return x.reshape(grid, h // grid, grid, w // grid).mean(axis=(1, 3))


@pytest.mark.slow
def test_quality_saliency_gradcam_follows_quality_weights_and_fills_like_with_like(tmp_path):
    base = ["corruption=contrast", "severity=3", "logger=none", "trainer.enable_progress_bar=false",
            "classifier.pretrained=false", "similarity.quality_saliency=gradcam",
            "dataset.source.names=[chelsea,coffee]", "dataset.resize=80", "dataset.crop=80", "figures=0"]
    runs = {}
    for seed in (1, 2):
        ckpt = _paq2piq_checkpoint(tmp_path / f"paq{seed}.pth", seed)
        runs[seed] = tmp_path / f"run{seed}"
        proc = run_cli("evaluate.py", *base, f"quality.checkpoint={ckpt}", f"hydra.run.dir={runs[seed]}")
        assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_rows(runs[1])
    assert list(rows[0]) == PER_IMAGE_COLUMNS
    for row in rows:
        maps = np.load(runs[1] / row["maps"])
        other = np.load(runs[2] / row["maps"])
        qattr, attr = maps["quality_attribution"], maps["attribution"]
        assert qattr.shape == (80, 80) and np.isfinite(qattr).all() and qattr.std() > 0
        assert not np.allclose(qattr, other["quality_attribution"])  # new quality weights, new map
        np.testing.assert_array_equal(attr, other["attribution"])  # the classifier did not change
        want = np.corrcoef(_block_mean(qattr.astype(np.float64)).ravel(),
                           _block_mean(attr.astype(np.float64)).ravel())[0, 1]
        assert float(row["sim_cc_qattr"]) == pytest.approx(want, abs=1e-5)
        assert row["sim_cc_local"] == row["sim_cc"]
    summary = json.loads((runs[1] / "summary.json").read_text())
    assert summary["quality_saliency"] == "gradcam" and summary["quality_map"] == "raw"
    assert summary["metrics"]["similarity/cc_qattr"] == pytest.approx(np.mean([float(r["sim_cc_qattr"])
                                                                               for r in rows]))


@pytest.mark.slow
def test_quality_map_variants_follow_their_definitions(tmp_path):
    args = ["corruption=contrast", "severity=3", *FAST, "dataset.source.names=[chelsea]", "figures=0",
            "dataset.resize=80", "dataset.crop=80"]
    runs = {}
    for kind in ("raw", "inverted", "drop"):
        runs[kind] = tmp_path / kind
        proc = run_cli("evaluate.py", *args, f"similarity.quality_map={kind}", f"hydra.run.dir={runs[kind]}")
        assert proc.returncode == 0, proc.stderr[-3000:]
    row = {k: read_rows(r)[0] for k, r in runs.items()}
    maps = np.load(runs["raw"] / row["raw"]["maps"])
    pooled = _block_mean(maps["attribution"].astype(np.float64))
    local, clean = maps["quality_map"].astype(np.float64), maps["quality_map_clean"].astype(np.float64)
    for kind, qmap in (("raw", local), ("inverted", 100 - local), ("drop", clean - local)):
        assert float(row[kind]["sim_cc"]) == pytest.approx(np.corrcoef(qmap.ravel(), pooled.ravel())[0, 1],
                                                           abs=1e-4)
        assert row[kind]["sim_cc_qattr"] == "" and row[kind]["sim_cc_local"] == ""


@pytest.mark.slow
def test_attribution_sweep_over_methods(tmp_path):
    proc = run_cli("evaluate.py", "-m", "attribution=gradcam,saliency,integrated_gradients", "corruption=contrast",
                   "severity=1", *FAST, "dataset.source.names=[coffee]", "dataset.resize=64", "dataset.crop=64",
                   "figures=0", f"hydra.sweep.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = sorted(p.parent for p in tmp_path.glob("*/summary.json"))
    assert {json.loads((r / "summary.json").read_text())["attribution"] for r in runs} == {
        "gradcam", "saliency", "integrated_gradients"}
    for run in runs:
        maps = np.load(run / read_rows(run)[0]["maps"])
        assert maps["attribution"].shape == (64, 64) and np.isfinite(maps["attribution"]).all()


@pytest.mark.slow  # a fresh Python process per run (imports torch): end to end
@pytest.mark.parametrize(("override", "needles"), [
    ("similarity.quality_saliency=gradcamm", ("Unknown attribution method 'gradcamm'", "gradcam")),
    ("similarity.quality_map=worse", ("similarity.quality_map='worse'", "raw, inverted, drop")),
    ("+attribution.options.n_steps=4", ("gradcam has no option n_steps", "attribution.options")),
])
def test_bad_attribution_settings_are_one_line_errors(tmp_path, override, needles):
    proc = run_cli("evaluate.py", override, *FAST, f"hydra.run.dir={tmp_path}")
    assert_user_error(proc, *needles)
