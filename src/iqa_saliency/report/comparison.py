"""The per-image three-panel figure (image | quality overlay | attribution overlay), drawn cheaply enough to write
eight per cell on the run's writer threads.

A matplotlib Figure on its own Agg canvas (no pyplot state) is kept per image size, warning mark and layout key and
redrawn with each image's data. Constrained layout, which measures every text of the figure (half of drawing one
afresh), runs once per kept figure: the key holds what it depends on that changes between images (the quality
scale's tick labels, a title wider than its panel), so a kept figure's axes are where it would put them again.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from PIL import Image, PngImagePlugin

from ..io.atomic import atomic_write
from .figures import overlay

DPI = 100
FIGSIZE = (12, 4.4)
# zlib level of the PNG: 1 writes the same pixels in a third of level 6's time (matplotlib's default), ~1.3x larger
PNG_COMPRESS_LEVEL = 1
_lock = threading.Lock()  # one figure drawn at a time: the kept figures and matplotlib's font cache are shared


@dataclass
class Preview:
    """One image's row with its input and maps, for experiment-logger tables (overlays made when logged)."""

    row: dict[str, Any]
    image: np.ndarray
    quality_map: np.ndarray
    attribution: np.ndarray

    @property
    def quality_overlay(self) -> np.ndarray:
        return overlay(self.image, self.quality_map, cmap="RdYlGn", alpha=0.55)

    @property
    def attribution_overlay(self) -> np.ndarray:
        return overlay(self.image, self.attribution, mode="bilinear")


class _Kept:
    """A three-panel figure for one image size and mark, laid out once (constrained layout on its first image),
    then redrawn with each image's data."""

    def __init__(self, shape: tuple[int, ...], mark: str | None) -> None:
        self.figure = fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(1, 3)
        if mark:
            fig.suptitle(mark, color="red", fontsize=12, fontweight="bold")
        blank = np.zeros(shape, dtype=np.uint8)
        self.images = [ax.imshow(blank) for ax in axes]
        self.quality_scale = ScalarMappable(cmap="RdYlGn", norm=Normalize(0.0, 1.0))
        self.quality_bar = fig.colorbar(self.quality_scale, ax=axes[1], fraction=0.046, pad=0.02,
                                        label="local quality (raw score)")
        fig.colorbar(ScalarMappable(cmap="jet", norm=Normalize(0, 1)), ax=axes[2], fraction=0.046, pad=0.02,
                     label="attribution (min-max scaled)")
        self.titles = []
        for ax in axes:
            self.titles.append(ax.set_title("", fontsize=10))
            ax.set_xticks([])
            ax.set_yticks([])
        self.laid_out = False

    def show(self, panels: tuple[np.ndarray, np.ndarray, np.ndarray], scale: tuple[float, float],
             titles: tuple[str, str, str]) -> None:
        """Put one image's panels, quality scale and titles in the figure."""
        for artist, pixels in zip(self.images, panels, strict=True):
            artist.set_data(pixels)
        self.quality_scale.set_norm(Normalize(*scale))
        self.quality_bar.update_normal(self.quality_scale)
        for artist, text in zip(self.titles, titles, strict=True):
            artist.set_text(text)

    def layout_key(self) -> tuple[Any, ...]:
        """What constrained layout depends on that changes between images: the quality scale's tick labels and
        how far each title overhangs its panel (0 for a title that fits)."""
        axis = self.quality_bar.ax.yaxis
        low, high = sorted(self.quality_bar.ax.get_ylim())
        labels = tuple(axis.get_major_formatter().format_ticks([v for v in axis.get_majorticklocs()
                                                                if low <= v <= high]))
        renderer = self.figure.canvas.get_renderer()
        overhang = tuple(max(0, round(t.get_window_extent(renderer).width - t.axes.bbox.width)) for t in self.titles)
        return labels, overhang

    def draw(self) -> np.ndarray:
        """The figure's RGBA pixels (laid out on the first call, the axes kept where they are after)."""
        self.figure.canvas.draw()
        if not self.laid_out:
            self.figure.set_layout_engine("none")
            self.laid_out = True
        return np.asarray(self.figure.canvas.buffer_rgba())


MAX_KEPT = 16  # figures kept per process (each a few MB): image sizes x marks x layouts in use
_kept: dict[tuple[Any, ...], _Kept] = {}


def _draw(image: np.ndarray, quality_map: np.ndarray, attribution: np.ndarray, titles: tuple[str, str, str],
          mark: str | None) -> np.ndarray:
    """The figure's pixels: drawn on the kept figure laid out for this image's layout key (a new one, laid out
    by constrained layout exactly as a fresh figure is, for a key not seen before)."""
    panels = (image, overlay(image, quality_map, cmap="RdYlGn", alpha=0.55),
              overlay(image, attribution, cmap="jet", alpha=0.5, mode="bilinear"))
    scale = (float(quality_map.min()), float(quality_map.max()))
    kind = (image.shape, mark)
    if len(_kept) >= MAX_KEPT:
        _kept.clear()
    probe = _kept.get(kind) or _kept.setdefault(kind, _Kept(image.shape, mark))  # measures the layout key
    probe.show(panels, scale, titles)
    key = (*kind, probe.layout_key())
    kept = _kept.get(key)
    if kept is None:  # the probe itself while it was never drawn: then it is a fresh figure
        kept = _kept[key] = probe if not probe.laid_out else _Kept(image.shape, mark)
    if kept is not probe:
        kept.show(panels, scale, titles)
    return kept.draw()


def save_comparison_figure(path: str | os.PathLike, image: np.ndarray, quality_map: np.ndarray,
                           attribution: np.ndarray, titles: tuple[str, str, str], mark: str | None = None) -> Path:
    """Write the three-panel figure for one image to `path` (PNG, atomically); `mark` (untrained weights) is
    written across the top in red and into the PNG's "Warning" text field. Safe to call from several threads."""
    with _lock:
        pixels = Image.fromarray(_draw(image, quality_map, attribution, titles, mark)[..., :3].copy())  # opaque
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", f"Matplotlib version{matplotlib.__version__}, https://matplotlib.org/")
    if mark:
        info.add_text("Warning", mark)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda fh: pixels.save(fh, format="PNG", pnginfo=info, compress_level=PNG_COMPRESS_LEVEL,
                                              dpi=(DPI, DPI)))
    return path
