"""dataset=mit_indoor: the extracted archive's folder or its Images folder."""

from __future__ import annotations

import pytest
from helpers.images import make_image

from iqa_saliency.data.mit_indoor import MITIndoor
from iqa_saliency.errors import DatasetError


def test_root_with_or_without_images_folder(tmp_path):
    for cls in ("airport_inside", "bakery"):
        for i in range(2):
            make_image(tmp_path / "Images" / cls / f"{cls}_{i}.jpg", seed=i)
    (tmp_path / "TrainImages.txt").write_text("airport_inside/airport_inside_0.jpg\n")
    for root in (tmp_path, tmp_path / "Images"):
        ds = MITIndoor(root)
        assert ds.class_names == ["airport_inside", "bakery"]
        assert [r.image_id for r in ds.records][:2] == ["airport_inside/airport_inside_0.jpg",
                                                         "airport_inside/airport_inside_1.jpg"]
        assert [r.label for r in ds.records] == [0, 0, 1, 1]


def test_missing_or_flat_root_names_the_fix(tmp_path):
    with pytest.raises(DatasetError, match="dataset.root=PATH"):
        MITIndoor(None)
    make_image(tmp_path / "flat" / "a.jpg")
    with pytest.raises(DatasetError, match="no class folders.*Images/<class>"):
        MITIndoor(tmp_path / "flat")
