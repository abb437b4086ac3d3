"""Pixel operations of the torch corruption backend, each restating one numpy / scipy / OpenCV / skimage step.

Tensors are batched, channels first, (B, C, H, W), floating point, on any device. Kernels, sampling grids and
shift lists are built on the host with numpy in float64, exactly as the reference builds them; only the pixel
work runs in torch. Where a convention differs from torch's default it is named: OpenCV's BORDER_DEFAULT is
reflect-101 (torch 'reflect'), scipy's 'reflect' is half-sample symmetric (no torch mode), scipy's 'nearest' is
torch 'replicate', scipy.ndimage.zoom maps corners to corners (grid_mode=False).
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


# ---------------------------------------------------------------- clipped zoom (scipy.ndimage.zoom, order=1)


def _zoom_axis(n: int, factor: float, full: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """clipped_zoom along one axis: crop ceil(n/z) centred, zoom by scipy's corner-to-corner grid, keep n.

    scipy.ndimage.zoom (grid_mode=False) makes round(m*z) samples and maps output o to input o*(m-1)/(out-1);
    order=1 is linear interpolation between floor and floor+1 (weight 0 on the second at the last sample).
    Returns (i0, i1, t) in full-image coordinates for the first n outputs (all round(m*z) of them if `full`).
    """
    crop = int(np.ceil(n / float(factor)))
    top = (n - crop) // 2
    out = int(round(crop * float(factor)))
    scale = (crop - 1) / (out - 1) if out != 1 else 1.0
    coord = np.arange(out if full else n, dtype=np.float64) * scale
    coord = np.minimum(coord, crop - 1)
    i0 = np.floor(coord).astype(np.int64)
    t = coord - i0
    i1 = np.minimum(i0 + 1, crop - 1)
    return i0 + top, i1 + top, t


@lru_cache(maxsize=64)
def zoom_plan(height: int, width: int, factors: tuple[float, ...]):
    """Per zoom factor, the row and column (i0, i1, t) of clipped_zoom, cached per image size."""
    return [(_zoom_axis(height, z), _zoom_axis(width, z)) for z in factors]


@lru_cache(maxsize=64)
def _zoom_grid(height: int, width: int, factor: float, device: torch.device) -> torch.Tensor:
    """grid_sample grid (1, H, W, 2) landing on clipped_zoom's sampling points (align_corners=True)."""
    (y0, _, ty), (x0, _, tx) = zoom_plan(height, width, (factor,))[0]
    gy = (y0 + ty) * 2.0 / (height - 1) - 1.0
    gx = (x0 + tx) * 2.0 / (width - 1) - 1.0
    grid = np.stack(np.broadcast_arrays(gx[None, :], gy[:, None]), -1)[None]
    return torch.tensor(grid, dtype=torch.float32, device=device)


def clipped_zoom(x: torch.Tensor, factor: float) -> torch.Tensor:
    """clipped_zoom(x, factor)[:H, :W] for (B, C, H, W): bilinear at scipy's points, through grid_sample.

    grid_sample's coordinates are float32 (about 1e-5 px off the float64 points); exact=True in
    clipped_zoom_exact gathers the two rows and columns instead (slower on CPU).
    """
    b, c, h, w = x.shape
    grid = _zoom_grid(h, w, float(factor), x.device).to(x.dtype).expand(b, h, w, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)


def clipped_zoom_exact(x: torch.Tensor, factor: float, full: bool = False) -> torch.Tensor:
    """clipped_zoom(x, factor)[:H, :W] by index_select + lerp with float64 coordinates (uncropped if `full`)."""
    if full:
        ry, rx = _zoom_axis(x.shape[-2], float(factor), True), _zoom_axis(x.shape[-1], float(factor), True)
    else:
        ry, rx = zoom_plan(x.shape[-2], x.shape[-1], (float(factor),))[0]
    y0, y1, ty = (torch.as_tensor(a, device=x.device) for a in ry)
    x0, x1, tx = (torch.as_tensor(a, device=x.device) for a in rx)
    rows = torch.lerp(x.index_select(2, y0), x.index_select(2, y1), ty.to(x.dtype)[:, None])
    return torch.lerp(rows.index_select(3, x0), rows.index_select(3, x1), tx.to(x.dtype))


def clipped_zoom_sum(x: torch.Tensor, factors: Sequence[float], exact: bool = False) -> torch.Tensor:
    """Sum over `factors` of clipped_zoom(x, z)[:H, :W], accumulated in the reference's order."""
    zoom = clipped_zoom_exact if exact else clipped_zoom
    out = torch.zeros_like(x)
    for z in factors:
        out.add_(zoom(x, float(z)))
    return out


# ---------------------------------------------------------------- map_coordinates(order=1, mode='reflect')


def _reflect_coord_index(i: torch.Tensor, n: int) -> torch.Tensor:
    period = 2 * n
    i = torch.remainder(i, period)
    return torch.where(i >= n, period - 1 - i, i)


def map_coordinates_linear(x: torch.Tensor, yy: torch.Tensor, xx: torch.Tensor) -> torch.Tensor:
    """scipy.ndimage.map_coordinates(order=1, mode='reflect') sampling every channel at (yy, xx), (B, H, W).

    scipy's 'reflect' (half-sample symmetric) extension: linear interpolation between the two neighbouring
    samples of the symmetrically extended line, e[-k] = x[k-1], e[n-1+k] = x[n-k].
    """
    b, c, h, w = x.shape
    y0 = torch.floor(yy)
    x0 = torch.floor(xx)
    ty = (yy - y0).to(x.dtype)[:, None]
    tx = (xx - x0).to(x.dtype)[:, None]
    y0 = y0.to(torch.int64)
    x0 = x0.to(torch.int64)
    ya, yb = _reflect_coord_index(y0, h), _reflect_coord_index(y0 + 1, h)
    xa, xb = _reflect_coord_index(x0, w), _reflect_coord_index(x0 + 1, w)
    flat = x.reshape(b, c, h * w)

    def take(iy, ix):
        idx = (iy * w + ix).reshape(b, 1, h * w).expand(b, c, h * w)
        return flat.gather(2, idx).reshape(b, c, h, w)

    top = take(ya, xa) * (1 - tx) + take(ya, xb) * tx
    bottom = take(yb, xa) * (1 - tx) + take(yb, xb) * tx
    return top * (1 - ty) + bottom * ty


# ---------------------------------------------------------------- PIL resizes (Image.BOX, Image.NEAREST), 8-bit


PIL_PRECISION_BITS = 32 - 8 - 2


@lru_cache(maxsize=64)
def pil_box_matrix(in_size: int, out_size: int) -> np.ndarray:
    """Pillow's BOX resampling of one axis as an (out, in) matrix of its fixed-point coefficients (float64).

    Restates precompute_coeffs (support 0.5 * scale, taps from int(center -/+ support + 0.5), box(x) = 1 on
    (-0.5, 0.5], normalised) and normalize_coeffs_8bpc (int(0.5 + k * 2**22)).
    """
    scale = filterscale = in_size / out_size
    filterscale = max(filterscale, 1.0)
    support = 0.5 * filterscale
    m = np.zeros((out_size, in_size))
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size) - xmin
        arg = (np.arange(xmax) + xmin - center + 0.5) * (1.0 / filterscale)
        w = ((arg > -0.5) & (arg <= 0.5)).astype(np.float64)
        ww = w.sum()
        if ww != 0.0:
            w = w / ww
        m[xx, xmin: xmin + xmax] = np.trunc(0.5 + w * (1 << PIL_PRECISION_BITS))
    return m


@lru_cache(maxsize=64)
def pil_nearest_index(in_size: int, out_size: int) -> np.ndarray:
    """Pillow's NEAREST resize of one axis (ImagingScaleAffine): source index per output, -1 where outside."""
    a = in_size / out_size
    xo = 0.0 + a * 0.5
    idx = np.empty(out_size, dtype=np.int64)
    for x in range(out_size):  # Pillow accumulates xo += a in double; repeat it for the same roundings
        xin = -1 if xo < 0.0 else int(xo)
        idx[x] = xin if 0 <= xin < in_size else -1
        xo += a
    return idx


def pil_resize_box(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Image.resize((width, height), Image.BOX) of uint8 (B, C, H, W): horizontal pass, uint8, vertical pass.

    The fixed-point sums (coefficients < 2**22 times values < 256) are exact in float64.
    """
    b, c, h, w = x.shape
    half = float(1 << (PIL_PRECISION_BITS - 1))
    unit = float(1 << PIL_PRECISION_BITS)
    out = x.to(torch.float64)
    if width != w:
        mx = torch.tensor(pil_box_matrix(w, width), dtype=torch.float64, device=x.device)
        out = torch.floor((out @ mx.T + half) / unit).clamp_(0, 255)
    if height != h:
        my = torch.tensor(pil_box_matrix(h, height), dtype=torch.float64, device=x.device)
        out = torch.floor((my @ out + half) / unit).clamp_(0, 255)
    return out.to(torch.uint8)


def pil_resize_nearest(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Image.resize((width, height), Image.NEAREST) of (B, C, H, W); pixels mapped outside stay 0 (Pillow's fill)."""
    yi = pil_nearest_index(x.shape[-2], height)
    xi = pil_nearest_index(x.shape[-1], width)
    out = x.index_select(-2, torch.as_tensor(np.maximum(yi, 0), device=x.device))
    out = out.index_select(-1, torch.as_tensor(np.maximum(xi, 0), device=x.device))
    if (yi < 0).any() or (xi < 0).any():
        keep = torch.as_tensor((yi >= 0)[:, None] & (xi >= 0)[None, :], device=x.device)
        out = out * keep
    return out
