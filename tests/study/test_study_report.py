"""The sweep report's per-corruption panels show what the original study's quality_accuracy.py plotted."""

from __future__ import annotations

import numpy as np
import pandas as pd
from PIL import Image

from iqa_saliency.report.figures import per_corruption_panels


def _curves(with_labels: bool) -> pd.DataFrame:
    rows = []
    for corruption in ("brightness", "zoom_blur"):
        for severity in range(4):
            rows.append({"corruption": corruption, "severity": severity, "variant": "gradcam · study_resnet18",
                         "acc_top1": 0.6 - 0.05 * severity if with_labels else np.nan,
                         "acc_top5": 0.9 - 0.02 * severity if with_labels else np.nan,
                         "flip_rate": 0.1 * severity, "mos_mean": 73.6 - 0.1 * severity, "mos_std": 2.0,
                         "sim_cc_mean": 0.1, "sim_cc_ci_low": 0.05, "sim_cc_ci_high": 0.15})
    return pd.DataFrame(rows)


def test_per_corruption_panels_top1_top5_mos_and_cc(tmp_path):
    paths = per_corruption_panels(_curves(True), tmp_path, "acc_top1")
    assert sorted(paths) == ["brightness", "zoom_blur"]
    four = Image.open(paths["zoom_blur"]).size
    three = Image.open(per_corruption_panels(_curves(False), tmp_path / "nolabels", "flip_rate")["zoom_blur"]).size
    assert four[0] > three[0] * 1.2 and four[1] == three[1]  # a fourth panel (top-5) only when there are labels
