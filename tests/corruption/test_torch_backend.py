"""The torch corruption backend against imagecorruptions itself (through apply_corruption), seeded per image.

Contract: PSNR >= 40 dB per image at every severity 1-5 for every corruption the backend runs in torch.
The default run uses small images (96x128 and 64x80); the 224x224 and 200x300 sweeps are marked slow.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from skimage import data

from iqa_saliency.corruption import apply_corruption, corruption_names
from iqa_saliency.corruption import torch_ops as ops
from iqa_saliency.corruption import torch_resample as rs
from iqa_saliency.corruption.torch_backend import (
    STUDY_CORRUPTIONS,
    TORCH_CORRUPTIONS,
    corrupt_batch,
    corrupt_one,
    supports_torch,
)
from iqa_saliency.errors import ConfigError

MIN_PSNR = 40.0
PORTED = sorted(TORCH_CORRUPTIONS)
FALLBACK = sorted(set(corruption_names()) - TORCH_CORRUPTIONS)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


@pytest.fixture(scope="module")
def cat() -> np.ndarray:
    """A natural, non-square picture: 96x128 from skimage's chelsea."""
    return np.ascontiguousarray(data.chelsea()[60:156, 150:278])


@pytest.fixture(scope="module")
def mixed() -> np.ndarray:
    """Three different 64x80 pictures (natural, flat-and-saturated, noise) as one batch."""
    rng = np.random.default_rng(0)
    astro = data.astronaut()[::4, ::4][:64, 20:100]
    flat = np.zeros((64, 80, 3), np.uint8)
    flat[:, :40] = (255, 255, 255)
    flat[:32, 40:] = (200, 30, 30)
    flat[32:, 40:] = (0, 0, 0)
    noise = rng.integers(0, 256, size=(64, 80, 3), dtype=np.uint8)
    return np.stack([astro, flat, noise])


@pytest.mark.parametrize("name", PORTED)
def test_every_severity_matches_reference(cat, name):
    for severity in range(1, 6):
        seed = 1000 + severity
        ref = apply_corruption(cat, name, severity, seed)
        out = corrupt_one(cat, name, severity, seed)
        assert out.shape == ref.shape and out.dtype == np.uint8
        assert psnr(out, ref) >= MIN_PSNR, f"{name} s{severity}: {psnr(out, ref):.1f} dB"


@pytest.mark.parametrize("name", PORTED)
def test_batch_of_mixed_images_matches_reference_per_seed(mixed, name):
    seeds = [7, 123456, 2**32 - 1]
    batch = torch.from_numpy(mixed)  # (B, H, W, 3): channels-last in, channels-last out
    out = corrupt_batch(batch, name, 3, seeds).numpy()
    for image, got, seed in zip(mixed, out, seeds, strict=True):
        ref = apply_corruption(image, name, 3, seed)
        assert psnr(got, ref) >= MIN_PSNR, f"{name} seed {seed}: {psnr(got, ref):.1f} dB"
    chw = corrupt_batch(batch.permute(0, 3, 1, 2), name, 3, seeds)
    assert torch.equal(chw.permute(0, 2, 3, 1), torch.from_numpy(out))


def test_seeded_corruptions_depend_on_the_seed(cat):
    for name in ("motion_blur", "gaussian_noise", "fog"):
        a, b = corrupt_one(cat, name, 3, 1), corrupt_one(cat, name, 3, 2)
        assert not np.array_equal(a, b)
        assert np.array_equal(a, corrupt_one(cat, name, 3, 1))


def test_jpeg_on_cpu_is_pil_bit_for_bit(cat):
    for severity in range(1, 6):
        np.testing.assert_array_equal(corrupt_one(cat, "jpeg_compression", severity, 0),
                                      apply_corruption(cat, "jpeg_compression", severity, 0))


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("layout", ["channels_first", "channels_last"])
def test_jpeg_batch_split_across_threads_is_pil_per_image(mixed, threads, layout):
    """Each thread encodes a span of the batch: every image must still be its own PIL round trip, in order."""
    images = np.concatenate([mixed, mixed[::-1, :, ::-1]])[:5]  # 5 images: spans of unequal length
    batch = torch.from_numpy(images)
    if layout == "channels_first":
        batch = batch.permute(0, 3, 1, 2).contiguous()
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out = corrupt_batch(batch, "jpeg_compression", 4, list(range(5)))
    finally:
        torch.set_num_threads(before)
    if layout == "channels_first":
        out = out.permute(0, 2, 3, 1)
    for i, image in enumerate(images):
        expected = apply_corruption(np.ascontiguousarray(image), "jpeg_compression", 4, i)
        np.testing.assert_array_equal(out[i].numpy(), expected)


JPEG_THREADS_SCRIPT = """
import os, torch
import cv2  # imported lazily by the JPEG path; importing OpenCV starts a thread of its own, not a pool thread
from iqa_saliency.corruption.torch_backend import corrupt_batch
torch.set_num_threads(2)
# 224 px: torch copies fewer than 32768 elements in one thread, so smaller images would hide a parallel op
x = torch.randint(0, 256, (8, 3, 224, 224), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
x.float().add_(1)  # the main thread's OpenMP team exists before counting
before = len(os.listdir("/proc/self/task"))
corrupt_batch(x, "jpeg_compression", 2, list(range(8)))
print(len(os.listdir("/proc/self/task")) - before)
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads through /proc")
def test_jpeg_pool_threads_open_no_openmp_team():
    """A pool thread that runs a parallel torch op gets an OpenMP team of its own, and libgomp then stops spinning
    for the whole process (later parallel ops ~3x slower): the JPEG batch may add its 2 pool threads, no more."""
    done = subprocess.run([sys.executable, "-c", JPEG_THREADS_SCRIPT], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.split()[-1]) <= 2


FORKED_JPEG_SCRIPT = """
import os, torch
from iqa_saliency.corruption.torch_backend import corrupt_batch
torch.set_num_threads(2)
x = torch.randint(0, 256, (4, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
parent = corrupt_batch(x, "jpeg_compression", 2, [0, 1, 2, 3])  # the parent's pool threads exist now
pid = os.fork()
if pid == 0:
    torch.set_num_threads(2)
    os._exit(0 if torch.equal(corrupt_batch(x, "jpeg_compression", 2, [0, 1, 2, 3]), parent) else 3)
print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_jpeg_in_a_forked_child_does_not_wait_on_the_parents_threads():
    """A forked process inherits the parent's thread pool object but not its threads: it must make its own."""
    done = subprocess.run([sys.executable, "-c", FORKED_JPEG_SCRIPT], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == "0"


def test_study_corruptions_all_run_in_torch():
    assert set(STUDY_CORRUPTIONS) <= TORCH_CORRUPTIONS
    assert all(supports_torch(n) for n in STUDY_CORRUPTIONS)
    assert not supports_torch("glass_blur") and not supports_torch("none")


@pytest.mark.parametrize("name", ["shot_noise", "spatter"])
def test_fallback_is_the_reference(mixed, name):
    out = corrupt_batch(torch.from_numpy(mixed), name, 2, [1, 2, 3]).numpy()
    for image, got, seed in zip(mixed, out, [1, 2, 3], strict=True):
        np.testing.assert_array_equal(got, apply_corruption(image, name, 2, seed))


def test_clean_returns_input_and_bad_input_is_refused(mixed):
    batch = torch.from_numpy(mixed)
    assert corrupt_batch(batch, "none", 0, [0, 0, 0]) is batch
    assert corrupt_batch(batch, "contrast", 0, [0, 0, 0]) is batch
    with pytest.raises(ConfigError):
        corrupt_batch(batch, "contrastt", 1, [0, 0, 0])
    with pytest.raises(ValueError, match="seeds"):
        corrupt_batch(batch, "contrast", 1, [0])
    with pytest.raises(ValueError, match="uint8"):
        corrupt_batch(batch.float(), "contrast", 1, [0, 0, 0])
    with pytest.raises(ValueError, match="minimum"):
        corrupt_batch(batch[:, :16, :16], "contrast", 1, [0, 0, 0])


# ---------------------------------------------------------------- building blocks against their reference


def test_disk_kernel_equals_opencv_disk():
    from imagecorruptions.corruptions import disk

    for radius, blur in [(3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)]:
        ref = disk(radius=radius, alias_blur=blur)
        np.testing.assert_allclose(ops.disk_kernel(radius, blur), ref, rtol=0, atol=1e-8)


def test_hsv_round_trip_equals_skimage_bitwise():
    from skimage.color import hsv2rgb, rgb2hsv

    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, size=(40, 50, 3)) / 255.0
    rgb[0, :6] = [[0, 0, 0], [1, 1, 1], [0.5, 0.5, 0.5], [1, 1, 0], [0, 1, 1], [1, 0, 1]]  # ties and greys
    t = torch.from_numpy(rgb).permute(2, 0, 1)[None]
    hsv = ops.rgb_to_hsv(t)
    np.testing.assert_array_equal(hsv[0].permute(1, 2, 0).numpy(), rgb2hsv(rgb))
    np.testing.assert_array_equal(ops.hsv_to_rgb(hsv)[0].permute(1, 2, 0).numpy(), hsv2rgb(rgb2hsv(rgb)))


@pytest.mark.parametrize("shape", [(32, 45), (97, 64), (224, 224)])
def test_clipped_zoom_equals_scipy(shape):
    from imagecorruptions.corruptions import clipped_zoom

    rng = np.random.default_rng(2)
    x = rng.random((*shape, 3)).astype(np.float32)
    t = torch.from_numpy(x).permute(2, 0, 1)[None]
    for z in (1.0, 1.01, 1.07, 1.16, 1.3):
        ref = clipped_zoom(x, z)[: shape[0], : shape[1]]
        exact = rs.clipped_zoom_exact(t, z)[0].permute(1, 2, 0).numpy()
        fast = rs.clipped_zoom(t, z)[0].permute(1, 2, 0).numpy()
        np.testing.assert_allclose(exact, ref, atol=1e-6)
        np.testing.assert_allclose(fast, ref, atol=1e-4)


def test_pil_resizes_equal_pillow():
    from PIL import Image

    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, size=(37, 91, 3), dtype=np.uint8)
    t = torch.from_numpy(image).permute(2, 0, 1)[None]
    for h, w in [(22, 54), (9, 22), (37, 30), (11, 91)]:
        ref = np.asarray(Image.fromarray(image).resize((w, h), Image.BOX))
        np.testing.assert_array_equal(rs.pil_resize_box(t, h, w)[0].permute(1, 2, 0).numpy(), ref)
        small = np.array(ref)  # writable copy for torch.from_numpy
        ref_up = np.asarray(Image.fromarray(small).resize((91, 37), Image.NEAREST))
        up = rs.pil_resize_nearest(torch.from_numpy(small).permute(2, 0, 1)[None], 37, 91)
        np.testing.assert_array_equal(up[0].permute(1, 2, 0).numpy(), ref_up)


@pytest.mark.parametrize("mode", ["nearest", "reflect", "mirror"])
def test_padding_equals_numpy(mode):
    x = np.arange(5 * 7, dtype=np.float32).reshape(1, 1, 5, 7)
    np_mode = {"nearest": "edge", "reflect": "symmetric", "mirror": "reflect"}[mode]
    for pad in (1, 4):
        ref = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode=np_mode)
        np.testing.assert_array_equal(ops.pad2d(torch.from_numpy(x), pad, pad, mode).numpy(), ref)
    ref = np.pad(x[0, 0], 9, mode=np_mode)  # wider than the image: numpy repeats the fold
    np.testing.assert_array_equal(x[0, 0][np.ix_(ops.border_index(5, 9, mode), ops.border_index(7, 9, mode))], ref)


@pytest.mark.cuda
@pytest.mark.parametrize("name", PORTED)
def test_cuda_matches_reference(cat, name):
    for severity in range(1, 6):
        ref = apply_corruption(cat, name, severity, 5)
        out = corrupt_one(cat, name, severity, 5, device="cuda")
        assert psnr(out, ref) >= MIN_PSNR, f"{name} s{severity} on cuda: {psnr(out, ref):.1f} dB"


# ---------------------------------------------------------------- heavier sweeps


@pytest.mark.slow
@pytest.mark.parametrize("name", PORTED)
def test_sweep_224_and_200x300(name):
    images = [np.ascontiguousarray(data.astronaut()[100:324, 150:374]),
              np.ascontiguousarray(data.chelsea()[:200, :300])]
    for image in images:
        for severity in range(1, 6):
            for seed in (0, 99):
                ref = apply_corruption(image, name, severity, seed)
                out = corrupt_one(image, name, severity, seed)
                assert psnr(out, ref) >= MIN_PSNR, f"{name} {image.shape} s{severity}: {psnr(out, ref):.1f} dB"
