"""A batched torch backend for the ImageNet-C corruptions, faithful to imagecorruptions-imaug 1.1.5.

    corrupt_batch(images, name, severity, seeds)   # uint8 (B,3,H,W) or (B,H,W,3), any device -> same
    corrupt_one(image, name, severity, seed)       # HxWx3 uint8 numpy -> numpy, for comparisons

Same seed, same image as `apply_corruption` (which seeds numpy's global generator with the image's seed and
calls `imagecorruptions.corrupt`): every random draw of the reference is made on the host with numpy, from a
generator seeded with the image's seed, by the same calls in the same order (np.random.RandomState(seed) is
the generator np.random.seed(seed) resets); the pixel work runs in torch. Results are converted to uint8 as
`corrupt` does: np.uint8 of a float array clipped to [0, 255], i.e. truncation, not rounding.

Corruptions in TORCH_CORRUPTIONS (15 of the 19) run in torch; the other four fall back to the numpy reference
per image, on the host: shot_noise (its Poisson draws depend on the pixel values, so they cannot be made without
the image on the host), glass_blur (sequential pixel swaps from numba's generator), frost (an OpenCV INTER_CUBIC
resize of a bundled texture in 8-bit fixed point) and spatter (Canny, distance transform, histogram equalisation).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from . import CLEAN, MIN_SIDE, apply_corruption, check_corruption
from . import torch_ops as ops
from . import torch_resample as rs

Images = torch.Tensor


# ---------------------------------------------------------------- helpers


def _unit(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """np.array(x) / 255. (float64), kept in `dtype` (float32 division of 0..255 by 255 rounds the same)."""
    return x.to(dtype) / 255.0


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    """np.uint8 of a float array already clipped to [0, 255]: truncation toward zero."""
    return x.clamp_(0, 255).to(torch.uint8)


def _host(arrays: list[np.ndarray], like: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Stack per-image host draws (H, W[, 3]) into (B, C, H, W) on the images' device."""
    a = np.stack(arrays)
    if a.ndim == 3:
        a = a[:, :, :, None]
    return torch.from_numpy(a).to(device=like.device).permute(0, 3, 1, 2).to(dtype)


# ---------------------------------------------------------------- the study's seven


def _brightness(x, severity, seeds, dtype):
    c = [.1, .2, .3, .4, .5][severity - 1]
    hsv = ops.rgb_to_hsv(_unit(x, dtype))
    h, s, v = hsv.unbind(1)
    rgb = ops.hsv_to_rgb(torch.stack((h, s, (v + c).clamp(0, 1)), 1))
    return rgb.clamp(0, 1) * 255


def _contrast(x, severity, seeds, dtype):
    c = [0.4, .3, .2, .1, .05][severity - 1]
    x = _unit(x, dtype)
    means = x.mean(dim=(2, 3), keepdim=True)
    return ((x - means) * c + means).clamp(0, 1) * 255


def _saturate(x, severity, seeds, dtype):
    c = [(0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2)][severity - 1]
    hsv = ops.rgb_to_hsv(_unit(x, dtype))
    h, s, v = hsv.unbind(1)
    rgb = ops.hsv_to_rgb(torch.stack((h, (s * c[0] + c[1]).clamp(0, 1), v), 1))
    return rgb.clamp(0, 1) * 255


# CUDA batches: encode and decode with nvJPEG (True) or with libjpeg on the host (False; PIL's bytes exactly).
JPEG_ON_GPU = True

_POOLS: dict[tuple[int, int], ThreadPoolExecutor] = {}


def _pool() -> ThreadPoolExecutor:
    """Threads for per-image host work (libjpeg releases the GIL), as many as torch's intra-op threads.

    Keyed by process too: a forked child (a DataLoader worker) inherits the parent's pool without its threads."""
    key = (os.getpid(), torch.get_num_threads())
    if key not in _POOLS:
        _POOLS[key] = ThreadPoolExecutor(max_workers=key[1], thread_name_prefix="corrupt")
    return _POOLS[key]


def _jpeg_compression(x, severity, seeds, dtype):
    """PIL's save(quality=c) + open, restated with torchvision.io (libjpeg on CPU, nvJPEG on CUDA).

    Both use libjpeg's defaults otherwise (4:2:0 chroma subsampling, islow DCT, fancy upsampling): on CPU the
    result equals PIL's bit for bit in the tests here.
    """
    c = [25, 18, 15, 10, 7][severity - 1]
    if x.is_cuda and JPEG_ON_GPU:
        from torchvision.io import decode_jpeg, encode_jpeg

        try:
            # decode_jpeg reads the bytes from the host
            encoded = [d.cpu() for d in encode_jpeg(list(x.contiguous().unbind(0)), quality=c)]
            return torch.stack(decode_jpeg(encoded, device=x.device))
        except (RuntimeError, NotImplementedError):  # no nvJPEG in this build: libjpeg on the host
            pass
    return _jpeg_on_host(x, c).to(x.device)


def _jpeg_on_host(x: torch.Tensor, quality: int) -> torch.Tensor:
    """libjpeg round trips of a (B,3,H,W) batch on the host, one span of images per pool thread.

    libjpeg works on interleaved (H,W,3) pixels: OpenCV's merge/split convert each image (about 8 us against
    150 us for a torch or numpy transposing copy), and an input already channels-last is used as it is. The pool
    threads run no parallel torch op: a thread that opens an OpenMP region gets a team of its own, and with more
    OpenMP threads than cores libgomp stops spinning, which slowed every later parallel op of the process about
    3x here (motion_blur at 2 threads: 1086 -> 363 img/s after one JPEG batch).
    """
    import cv2
    from torchvision.io import decode_jpeg, encode_jpeg

    x = x.cpu()
    interleaved = x.permute(0, 2, 3, 1).is_contiguous()
    out = torch.empty_like(x) if interleaved else torch.empty(x.shape, dtype=torch.uint8)
    src = (x.permute(0, 2, 3, 1) if interleaved else x.contiguous()).numpy()
    dst = (out.permute(0, 2, 3, 1) if interleaved else out).numpy()

    def span(lo: int, hi: int) -> None:
        for i in range(lo, hi):
            hwc = src[i] if interleaved else cv2.merge(list(src[i]))
            done = decode_jpeg(encode_jpeg(torch.from_numpy(hwc).permute(2, 0, 1), quality=quality))
            done = np.ascontiguousarray(done.permute(1, 2, 0).numpy())  # decode_jpeg's (3,H,W) views (H,W,3)
            if interleaved:
                dst[i] = done
            else:
                cv2.split(done, list(dst[i]))  # into the output's three planes

    # One contiguous span per thread: a task per image costs more in scheduling than it gains (measured).
    b = x.shape[0]
    n = min(torch.get_num_threads(), b)
    if n > 1:
        list(_pool().map(lambda k: span(b * k // n, b * (k + 1) // n), range(n)))
    else:
        span(0, b)
    return out


def _defocus_blur(x, severity, seeds, dtype):
    c = [(3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)][severity - 1]
    kernel = ops.disk_kernel(c[0], c[1])
    if dtype == torch.float64:  # as the reference: (x / 255.) filtered, clipped to [0, 1], times 255
        return ops.correlate2d_fft(_unit(x, dtype), kernel, "mirror").clamp(0, 1) * 255
    # float32: filter the 0-255 values (the same linear map), clip to [0, 255] and truncate in one pass
    return ops.correlate2d_fft(x, kernel, "mirror", clip=(0.0, 255.0), out_dtype=torch.uint8)


def _motion_blur(x, severity, seeds, dtype):
    c = [(10, 3), (15, 5), (15, 8), (15, 12), (20, 15)][severity - 1]
    angles = [np.random.RandomState(s).uniform(-45, 45) for s in seeds]
    return ops.motion_blur(x.to(dtype), c[0], c[1], angles).clamp(0, 255)


ZOOM_FACTORS = [np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01), np.arange(1, 1.21, 0.02),
                np.arange(1, 1.26, 0.02), np.arange(1, 1.31, 0.03)]


def _zoom_blur(x, severity, seeds, dtype):
    factors = ZOOM_FACTORS[severity - 1]
    x = _unit(x, dtype)
    out = rs.clipped_zoom_sum(x, factors, exact=dtype == torch.float64)
    return ((x + out) / (len(factors) + 1)).clamp(0, 1) * 255


# ---------------------------------------------------------------- further ports


def _gaussian_noise(x, severity, seeds, dtype):
    c = [.08, .12, 0.18, 0.26, 0.38][severity - 1]
    shape = (x.shape[2], x.shape[3], 3)
    noise = _host([np.random.RandomState(s).normal(size=shape, scale=c) for s in seeds], x, dtype)
    return (_unit(x, dtype) + noise).clamp(0, 1) * 255


def _speckle_noise(x, severity, seeds, dtype):
    c = [.15, .2, 0.35, 0.45, 0.6][severity - 1]
    shape = (x.shape[2], x.shape[3], 3)
    noise = _host([np.random.RandomState(s).normal(size=shape, scale=c) for s in seeds], x, dtype)
    x = _unit(x, dtype)
    return (x + x * noise).clamp(0, 1) * 255


def _impulse_masks(seed: int, shape: tuple[int, ...], amount: float) -> np.ndarray:
    """skimage.util.random_noise(mode='s&p', rng=seed): flipped, then salted draws; 1 salt, -1 pepper, 0 kept."""
    rng = np.random.default_rng(seed)
    flipped = rng.random(shape) <= amount
    salted = rng.random(shape) <= 0.5
    return np.where(flipped, np.where(salted, 1, -1), 0).astype(np.int8)


def _impulse_noise(x, severity, seeds, dtype):
    c = [.03, .06, .09, 0.17, 0.27][severity - 1]
    shape = (x.shape[2], x.shape[3], 3)
    masks = _host([_impulse_masks(s, shape, c) for s in seeds], x, torch.int8)
    x = _unit(x, dtype)
    x = torch.where(masks > 0, torch.ones_like(x), torch.where(masks < 0, torch.zeros_like(x), x))
    return x.clamp(0, 1) * 255


def _gaussian_blur(x, severity, seeds, dtype):
    c = [1, 2, 3, 4, 6][severity - 1]
    if dtype == torch.float64:
        return ops.gaussian_filter(_unit(x, dtype), c, mode="nearest").clamp(0, 1) * 255
    k = ops.scipy_gaussian_kernel(c)  # separable; through the FFT as one 2-D kernel (torch's CPU conv is slow here)
    return ops.correlate2d_fft(x, np.outer(k, k), "nearest", clip=(0.0, 255.0), out_dtype=torch.uint8)


def plasma_fractal(rng: np.random.RandomState, mapsize: int = 256, wibbledecay: float = 3) -> np.ndarray:
    """imagecorruptions.plasma_fractal drawing from `rng` (the same calls, in the same order)."""
    assert mapsize & (mapsize - 1) == 0
    maparray = np.empty((mapsize, mapsize), dtype=np.float32)
    maparray[0, 0] = 0
    stepsize = mapsize
    wibble = 100

    def wibbledmean(array):
        return array / 4 + wibble * rng.uniform(-wibble, wibble, array.shape)

    while stepsize >= 2:
        cornerref = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        squareaccum = cornerref + np.roll(cornerref, shift=-1, axis=0)
        squareaccum += np.roll(squareaccum, shift=-1, axis=1)
        maparray[stepsize // 2:mapsize:stepsize, stepsize // 2:mapsize:stepsize] = wibbledmean(squareaccum)
        drgrid = maparray[stepsize // 2:mapsize:stepsize, stepsize // 2:mapsize:stepsize]
        ulgrid = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        ltsum = drgrid + np.roll(drgrid, 1, axis=0) + (ulgrid + np.roll(ulgrid, -1, axis=1))
        maparray[0:mapsize:stepsize, stepsize // 2:mapsize:stepsize] = wibbledmean(ltsum)
        ttsum = drgrid + np.roll(drgrid, 1, axis=1) + (ulgrid + np.roll(ulgrid, -1, axis=0))
        maparray[stepsize // 2:mapsize:stepsize, 0:mapsize:stepsize] = wibbledmean(ttsum)
        stepsize //= 2
        wibble /= wibbledecay
    maparray -= maparray.min()
    return maparray / maparray.max()


def _fog(x, severity, seeds, dtype):
    c = [(1.5, 2), (2., 2), (2.5, 1.7), (2.5, 1.5), (3., 1.4)][severity - 1]
    h, w = x.shape[2], x.shape[3]
    size = 1 << (max(h, w) - 1).bit_length()
    # c * plasma is float32 in the reference (a Python float times a float32 array), then added in float64
    layers = [c[0] * plasma_fractal(np.random.RandomState(s), size, c[1])[:h, :w] for s in seeds]
    x = _unit(x, dtype)
    max_val = x.amax(dim=(1, 2, 3), keepdim=True)
    x = x + _host(layers, x, dtype)
    return (x * max_val / (max_val + c[0])).clamp(0, 1) * 255


def _elastic_fields(seed: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.RandomState(seed)
    max_d = h * 0.005
    return rng.uniform(-max_d, max_d, size=(h, w)), rng.uniform(-max_d, max_d, size=(h, w))


def _elastic_transform(x, severity, seeds, dtype):
    b, _, h, w = x.shape
    alpha = [250 * 0.05, 250 * 0.065, 250 * 0.085, 250 * 0.1, 250 * 0.12][severity - 1]
    sigma = (h * 0.01, w * 0.01)
    fields = [_elastic_fields(s, h, w) for s in seeds]
    ux = _host([f[0] for f in fields], x, torch.float64)
    uy = _host([f[1] for f in fields], x, torch.float64)
    dx = (ops.gaussian_filter(ux, sigma, mode="reflect", truncate=3) * alpha).to(torch.float32)[:, 0]
    dy = (ops.gaussian_filter(uy, sigma, mode="reflect", truncate=3) * alpha).to(torch.float32)[:, 0]
    image = (x.to(torch.float32) / 255.0).to(dtype)
    yy = torch.arange(h, device=x.device, dtype=torch.float64)[:, None] + dy.to(torch.float64)
    xx = torch.arange(w, device=x.device, dtype=torch.float64)[None, :] + dx.to(torch.float64)
    return rs.map_coordinates_linear(image, yy, xx).clamp(0, 1) * 255


def _pixelate(x, severity, seeds, dtype):
    c = [0.6, 0.5, 0.4, 0.3, 0.25][severity - 1]
    h, w = x.shape[2], x.shape[3]
    small = rs.pil_resize_box(x, int(h * c), int(w * c))
    return rs.pil_resize_nearest(small, h, w)


def _snow(x, severity, seeds, dtype):
    """snow: the flake field (normal draw, then the streak angle, per image) is zoomed, thresholded, motion-blurred
    on the uncropped zoom (as the reference does), rounded to 8 bits, and added twice (once turned 180 degrees)."""
    c = [(0.1, 0.3, 3, 0.5, 10, 4, 0.8),
         (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
         (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
         (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
         (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55)][severity - 1]
    h, w = x.shape[2], x.shape[3]
    fields, angles = [], []
    for s in seeds:
        rng = np.random.RandomState(s)
        fields.append(rng.normal(size=(h, w), loc=c[0], scale=c[1]))
        angles.append(rng.uniform(-135, -45))
    layer = rs.clipped_zoom_exact(_host(fields, x, torch.float64), c[2], full=True)
    layer = torch.where(layer < c[3], torch.zeros_like(layer), layer).clamp(0, 1)
    layer = ops.motion_blur(layer, c[4], c[5], angles)
    layer = (torch.round(layer * 255).clamp(0, 255).to(torch.uint8).to(torch.float64) / 255.0)[:, :, :h, :w]
    img = x.to(torch.float32) / 255.0
    r, g, b = img.unbind(1)
    gray = (r * 0.299 + g * 0.587 + b * 0.114).unsqueeze(1)  # cv2 RGB2GRAY on float32
    img = c[6] * img + (1 - c[6]) * torch.maximum(img, gray * 1.5 + 0.5)
    return (img.to(torch.float64) + layer + layer.flip(-2, -1)).clamp(0, 1) * 255


_TORCH: dict[str, Callable] = {
    "brightness": _brightness,
    "contrast": _contrast,
    "saturate": _saturate,
    "jpeg_compression": _jpeg_compression,
    "defocus_blur": _defocus_blur,
    "motion_blur": _motion_blur,
    "zoom_blur": _zoom_blur,
    "gaussian_noise": _gaussian_noise,
    "speckle_noise": _speckle_noise,
    "impulse_noise": _impulse_noise,
    "gaussian_blur": _gaussian_blur,
    "fog": _fog,
    "elastic_transform": _elastic_transform,
    "pixelate": _pixelate,
    "snow": _snow,
}

# Compute precision per corruption: float64 where the reference works in float64 and the work is elementwise
# (truncation to uint8 makes last-bit differences visible); float32 for the filters and resampling.
_DTYPE: dict[str, torch.dtype] = {
    "brightness": torch.float64, "contrast": torch.float64, "saturate": torch.float64,
    "gaussian_noise": torch.float64, "speckle_noise": torch.float64, "impulse_noise": torch.float64,
    "fog": torch.float64,
}

CPU_CHUNK_PIXELS = 4 * 224 * 224  # images per CPU step: about four 224 px images
# Per-image work with no float temporaries: the whole batch in one call, so the thread pool gets all of it.
_UNCHUNKED = frozenset({"jpeg_compression"})

STUDY_CORRUPTIONS = ("brightness", "contrast", "saturate", "jpeg_compression", "defocus_blur", "motion_blur",
                     "zoom_blur")
TORCH_CORRUPTIONS: frozenset[str] = frozenset(_TORCH)


def supports_torch(name: str) -> bool:
    """True when `name` runs in torch here (the others fall back to the numpy reference)."""
    return name in TORCH_CORRUPTIONS


# ---------------------------------------------------------------- API


def corrupt_batch(images: Images, name: str, severity: int, seeds: Sequence[int],
                  dtype: torch.dtype | None = None) -> Images:
    """Corrupt a batch of same-size uint8 images, (B,3,H,W) or (B,H,W,3), on any device; same shape and device.

    seeds: one per image (see iqa_saliency.corruption.image_seed). Severity 0 or name 'none' returns the input.
    dtype: override the compute precision (default: per corruption, see _DTYPE).
    """
    check_corruption(name, severity)
    if name == CLEAN or severity == 0:
        return images
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"expected a uint8 batch (B,3,H,W) or (B,H,W,3), got {images.dtype} {tuple(images.shape)}")
    if images.shape[1] == 3:
        channels_last = False
    elif images.shape[-1] == 3:
        channels_last = True
    else:
        raise ValueError(f"expected 3 channels, got shape {tuple(images.shape)}")
    seeds = [int(s) for s in seeds]
    if len(seeds) != images.shape[0]:
        raise ValueError(f"{len(seeds)} seeds for {images.shape[0]} images")
    x = images.permute(0, 3, 1, 2) if channels_last else images
    h, w = x.shape[2], x.shape[3]
    if min(h, w) < MIN_SIDE:
        raise ValueError(f"images are {w}x{h}, below the {MIN_SIDE} px minimum")
    if images.shape[0] == 0:
        return images
    if name in _TORCH:
        fn, dt = _TORCH[name], dtype or _DTYPE.get(name, torch.float32)
        # On the CPU a few images at a time keep the float temporaries in cache (a 32-image float64 batch is
        # ~40 MB per temporary, each one freshly page-faulted); a GPU takes the whole batch at once.
        whole = x.device.type != "cpu" or name in _UNCHUNKED
        step = x.shape[0] if whole else max(1, CPU_CHUNK_PIXELS // (h * w))
        parts = []
        for i in range(0, x.shape[0], step):
            part = fn(x[i: i + step], severity, seeds[i: i + step], dt)
            parts.append(part if part.dtype == torch.uint8 else _to_uint8(part))
        out = parts[0] if len(parts) == 1 else torch.cat(parts)
    else:
        host = x.permute(0, 2, 3, 1).cpu().numpy()
        done = [apply_corruption(np.ascontiguousarray(im), name, severity, seed)
                for im, seed in zip(host, seeds, strict=True)]
        out = torch.from_numpy(np.stack(done)).to(x.device).permute(0, 3, 1, 2)
    out = out.permute(0, 2, 3, 1) if channels_last else out
    return out.contiguous()


def corrupt_one(image: np.ndarray, name: str, severity: int, seed: int, device: str | torch.device = "cpu",
                dtype: torch.dtype | None = None) -> np.ndarray:
    """The torch backend on one HxWx3 uint8 image (numpy in, numpy out), for comparisons with apply_corruption."""
    batch = torch.tensor(np.ascontiguousarray(image))[None].to(device)  # a copy: read-only arrays are fine
    return corrupt_batch(batch, name, severity, [seed], dtype=dtype)[0].cpu().numpy()
