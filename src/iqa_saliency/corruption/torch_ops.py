"""Pixel operations of the torch corruption backend (colour, filters, motion blur), each restating one numpy /
scipy / OpenCV / skimage step; resampling lives in torch_resample.

Tensors are batched, channels first, (B, C, H, W), floating point, on any device. Kernels, sampling grids and
shift lists are built on the host with numpy in float64, exactly as the reference builds them; only the pixel
work runs in torch. Where a convention differs from torch's default it is named: OpenCV's BORDER_DEFAULT is
reflect-101 (torch 'reflect'), scipy's 'reflect' is half-sample symmetric (no torch mode), scipy's 'nearest' is
torch 'replicate'.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

# ---------------------------------------------------------------- colour (skimage.color.rgb2hsv / hsv2rgb)


def rgb_to_hsv(rgb: torch.Tensor) -> torch.Tensor:
    """skimage.color.rgb2hsv on (B, 3, H, W) in [0, 1]: same operations, same tie order (blue > green > red)."""
    r, g, b = rgb.unbind(1)
    v = rgb.amax(1)
    delta = v - rgb.amin(1)
    flat = delta == 0
    safe = torch.where(flat, torch.ones_like(delta), delta)
    s = torch.where(flat, torch.zeros_like(delta), delta / torch.where(v == 0, torch.ones_like(v), v))
    # skimage writes red-max first, then green-max, then blue-max: the last writer wins.
    h = torch.where(b == v, 4.0 + (r - g) / safe, torch.where(g == v, 2.0 + (b - r) / safe, (g - b) / safe))
    h = torch.remainder(h / 6.0, 1.0)
    h = torch.where(flat, torch.zeros_like(h), h)
    return torch.stack((h, s, v), 1)


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """skimage.color.hsv2rgb on (B, 3, H, W): sector = floor(6h) mod 6, then the (v, t, p) table."""
    h, s, v = hsv.unbind(1)
    h6 = h * 6
    hi = torch.floor(h6)
    f = h6 - hi
    p = v * (1 - s)
    q = v * (1 - f * s)
    t = v * (1 - (1 - f) * s)
    idx = (hi.to(torch.int64) % 6).unsqueeze(0)
    r = torch.stack((v, q, p, p, t, v)).gather(0, idx)[0]
    g = torch.stack((t, v, v, q, p, p)).gather(0, idx)[0]
    b = torch.stack((p, p, t, v, v, q)).gather(0, idx)[0]
    return torch.stack((r, g, b), 1)


# ---------------------------------------------------------------- padding and separable / 2-D filtering


def border_index(n: int, pad: int, mode: str) -> np.ndarray:
    """Source indices of a line of `n` samples padded by `pad` on both sides (any pad, even > n).

    mode: 'nearest' (scipy nearest, torch replicate), 'reflect' (scipy reflect: d c b a | a b c d | d c b a),
    'mirror' (scipy mirror, OpenCV BORDER_REFLECT_101, torch reflect: d c b | a b c d | c b a).
    """
    i = np.arange(-pad, n + pad)
    if mode == "nearest":
        return np.clip(i, 0, n - 1)
    if mode == "reflect":
        period = 2 * n
        i = np.mod(i, period)
        return np.where(i >= n, period - 1 - i, i)
    if mode == "mirror":
        if n == 1:
            return np.zeros_like(i)
        period = 2 * n - 2
        i = np.mod(i, period)
        return np.where(i >= n, period - i, i)
    raise ValueError(f"unknown border mode {mode!r}")


def pad2d(x: torch.Tensor, pad_h: int, pad_w: int, mode: str) -> torch.Tensor:
    """Pad the last two dims with a scipy/OpenCV border mode (see border_index); torch's own pads where they agree."""
    h, w = x.shape[-2:]
    if mode == "nearest" and x.is_floating_point():
        return F.pad(x, (pad_w, pad_w, pad_h, pad_h), mode="replicate") if pad_h or pad_w else x
    if mode == "mirror" and pad_h < h and pad_w < w and x.is_floating_point():
        return F.pad(x, (pad_w, pad_w, pad_h, pad_h), mode="reflect") if pad_h or pad_w else x
    if mode == "reflect" and pad_h <= h and pad_w <= w:
        if pad_h:
            x = torch.cat((x[..., :pad_h, :].flip(-2), x, x[..., h - pad_h:, :].flip(-2)), -2)
        if pad_w:
            x = torch.cat((x[..., :pad_w].flip(-1), x, x[..., w - pad_w:].flip(-1)), -1)
        return x
    if pad_h:
        x = x.index_select(-2, torch.as_tensor(border_index(h, pad_h, mode), device=x.device))
    if pad_w:
        x = x.index_select(-1, torch.as_tensor(border_index(w, pad_w, mode), device=x.device))
    return x


def correlate_separable(x: torch.Tensor, ky: np.ndarray | None, kx: np.ndarray | None, mode: str) -> torch.Tensor:
    """scipy.ndimage.correlate1d along H then W (either kernel may be None), odd kernels centred, border `mode`."""
    b, c, h, w = x.shape
    flat = x.reshape(b * c, 1, h, w)
    if ky is not None:
        r = len(ky) // 2
        weight = torch.as_tensor(np.asarray(ky).reshape(1, 1, -1, 1), dtype=x.dtype, device=x.device)
        flat = F.conv2d(pad2d(flat, r, 0, mode), weight)
    if kx is not None:
        r = len(kx) // 2
        weight = torch.as_tensor(np.asarray(kx).reshape(1, 1, 1, -1), dtype=x.dtype, device=x.device)
        flat = F.conv2d(pad2d(flat, 0, r, mode), weight)
    return flat.reshape(b, c, h, w)


def correlate2d(x: torch.Tensor, kernel: np.ndarray, mode: str = "mirror") -> torch.Tensor:
    """cv2.filter2D(x, -1, kernel) per channel (a correlation, anchor at the centre), border `mode`, direct."""
    b, c, h, w = x.shape
    kh, kw = kernel.shape
    weight = torch.tensor(kernel[None, None], dtype=x.dtype, device=x.device)
    flat = pad2d(x.reshape(b * c, 1, h, w), kh // 2, kw // 2, mode)
    return F.conv2d(flat, weight).reshape(b, c, h, w)


def _fft_size(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n (sizes pocketfft/MKL transform fastest)."""
    m = n
    while True:
        r = m
        for p in (2, 3, 5):
            while r % p == 0:
                r //= p
        if r == 1:
            return m
        m += 1


@lru_cache(maxsize=32)
def _kernel_spectrum(kernel_bytes: bytes, shape: tuple[int, int], size: tuple[int, int], dtype: torch.dtype,
                     device: torch.device) -> torch.Tensor:
    kernel = np.frombuffer(kernel_bytes, dtype=np.float64).reshape(shape)
    kh, kw = shape
    placed = np.zeros(size)
    # correlation = convolution with the flipped kernel; centre at (0, 0) so output i reads padded i .. i + 2r
    placed[:kh, :kw] = kernel[::-1, ::-1]
    placed = np.roll(placed, (-(kh - 1), -(kw - 1)), axis=(0, 1))
    return torch.fft.fft2(torch.tensor(placed, dtype=dtype, device=device))


def correlate2d_fft(x: torch.Tensor, kernel: np.ndarray, mode: str = "mirror", scale: float = 1.0,
                    clip: tuple[float, float] | None = None, out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """correlate2d(x, kernel * scale) through the FFT, optionally clipped and cast (uint8: truncation).

    Each plane is padded by the kernel radius with `mode` and zero-padded to a fast transform size; two real
    planes travel as one complex plane (real and imaginary parts), halving the transforms; the wrap-around of the
    circular convolution only reaches the padding, never the kept H x W. float64 input transforms in complex128,
    anything else in complex64.
    """
    b, c, h, w = x.shape
    kh, kw = kernel.shape
    ph, pw = kh // 2, kw // 2
    real = torch.float64 if x.dtype == torch.float64 else torch.float32
    cplx = torch.complex128 if real == torch.float64 else torch.complex64
    size = (_fft_size(h + 2 * ph), _fft_size(w + 2 * pw))
    n = b * c
    half = (n + 1) // 2
    planes = x.reshape(n, h, w)
    buf = torch.zeros(half, size[0], size[1], 2, dtype=real, device=x.device)
    buf[:, ph: ph + h, pw: pw + w, 0].copy_(planes[:half])
    buf[: n - half, ph: ph + h, pw: pw + w, 1].copy_(planes[half:])
    _pad_in_place(buf, ph, pw, h, w, mode)
    spectrum = _kernel_spectrum(np.ascontiguousarray(kernel, dtype=np.float64).tobytes(), (kh, kw), size, cplx,
                                x.device)
    if scale != 1.0:
        spectrum = spectrum * scale
    freq = torch.fft.fft2(torch.view_as_complex(buf))
    freq.mul_(spectrum)
    res = torch.view_as_real(torch.fft.ifft2(freq))[:, :h, :w]
    if clip is not None:
        res = res.clamp_(*clip)
    out = torch.empty((n, h, w), dtype=out_dtype or x.dtype, device=x.device)
    out[:half].copy_(res[..., 0])
    out[half:].copy_(res[: n - half, ..., 1])
    return out.reshape(b, c, h, w)


def _pad_in_place(buf: torch.Tensor, ph: int, pw: int, h: int, w: int, mode: str) -> None:
    """Fill the border of buf[:, :h+2ph, :w+2pw] (image at [ph:ph+h, pw:pw+w]) from the image, rows then columns."""
    rows = torch.as_tensor(border_index(h, ph, mode) + ph, device=buf.device)
    cols = torch.as_tensor(border_index(w, pw, mode) + pw, device=buf.device)
    if ph:
        buf[:, :ph, pw: pw + w] = buf[:, rows[:ph], pw: pw + w]
        buf[:, ph + h: h + 2 * ph, pw: pw + w] = buf[:, rows[ph + h:], pw: pw + w]
    if pw:
        buf[:, : h + 2 * ph, :pw] = buf[:, : h + 2 * ph, cols[:pw]]
        buf[:, : h + 2 * ph, pw + w: w + 2 * pw] = buf[:, : h + 2 * ph, cols[pw + w:]]


def scipy_gaussian_kernel(sigma: float, truncate: float = 4.0) -> np.ndarray:
    """scipy.ndimage.gaussian_filter1d's weights (order 0): radius int(truncate*sigma + 0.5), float64."""
    radius = int(truncate * float(sigma) + 0.5)
    x = np.arange(-radius, radius + 1)
    phi = np.exp(-0.5 / (float(sigma) * float(sigma)) * x**2)
    return phi / phi.sum()


def gaussian_filter(x: torch.Tensor, sigma: float | Sequence[float], mode: str = "nearest",
                    truncate: float = 4.0) -> torch.Tensor:
    """skimage.filters.gaussian (= scipy.ndimage.gaussian_filter) over H and W of (B, C, H, W)."""
    sy, sx = (sigma, sigma) if np.isscalar(sigma) else sigma
    ky = scipy_gaussian_kernel(sy, truncate) if sy > 1e-15 else None
    kx = scipy_gaussian_kernel(sx, truncate) if sx > 1e-15 else None
    return correlate_separable(x, ky, kx, mode)


def _cv2_gaussian_kernel(ksize: int, sigma: float) -> np.ndarray:
    """cv2.getGaussianKernel(ksize, sigma) for sigma > 0, rounded to float32 as GaussianBlur does on CV_32F."""
    x = np.arange(ksize) - (ksize - 1) * 0.5
    k = np.exp(-(x * x) / (2 * sigma * sigma))
    return (k / k.sum()).astype(np.float32)


@lru_cache(maxsize=32)
def disk_kernel(radius: int, alias_blur: float) -> np.ndarray:
    """imagecorruptions' disk(): an aliased disk, normalised in float32, then cv2.GaussianBlur (reflect-101)."""
    if radius <= 8:
        line, ksize = np.arange(-8, 8 + 1), 3
    else:
        line, ksize = np.arange(-radius, radius + 1), 5
    xx, yy = np.meshgrid(line, line)
    aliased = np.array((xx**2 + yy**2) <= radius**2, dtype=np.float32)
    aliased /= np.sum(aliased)
    g = _cv2_gaussian_kernel(ksize, alias_blur).astype(np.float64)
    r = ksize // 2
    rows = aliased.astype(np.float64)[:, border_index(aliased.shape[1], r, "mirror")]
    rows = sum(g[i] * rows[:, i: i + aliased.shape[1]] for i in range(ksize))
    rows = rows.astype(np.float32).astype(np.float64)[border_index(aliased.shape[0], r, "mirror")]
    out = sum(g[i] * rows[i: i + aliased.shape[0]] for i in range(ksize))
    out = out.astype(np.float32)
    out.setflags(write=False)
    return out


# ---------------------------------------------------------------- motion blur (imagecorruptions._motion_blur)


def motion_kernel(radius: int, sigma: float) -> np.ndarray:
    """getMotionBlurKernel(2*radius+1, sigma): a one-sided Gaussian, float64."""
    width = radius * 2 + 1
    k = np.exp(-(np.arange(width) - 0) ** 2 / (2 * (sigma**2))) / (np.sqrt(2 * np.pi) * sigma)
    return k / np.sum(k)


def motion_shifts(radius: int, angle: float, height: int, width: int) -> list[tuple[int, int]]:
    """The (dy, dx) of every tap _motion_blur applies, stopping where it breaks off (shift past the border)."""
    n = radius * 2 + 1
    point = (n * np.sin(np.deg2rad(angle)), n * np.cos(np.deg2rad(angle)))
    hypot = math.hypot(point[0], point[1])
    shifts = []
    for i in range(n):
        dy = -math.ceil(((i * point[0]) / hypot) - 0.5)
        dx = -math.ceil(((i * point[1]) / hypot) - 0.5)
        if abs(dy) >= height or abs(dx) >= width:
            break
        shifts.append((dy, dx))
    return shifts


def motion_blur(x: torch.Tensor, radius: int, sigma: float, angles: Sequence[float]) -> torch.Tensor:
    """_motion_blur per image: sum of kernel[i] * (image shifted by (dy_i, dx_i) with edge replication).

    shift() in the reference rolls and then copies the edge row/column into the vacated band, i.e.
    shifted[y, x] = image[clamp(y - dy), clamp(x - dx)]; taps are summed in the reference's order.
    """
    b, c, h, w = x.shape
    kernel = motion_kernel(radius, sigma)
    per_image = [motion_shifts(radius, float(a), h, w) for a in angles]
    pad = max((max(abs(dy), abs(dx)) for shifts in per_image for dy, dx in shifts), default=0)
    xp = pad2d(x, pad, pad, "nearest") if pad else x
    out = torch.zeros_like(x)
    for j, shifts in enumerate(per_image):
        acc = out[j]
        for i, (dy, dx) in enumerate(shifts):
            acc.add_(xp[j, :, pad - dy: pad - dy + h, pad - dx: pad - dx + w], alpha=float(kernel[i]))
    return out
