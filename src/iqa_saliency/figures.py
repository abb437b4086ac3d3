"""Overlays and the per-image figure: image | quality-map overlay | attribution overlay."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def upsample(grid_map: np.ndarray, height: int, width: int, mode: str = "nearest") -> np.ndarray:
    """Resize a 2-D map to the image size (nearest keeps the quality patches visible)."""
    t = torch.as_tensor(np.asarray(grid_map, dtype=np.float32))[None, None]
    kwargs = {"align_corners": False} if mode == "bilinear" else {}
    return F.interpolate(t, size=(height, width), mode=mode, **kwargs)[0, 0].numpy()


def normalize01(x: np.ndarray) -> np.ndarray:
    """Min-max scale to [0, 1] for display; a constant map becomes zeros."""
    lo, hi = float(np.nanmin(x)), float(np.nanmax(x))
    return np.zeros_like(x) if hi <= lo else (x - lo) / (hi - lo)


def overlay(image: np.ndarray, heat: np.ndarray, cmap: str = "jet", alpha: float = 0.5,
            mode: str = "nearest") -> np.ndarray:
    """Blend a heat map (any size, display-normalised here) over an HxWx3 uint8 image."""
    h, w = image.shape[:2]
    heat = normalize01(upsample(heat, h, w, mode) if heat.shape != (h, w) else heat)
    colored = plt.get_cmap(cmap)(heat)[..., :3]
    blended = (1 - alpha) * image.astype(np.float32) / 255.0 + alpha * colored
    return (np.clip(blended, 0, 1) * 255).round().astype(np.uint8)


def save_comparison_figure(path: str | os.PathLike, image: np.ndarray, quality_map: np.ndarray,
                           attribution: np.ndarray, titles: tuple[str, str, str]) -> None:
    """Write the three-panel figure for one image to `path` (PNG)."""
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.4), constrained_layout=True)
    axes[0].imshow(image)
    h, w = image.shape[:2]
    im = axes[1].imshow(overlay(image, quality_map, cmap="RdYlGn", alpha=0.55))
    sm = plt.cm.ScalarMappable(cmap="RdYlGn",
                               norm=matplotlib.colors.Normalize(float(quality_map.min()), float(quality_map.max())))
    fig.colorbar(sm, ax=axes[1], fraction=0.046, pad=0.02, label="local quality (raw score)")
    axes[2].imshow(overlay(image, attribution, cmap="jet", alpha=0.5, mode="bilinear"))
    sm2 = plt.cm.ScalarMappable(cmap="jet", norm=matplotlib.colors.Normalize(0, 1))
    fig.colorbar(sm2, ax=axes[2], fraction=0.046, pad=0.02, label="attribution (min-max scaled)")
    del im
    for ax, title in zip(axes, titles, strict=True):
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    os.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
    tmp = f"{path}.tmp.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
