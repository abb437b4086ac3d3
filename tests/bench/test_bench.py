"""The throughput benchmark runs end to end on a tiny setting (it prints a ratio; no timing assertion)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch


@pytest.mark.slow
def test_benchmark_runs_on_a_tiny_setting(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.pipeline", "--images", "4", "--baseline-images", "2", "--batch-size", "2",
         "--workers", "1", "--warm-cache", "--out", str(out)],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "pipeline / per-image loop:" in proc.stdout
    results = json.loads(out.read_text())
    names = [t["name"] for t in results["timings"]]
    assert names[0].startswith("per-image loop") and "pipeline end to end (clean pass included)" in names
    assert any(n.startswith("models only, corrupted") for n in names)
    assert results["ratio_sweep_pipeline_vs_loop"] > 0 and results["warm_cache_fraction_of_models_only"] > 0
    assert results["ratio_pipeline_vs_loop"] > 0 and results["memory"]["rss_mib"] > 0
    host = next(t for t in results["timings"] if t["name"].startswith("host bound"))
    assert host["images"] == 4 and results["host_bound_vs_loop"] > 0
    pipeline = next(t for t in results["timings"] if t["name"] == "pipeline end to end (clean pass included)")
    assert 0 < pipeline["model_seconds"] < pipeline["seconds"] and pipeline["host_ms_per_image"] > 0


@pytest.mark.slow
def test_compile_mode_compares_eager_and_compiled_models(tmp_path):
    out = tmp_path / "compile.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.pipeline", "--compile", "--images", "2", "--batch-size",
                           "2", "--workers", "0", "--size", "64", "--out", str(out)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())
    names = [row["name"] for row in results["rows"]]
    assert names == ["quality forward, eager", "classifier forward, eager", "quality forward, compiled",
                     "classifier forward, compiled", "models only, corrupted: eager",
                     "models only, corrupted: quality model compiled (Grad-CAM eager)"]
    assert all(row["images_per_s"] > 0 for row in results["rows"]) and results["images"] == 2
    # inductor's kernels reorder float sums: close to eager, not bit-identical
    assert 0 <= results["deviation_quality"] < 1e-3 and 0 <= results["deviation_classifier"] < 1e-3


@pytest.mark.slow
def test_scaling_mode_runs(tmp_path):
    out = tmp_path / "scaling.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.pipeline", "--scaling", "--scaling-images", "2,4", "--scaling-sizes", "64",
         "--scaling-size-images", "2", "--batch-size", "2", "--workers", "0", "--corruption", "contrast",
         "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())["scaling"]
    assert [(r["axis"], r["images"], r["size"]) for r in rows] == [("images", 2, 224), ("images", 4, 224),
                                                                   ("size", 2, 64)]
    assert all(r["run_peak_rss_mib"] > 0 for r in rows if r["axis"] == "images")



@pytest.mark.slow
def test_memory_trace_mode_reports_each_batch(tmp_path):
    out = tmp_path / "trace.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.pipeline", "--memory-trace", "--host-only", "--images", "8", "--size", "64",
         "--batch-size", "2", "--workers", "0", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())
    assert len(results["batch_peak_rss_mib"]) == 4 and len(results["quarter_peak_rss_mib"]) == 4
    assert all(v > 0 for v in results["batch_peak_rss_mib"]) and "mb_per_image" in results

def _cell(root, name, used, images):
    from PIL import Image

    cell = root / name
    (cell / "images").mkdir(parents=True)
    (cell / "summary.json").write_text(json.dumps({"corruption_backend": {"requested": "torch", "used": used}}))
    for file, pixels in images.items():
        Image.fromarray(pixels).save(cell / "images" / file)


def test_compare_sweep_pairs_torch_cells_with_their_numpy_twins(tmp_path):
    import numpy as np

    from benchmarks.corruption import compare_sweep

    flat = np.zeros((10, 10, 3), np.uint8)
    one_off = flat.copy()
    one_off[3, 4, 1] = 255  # one value of 300 off by 255: MSE 255^2/300, PSNR 10 log10(300) = 24.77 dB
    _cell(tmp_path, "corruption=fog,corruption_backend=numpy,severity=1", "numpy", {"a.png": flat, "b.png": flat})
    _cell(tmp_path, "corruption=fog,corruption_backend=torch,severity=1", "torch", {"a.png": flat, "b.png": one_off})
    _cell(tmp_path, "corruption=fog,corruption_backend=numpy,severity=2", "numpy", {"a.png": flat})
    _cell(tmp_path, "corruption=fog,corruption_backend=torch,severity=2", "numpy", {"a.png": flat})
    rows = compare_sweep(tmp_path)
    assert [(r["used"], r["images"]) for r in rows] == [("torch", 2), ("numpy", 1)]
    assert rows[0]["psnr_min"] == pytest.approx(10 * np.log10(300)) and rows[1]["psnr_min"] == float("inf")


def test_study_loop_runs_pytorch_grad_cam_as_the_study_did():
    """The study's Grad-CAM pass (saliency_maps.py: pytorch-grad-cam's GradCAM, no targets) back-propagates through
    every weight of the classifier, unlike captum's layer gradient; the benchmark's restatement must cost that too."""
    from pytorch_grad_cam import GradCAM

    from benchmarks.pipeline import Models

    torch.manual_seed(0)
    study = Models(torch.device("cpu"), "gradcam", plain=True)
    assert isinstance(study.study_cam, GradCAM) and study.study_cam.target_layers == [study.attribution.layer]
    study.run_plain(torch.rand(1, 3, 64, 64))
    assert all(p.grad is not None for p in study.clf.parameters())
    study.close()
    assert study.study_cam.activations_and_grads.handles == []
    ours = Models(torch.device("cpu"), "gradcam")
    assert ours.study_cam is None  # the pipeline's own pass: captum's gradient down to the explained layer only
