"""Resampling steps of the torch corruption backend: scipy.ndimage.zoom (clipped_zoom), map_coordinates, and
Pillow's BOX / NEAREST resizes, each restated on batched (B, C, H, W) tensors on any device.

Sampling grids and coefficients are computed on the host with numpy in float64 exactly as the reference computes
them (scipy.ndimage.zoom maps corners to corners, grid_mode=False; Pillow works in 22-bit fixed point).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

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
