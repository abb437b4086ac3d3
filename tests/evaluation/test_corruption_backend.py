"""corruption_backend=torch in the evaluation step (issue 13): the same corrupted inputs as the numpy workers,
under both protocols (crop, and full_size with images of different sizes), the backend that ran recorded, the
corruption cache keyed by backend; maps_format=zarr with the same maps as the .npz files."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from iqa_saliency.corruption.backends import choose_backend
from iqa_saliency.io.maps import read_maps
from tests.helpers.images import make_image


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def _run(run_dir, cell, source, backend="numpy", maps_format="npz", corruption_cache=None, figures=0, **inputs):
    import pytorch_lightning as pl

    from iqa_saliency.data.protocol import Cell, Inputs
    from iqa_saliency.evaluation.cell import run_evaluation
    from iqa_saliency.evaluation.settings import EvaluationModels, Explanation, Outputs
    from iqa_saliency.models.classifier import load_classifier
    from iqa_saliency.models.paq2piq import load_paq2piq

    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, inference_mode=False,
                         use_distributed_sampler=False, enable_checkpointing=False, enable_model_summary=False,
                         enable_progress_bar=False)
    quality, quality_weights = load_paq2piq(pretrained=False)
    models = EvaluationModels(quality, quality_weights, load_classifier(pretrained=False))
    settings = {"resize": 80, "crop": 64, "batch_size": 3, "num_workers": 0, "save_images": True, **inputs}
    summary = run_evaluation(
        source, models, trainer, Cell(*cell, seed=0), Inputs(corruption_backend=backend, **settings),
        Explanation("gradcam"), Outputs(run_dir, figures=figures, maps_format=maps_format,
                                        corruption_cache_dir=corruption_cache),
    ).summary
    return pd.read_csv(run_dir / "per_image.csv"), summary


def _images(run_dir) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(Image.open(p)) for p in sorted((run_dir / "images").glob("*.png"))}


def test_choose_backend_falls_back_per_corruption_with_the_reason():
    assert choose_backend("torch", "zoom_blur", 3, "cpu").used == "torch"
    assert choose_backend("torch", "snow", 3, "cpu").used == "torch"
    slower = choose_backend("torch", "gaussian_noise", 3, "cpu")
    assert (slower.used, "slower" in slower.reason) == ("numpy", True)
    assert choose_backend("torch", "gaussian_noise", 3, "cuda").used == "torch"
    frost = choose_backend("torch", "frost", 3, "cuda")
    assert frost.used == "numpy" and "no torch port" in frost.reason
    assert choose_backend("numpy", "zoom_blur", 3, "cuda").as_dict()["used"] == "numpy"
    assert choose_backend("torch", "zoom_blur", 0, "cpu").used == "none"


def test_torch_backend_in_the_step_gives_the_numpy_workers_inputs_and_rows(tmp_path):
    from iqa_saliency.data.sources import SampleImages

    source = SampleImages(["chelsea", "coffee", "rocket", "clock"])  # batches of 3: one full, one of 1
    cell = ("zoom_blur", 2)
    numpy_rows, numpy_summary = _run(tmp_path / "numpy", cell, source)
    torch_rows, summary = _run(tmp_path / "torch", cell, source, backend="torch", figures=1)
    assert numpy_summary["corruption_backend"]["used"] == "numpy"
    assert summary["corruption_backend"]["requested"] == "torch"
    assert summary["corruption_backend"]["used"] == "torch"
    ref, got = _images(tmp_path / "numpy"), _images(tmp_path / "torch")
    assert sorted(got) == sorted(ref) and len(got) == 4
    for name in ref:
        assert np.abs(ref[name].astype(int) - got[name].astype(int)).max() <= 1, name  # zoom_blur: max diff 1
    assert (tmp_path / "torch" / "figures").is_dir()
    for col in ("mos", "mos_clean", "sim_cc", "pred"):
        np.testing.assert_allclose(torch_rows[col], numpy_rows[col], rtol=1e-3, atol=1e-3, err_msg=col)


def test_corruption_cache_keeps_backends_apart_and_serves_the_torch_entries(tmp_path):
    from iqa_saliency.data.sources import SampleImages

    source = SampleImages(["chelsea", "coffee"])
    cache = tmp_path / "cache"
    cell = ("brightness", 3)
    _run(tmp_path / "numpy", cell, source, corruption_cache=cache)
    numpy_entries = set(cache.rglob("*.npz"))
    assert len(numpy_entries) == 2
    _run(tmp_path / "torch", cell, source, backend="torch", corruption_cache=cache)
    torch_entries = set(cache.rglob("*.npz")) - numpy_entries
    assert len(torch_entries) == 2  # its own entries: the key holds the backend
    _, summary = _run(tmp_path / "again", cell, source, backend="torch", corruption_cache=cache)
    assert set(cache.rglob("*.npz")) == numpy_entries | torch_entries  # served, none added
    assert summary["corruption_backend"]["used"] == "torch"
    ref, got = _images(tmp_path / "torch"), _images(tmp_path / "again")
    assert all(np.array_equal(ref[k], got[k]) for k in ref)  # brightness is bit-exact: same as numpy too
    assert all(np.array_equal(v, _images(tmp_path / "numpy")[k]) for k, v in got.items())


@pytest.mark.parametrize("small", ["pad", "upscale"])
def test_full_size_protocol_with_images_of_different_sizes(tmp_path, small):
    """corrupt_at=full_size: decoded images of four sizes (one below the crop) in one batch are corrupted per
    size on the device, never padded into the result, then cropped as the workers crop."""
    from iqa_saliency.data.sources import ImageFolder

    root = tmp_path / "images"
    for k, size in enumerate([(96, 80), (120, 72), (96, 80), (56, 90)]):
        make_image(root / f"im{k}.png", size=size, seed=k)
    cell = ("motion_blur", 3)
    protocol = {"resize": None, "crop": 64, "corrupt_at": "full_size", "small": small, "batch_size": 4}
    _run(tmp_path / "numpy", cell, ImageFolder(root), **protocol)
    _, summary = _run(tmp_path / "torch", cell, ImageFolder(root), backend="torch", **protocol)
    assert summary["corruption_backend"]["used"] == "torch" and summary["n_images"] == 4
    ref, got = _images(tmp_path / "numpy"), _images(tmp_path / "torch")
    assert sorted(got) == sorted(ref) and len(got) == 4
    for name in ref:
        assert ref[name].shape == got[name].shape == (64, 64, 3)
        assert psnr(ref[name], got[name]) >= 40, name


def test_zarr_maps_equal_the_npz_maps_and_count_as_done(tmp_path):
    from iqa_saliency.data.sources import SampleImages
    from iqa_saliency.io.run_writer import RunWriter

    source = SampleImages(["chelsea", "coffee", "rocket", "clock"])
    npz_rows, _ = _run(tmp_path / "npz", ("contrast", 2), source)
    zarr_rows, summary = _run(tmp_path / "zarr", ("contrast", 2), source, maps_format="zarr")
    assert list(zarr_rows["maps"]) == [f"maps/rank0.zarr#{i}" for i in range(4)]
    assert not list((tmp_path / "zarr" / "maps").glob("*.npz"))
    for ref, got in zip(npz_rows["maps"], zarr_rows["maps"], strict=True):
        a, b = read_maps(tmp_path / "npz", ref), read_maps(tmp_path / "zarr", got)
        assert sorted(a) == sorted(b)
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert len(RunWriter(tmp_path / "zarr").done_rows()) == 4
    assert json.loads((tmp_path / "zarr" / "summary.json").read_text())["n_images"] == 4


STUDY_SEVEN = "brightness,contrast,saturate,jpeg_compression,defocus_blur,motion_blur,zoom_blur"


@pytest.mark.slow
def test_done_when_sweep_in_small(tmp_path):
    """Issue 13's done-when, reduced (2 images, severities 1 and 5, 64 px): every cell's saved inputs agree
    between corruption_backend=numpy and torch at PSNR >= 40 dB, and every torch cell says torch ran it."""
    from tests.helpers.cli import run_cli

    result = run_cli("evaluate.py", "-m", f"corruption={STUDY_SEVEN}", "severity=1,5",
                     "corruption_backend=numpy,torch", "pretrained=false", "logger=none", "save_maps=false",
                     "figures=0", "dataset.save_images=true", "dataset.source.names=[chelsea,coffee]",
                     "dataset.resize=64", "dataset.crop=64", "dataset.num_workers=0", "trainer=cpu",
                     f"hydra.sweep.dir={tmp_path}", timeout=3000)
    assert result.returncode == 0, result.stderr[-3000:]
    cells: dict[tuple[str, int, str], dict[str, np.ndarray]] = {}
    for summary_path in tmp_path.rglob("summary.json"):
        summary = json.loads(summary_path.read_text())
        backend = summary["corruption_backend"]
        if backend["requested"] == "torch":
            assert backend["used"] == "torch", summary_path
        cells[(summary["corruption"], summary["severity"], backend["requested"])] = _images(summary_path.parent)
    assert len(cells) == 28
    for (name, severity, backend), images in cells.items():
        if backend == "torch":
            ref = cells[(name, severity, "numpy")]
            assert sorted(images) == sorted(ref) and len(ref) == 2
            for k in ref:
                assert psnr(ref[k], images[k]) >= 40, (name, severity, k)
