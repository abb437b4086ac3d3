"""The per-image three-panel figure: a kept figure redrawn for image after image gives the pixels a fresh pyplot
figure with constrained layout gives (the way the figure was drawn before it was kept), also when the quality
scale's tick labels or a title's width change the layout; several threads may draw at once."""

from __future__ import annotations

import threading

import matplotlib
import numpy as np
import pytest
from PIL import Image
from skimage import data

from iqa_saliency.report.comparison import save_comparison_figure
from iqa_saliency.report.figures import overlay

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def reference(path, image, quality_map, attribution, titles, mark=None):
    """The figure as one fresh pyplot figure, laid out by constrained layout and saved by savefig."""
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.4), constrained_layout=True)
    if mark:
        fig.suptitle(mark, color="red", fontsize=12, fontweight="bold")
    axes[0].imshow(image)
    axes[1].imshow(overlay(image, quality_map, cmap="RdYlGn", alpha=0.55))
    norm = matplotlib.colors.Normalize(float(quality_map.min()), float(quality_map.max()))
    fig.colorbar(plt.cm.ScalarMappable(cmap="RdYlGn", norm=norm), ax=axes[1], fraction=0.046, pad=0.02,
                 label="local quality (raw score)")
    axes[2].imshow(overlay(image, attribution, cmap="jet", alpha=0.5, mode="bilinear"))
    fig.colorbar(plt.cm.ScalarMappable(cmap="jet", norm=matplotlib.colors.Normalize(0, 1)), ax=axes[2],
                 fraction=0.046, pad=0.02, label="attribution (min-max scaled)")
    for ax, title in zip(axes, titles, strict=True):
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return np.asarray(Image.open(path).convert("RGB"))


def _cases(size=96):
    rng = np.random.default_rng(0)
    photos = [np.asarray(Image.fromarray(getattr(data, n)()).convert("RGB").resize((size, size)))
              for n in ("chelsea", "coffee", "rocket")]
    # the quality scale's ticks 0.2..0.8, then 20..80 (a wider scale: another layout), then back
    scales = [1.0, 1.0, 100.0, 1.0]
    titles = ["chelsea · contrast s1", "coffee · contrast s1", "rocket · contrast s1",
              "a_very_long_image_identifier_that_is_far_wider_than_its_panel_0123456789 · contrast s1"]
    for k, (scale, title) in enumerate(zip(scales, titles, strict=True)):
        yield (photos[k % 3], (rng.random((20, 20)) * scale).astype(np.float32),
               rng.random((7, 7)).astype(np.float32),
               (title, f"MOS {50 + k:.1f} (good) · clean 60.2", f"gradcam: tabby {k / 10:.2f} · CC 0.12"))


@pytest.mark.parametrize("mark", [None, "UNTRAINED weights (classifier): the maps show no learned behaviour"])
def test_kept_figures_draw_what_a_fresh_figure_draws(tmp_path, mark):
    for k, (image, quality_map, attribution, titles) in enumerate(_cases()):
        got = save_comparison_figure(tmp_path / f"got{k}.png", image, quality_map, attribution, titles, mark)
        expected = reference(tmp_path / f"ref{k}.png", image, quality_map, attribution, titles, mark)
        written = Image.open(got)
        assert written.size == (1200, 440) and written.info.get("dpi") == pytest.approx((100, 100), abs=0.01)
        assert written.text.get("Warning") == mark
        np.testing.assert_array_equal(np.asarray(written.convert("RGB")), expected, err_msg=f"figure {k}")


def test_figures_drawn_from_several_threads_are_each_their_own(tmp_path):
    cases = list(_cases(64))
    threads = [threading.Thread(target=save_comparison_figure, args=(tmp_path / f"t{k}.png", *case))
               for k, case in enumerate(cases)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k, case in enumerate(cases):
        expected = reference(tmp_path / f"ref{k}.png", *case)
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / f"t{k}.png").convert("RGB")), expected)
