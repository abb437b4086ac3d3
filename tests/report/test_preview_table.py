"""The wandb per-image preview table carries the change and attribution-check columns with each image's values."""

from __future__ import annotations

import numpy as np
import pytest

from iqa_saliency.report.comparison import Preview
from iqa_saliency.report.loggers import log_preview_table

NEW = ("quality_stability_cc", "change_cc", "change_spearman", "sim_cc_clean", "confidence_drop", "attr_ris",
       "attr_ros", "deletion_auc_clean", "deletion_auc", "insertion_auc_clean", "insertion_auc")


class WandbLogger:  # named as Lightning's, which is what log_preview_table looks for
    def __init__(self) -> None:
        self.logged: list[dict] = []
        self.experiment = self
        self.offline = False  # the online path: the whole table with its images

    def log(self, values: dict) -> None:
        self.logged.append(values)


def test_preview_table_has_the_new_columns():
    pytest.importorskip("wandb")
    image = np.zeros((8, 8, 3), np.uint8)
    heat = np.linspace(0, 1, 16).reshape(4, 4)
    row = {"image": "a.png", "mos": 50.0, **{c: 0.1 * (k + 1) for k, c in enumerate(NEW)}, "deletion_auc": None}
    logger = WandbLogger()
    log_preview_table(logger, [Preview(row, image, heat, heat)])
    table = logger.logged[0]["per_image"]
    data = dict(zip(table.columns, table.data[0], strict=True))
    for k, column in enumerate(NEW):
        assert column in table.columns
        assert data[column] == (None if column == "deletion_auc" else pytest.approx(0.1 * (k + 1))), column
