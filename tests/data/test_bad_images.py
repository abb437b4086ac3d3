"""Odd and broken image files in a dataset folder: converted (and checked against a reference) or skipped."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from iqa_saliency.data import images as data
from iqa_saliency.data.pairs import CorruptedPairs
from iqa_saliency.data.protocol import Cell, Inputs
from iqa_saliency.data.sources import ImageFolder

W, H = 64, 48


def picture(w: int = W, h: int = H, seed: int = 0) -> np.ndarray:
    """An asymmetric RGB test picture (so rotations and channel swaps are visible)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    array = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), (xx + 2 * yy) % 256], axis=-1)
    return np.clip(array + rng.integers(0, 8, (h, w, 3)), 0, 255).astype(np.uint8)


def load_one(folder: Path, name: str, resize: int | None = None, crop: int | None = None,
             corruption: str = "contrast", severity: int = 1) -> dict:
    """The dataset item of file `name` in `folder` (a flat folder: labels do not matter)."""
    ds = CorruptedPairs(ImageFolder(folder), Cell(corruption, severity, 0), Inputs(resize=resize, crop=crop))
    index = [r.image_id for r in ds.source.records].index(name)
    return ds[index]


def clean_hwc(item: dict) -> np.ndarray:
    assert "error" not in item, item.get("error")
    return item["clean"].permute(1, 2, 0).numpy()


def test_grayscale_is_replicated_to_three_channels(tmp_path):
    gray = picture()[..., 0]
    Image.fromarray(gray, "L").save(tmp_path / "g.png")
    np.testing.assert_array_equal(clean_hwc(load_one(tmp_path, "g.png")), np.repeat(gray[..., None], 3, axis=2))


@pytest.mark.parametrize("mode", ["LA", "RGBA"])
def test_alpha_is_composited_on_white(tmp_path, mode):
    rgb = picture()
    alpha = np.tile(np.linspace(0, 255, W).astype(np.uint8), (H, 1))
    if mode == "LA":
        rgb = np.repeat(rgb[..., :1], 3, axis=2)
        Image.fromarray(np.dstack([rgb[..., 0], alpha]), "LA").save(tmp_path / "a.png")
    else:
        Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(tmp_path / "a.png")
    a = alpha[..., None] / 255.0
    expected = rgb * a + 255 * (1 - a)  # "over" a white background
    got = clean_hwc(load_one(tmp_path, "a.png")).astype(float)
    assert np.abs(got - expected).max() <= 1.0


def test_palette_png_is_looked_up(tmp_path):
    rgb = picture()
    pal = Image.fromarray(rgb).quantize(colors=16)
    pal.save(tmp_path / "p.png")
    palette = np.array(pal.getpalette()[: 16 * 3], dtype=np.uint8).reshape(-1, 3)
    expected = palette[np.asarray(Image.open(tmp_path / "p.png"))]
    np.testing.assert_array_equal(clean_hwc(load_one(tmp_path, "p.png")), expected)


def test_16_bit_png_scales_by_the_16_bit_range(tmp_path):
    # a dark 16-bit image (all values < 256) must not be mistaken for an 8-bit one
    values = np.tile(np.arange(W, dtype=np.uint16) * 4, (H, 1))
    Image.fromarray(values).save(tmp_path / "d16.png")
    bright = np.tile(np.linspace(0, 65535, W).astype(np.uint16), (H, 1))
    Image.fromarray(bright).save(tmp_path / "b16.png")
    assert Image.open(tmp_path / "b16.png").mode.startswith("I")
    for name, v in (("d16.png", values), ("b16.png", bright)):
        expected = np.round(v / 65535 * 255).astype(np.uint8)
        np.testing.assert_array_equal(clean_hwc(load_one(tmp_path, name)), np.repeat(expected[..., None], 3, 2))


def test_cmyk_jpeg_is_converted(tmp_path):
    rgb = picture()
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "c.jpg", quality=95)
    assert Image.open(tmp_path / "c.jpg").mode == "CMYK"
    got = clean_hwc(load_one(tmp_path, "c.jpg")).astype(float)
    assert np.abs(got - rgb).mean() < 6  # JPEG is lossy; an inverted or swapped conversion is off by ~100


def test_exif_orientation_is_honoured(tmp_path):
    rgb = picture()
    exif = Image.Exif()
    exif[0x0112] = 6  # stored image must be turned 90 degrees clockwise for display
    Image.fromarray(rgb).save(tmp_path / "r.jpg", quality=95, exif=exif)
    got = clean_hwc(load_one(tmp_path, "r.jpg")).astype(float)
    expected = np.rot90(rgb, k=-1)
    assert got.shape == expected.shape == (W, H, 3)
    assert np.abs(got - expected).mean() < 6


def test_image_smaller_than_crop_is_upscaled_not_padded(tmp_path):
    rgb = picture(40, 30)
    Image.fromarray(rgb).save(tmp_path / "s.png")
    got = clean_hwc(load_one(tmp_path, "s.png", crop=64))
    assert got.shape == (64, 64, 3)
    # the reference: PIL's own bilinear resize of the shorter side to 64, centre crop
    ref = np.asarray(Image.fromarray(rgb).resize((85, 64), Image.BILINEAR))[:, 10:74]
    assert np.abs(got.astype(float) - ref).mean() < 3
    assert not (got[:, :2] == 0).all() and not (got[:2] == 0).all()  # no black padding band


@pytest.mark.parametrize("severity", [0, 3])
def test_image_below_32_px_is_skipped_with_reason(tmp_path, severity):
    Image.fromarray(picture(20, 20)).save(tmp_path / "tiny.png")
    item = load_one(tmp_path, "tiny.png", severity=severity)
    assert "20x20" in item["error"] and "32 px" in item["error"] and "dataset.resize" in item["error"]


def test_truncated_jpeg_is_skipped_not_half_grey(tmp_path):
    Image.fromarray(picture(256, 256)).save(tmp_path / "full.jpg", quality=90)
    blob = (tmp_path / "full.jpg").read_bytes()
    for cut in (2, 100, len(blob) // 2):  # missing end marker, missing last scan lines, half the file
        (tmp_path / "t.jpg").write_bytes(blob[:-cut])
        item = load_one(tmp_path, "t.jpg")
        assert "truncated" in item["error"], (cut, item.get("error"))


def test_truncated_jpeg_is_refused_even_if_pil_is_told_to_accept_it(tmp_path, monkeypatch):
    Image.fromarray(picture(256, 256)).save(tmp_path / "full.jpg", quality=90)
    (tmp_path / "t.jpg").write_bytes((tmp_path / "full.jpg").read_bytes()[:-500])
    monkeypatch.setattr("PIL.ImageFile.LOAD_TRUNCATED_IMAGES", True)
    assert "LOAD_TRUNCATED_IMAGES" in load_one(tmp_path, "t.jpg")["error"]


def test_zero_byte_and_text_files_are_skipped_with_reason(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "notes.jpg").write_text("this is not a picture\n")
    assert "empty file" in load_one(tmp_path, "empty.jpg")["error"]
    assert "cannot identify image file" in load_one(tmp_path, "notes.jpg")["error"]


def test_non_jpeg_over_the_pixel_limit_is_skipped(tmp_path, monkeypatch):
    Image.fromarray(picture()).save(tmp_path / "big.png")
    monkeypatch.setattr(data, "LARGE_PIXELS", 100)
    monkeypatch.setattr(data, "MAX_PIXELS", 1000)
    assert "pixel limit" in load_one(tmp_path, "big.png")["error"]


@pytest.mark.slow
def test_huge_jpeg_is_decoded_reduced_with_bounded_memory(tmp_path):
    path = tmp_path / "huge.jpg"
    w, h = 12_000, 9_000
    band = Image.linear_gradient("L").resize((w, h), Image.BILINEAR)  # 108 MB, above PIL's bomb threshold
    band.save(path, quality=85)
    del band
    # in a fresh interpreter: the peak memory of loading it (a full RGB decode alone would be 324 MB)
    script = textwrap.dedent(f"""
        import resource, warnings
        from PIL import Image
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        from iqa_saliency.data.images import open_image, prepare_image
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        img = prepare_image(open_image({str(path)!r}, 256), 256, 224)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(img.size, (after - before) // 1024)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    size, grown_mb = out.stdout.strip().rsplit(" ", 1)
    assert size == "(224, 224)"
    assert int(grown_mb) < 100, f"loading grew memory by {grown_mb} MB"
    # and the result matches a full decode + the same resize (the draft is a proper downscale)
    Image.MAX_IMAGE_PIXELS, limit = None, Image.MAX_IMAGE_PIXELS
    try:
        full = Image.open(path).convert("RGB")
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    ref = data.prepare_image(full, 256, 224)
    got = data.prepare_image(data.open_image(path, 256), 256, 224)
    assert np.abs(np.asarray(got, float) - np.asarray(ref, float)).mean() < 2


def _bad_folder(root: Path) -> dict[str, str]:
    """Every kind of odd file in one flat folder; returns the unusable ones with a word of their reason."""
    Image.fromarray(picture(96, 80, seed=1)).save(root / "ok.png")
    Image.fromarray(picture(96, 80, seed=2)[..., 0], "L").save(root / "gray.png")
    Image.fromarray(np.dstack([picture(96, 80, seed=3), np.full((80, 96), 128, np.uint8)]), "RGBA").save(
        root / "rgba.png")
    Image.fromarray(picture(96, 80, seed=4)).convert("CMYK").save(root / "cmyk.jpg")
    Image.fromarray(picture(40, 36, seed=5)).save(root / "small.png")  # smaller than the 64 px crop
    Image.fromarray(picture(256, 256, seed=6)).save(root / "full.jpg")
    (root / "cut.jpg").write_bytes((root / "full.jpg").read_bytes()[:-300])
    (root / "empty.jpg").write_bytes(b"")
    (root / "text.jpg").write_text("hello\n")
    return {"cut.jpg": "truncated", "empty.jpg": "empty file", "text.jpg": "cannot identify"}


@pytest.mark.slow
def test_folder_of_odd_files_evaluates_the_usable_and_lists_the_rest(tmp_path):
    import csv
    import json

    from helpers.cli import run_cli

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    bad = _bad_folder(data_dir)
    run = tmp_path / "run"
    proc = run_cli("evaluate.py", "dataset=folder", f"dataset.root={data_dir}", "dataset.resize=null",
                   "dataset.crop=64", "corruption=gaussian_noise", "severity=2", "pretrained=false", "logger=none",
                   "trainer.enable_progress_bar=false", "figures=0", f"hydra.run.dir={run}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(run / "per_image.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["image"] for r in rows) == ["cmyk.jpg", "full.jpg", "gray.png", "ok.png", "rgba.png", "small.png"]
    with open(run / "skipped.csv", newline="") as fh:
        skipped = {r["image"]: r["reason"] for r in csv.DictReader(fh)}
    assert skipped.keys() == bad.keys()
    for name, word in bad.items():
        assert word in skipped[name]
        assert f"Skipped {name}: " in proc.stderr + proc.stdout  # and in the log
    summary = json.loads((run / "summary.json").read_text())
    assert summary["n_images"] == 6 and summary["n_skipped"] == 3


@pytest.mark.slow
def test_folder_without_a_usable_image_stops_with_a_clear_error(tmp_path):
    import json

    from helpers.cli import run_cli

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "empty.jpg").write_bytes(b"")
    (data_dir / "text.png").write_text("hello\n")
    run = tmp_path / "run"
    proc = run_cli("evaluate.py", "dataset=folder", f"dataset.root={data_dir}", "pretrained=false", "logger=none",
                   "trainer.enable_progress_bar=false", f"hydra.run.dir={run}")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: No image of the 2 in the dataset could be used")
    assert not (run / "summary.json").exists()
    assert json.loads((run / "INCOMPLETE").read_text())["status"] == "failed"
    assert (run / "skipped.csv").exists()
