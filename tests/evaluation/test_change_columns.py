"""The change columns of a clean cell (nothing was corrupted): both stabilities exactly 1, the change maps undefined
(blank, never a number), the clean pair's CC equal to the corrupted pair's, the clean attribution saved, and the
correlations across images that rounding noise would otherwise make up left undefined."""

from __future__ import annotations

import math

import numpy as np
import skimage.data

OVERRIDES = ["dataset.resize=null", "dataset.crop=null", "classifier._target_=helpers.stub_classifier.load",
             "seed=0"]


def test_a_clean_cell_changes_nothing():
    from iqa_saliency.api import evaluate_images

    images = [np.ascontiguousarray(getattr(skimage.data, name)()[:96, :96]) for name in ("chelsea", "coffee",
                                                                                          "astronaut", "rocket")]
    result = evaluate_images(images, corruption="none", severity=0, pretrained=False, overrides=OVERRIDES)
    rows = result.rows
    assert (rows["quality_stability_cc"] == 1.0).all() and (rows["attr_stability_cc"] == 1.0).all()
    assert rows["change_cc"].isna().all() and rows["change_spearman"].isna().all()
    np.testing.assert_array_equal(rows["sim_cc_clean"], rows["sim_cc"])
    assert (rows["confidence_drop"] == 0).all() and (rows["quality_category_clean"] == rows["quality_category"]).all()
    for maps in result.maps.values():
        np.testing.assert_array_equal(maps["attribution_clean"], maps["attribution"])
    metrics = result.summary["metrics"]
    for key in ("correlation/quality_vs_attr_stability_spearman", "correlation/mos_drop_vs_confidence_drop_spearman",
                "correlation/mos_drop_vs_flipped_spearman", "change/cc"):
        assert metrics[key] is None or math.isnan(metrics[key]), key
    assert metrics["quality/stability_cc"] == 1.0
