"""dataset=mit_indoor: the extracted archive's folder or its Images folder."""

from __future__ import annotations

import os

import numpy as np
import pytest
from helpers.images import make_image
from PIL import Image

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


def _png(path, seed=0):
    """A small PNG under any file name (PIL would pick the format from the suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((40, 48, 3), 10 * seed, dtype=np.uint8)).save(path, format="PNG")


def _odd_tree(root):
    """Classes with .gif, upper-case and odd suffixes, hidden files and folders, nested folders whose names sort
    differently as paths and as walk roots ('sub' / 'sub-x' / 'sub/deeper'), and files at the top level."""
    names = {
        "bakery": ["b.JPG", "a.jpeg", "c.Png", "d.gif", "e.GIF", "f.txt", "g.jpg.bak", "noext", ".hidden.jpg",
                   "h.WEBP", "i.tiff", "j.PGM", "k.ppm", "l.bmp"],
        "bakery/sub": ["z.jpg"],
        "bakery/sub/deeper": ["y.jpg"],
        "bakery/sub-x": ["x.jpg"],
        "bakery/.git": ["w.jpg"],
        ".ipynb_checkpoints": ["v.jpg"],
        "Zoo": ["u.JPEG"],
        "airport_inside": ["t.jpg", "s.gif"],
        "_under": ["r.png"],
    }
    for folder, files in names.items():
        for i, name in enumerate(files):
            _png(root / folder / name, seed=i)
    _png(root / "top.jpg")
    (root / "mos.csv").write_text("image_path,global_score,normalized_global_score,category\n")


def test_listing_is_imagefolder_samples(tmp_path):
    """The reference is torchvision's ImageFolder itself: the same classes, paths, order and labels."""
    from torchvision.datasets import ImageFolder

    _odd_tree(tmp_path)
    reference = ImageFolder(str(tmp_path))
    ds = MITIndoor(tmp_path, decode="imagefolder")
    assert ds.class_names == reference.classes
    assert [(r.path, r.label) for r in ds.records] == reference.samples
    assert [r.image_id for r in ds.records] == [os.path.relpath(p, tmp_path) for p, _ in reference.samples]
    listed = {r.image_id for r in ds.records}
    assert "bakery/d.gif" not in listed and "bakery/b.JPG" in listed and ".ipynb_checkpoints/v.jpg" in listed
    assert ds.load(ds.records[0]).mode == "RGB"


def test_empty_class_folder_is_refused_as_imagefolder_does(tmp_path):
    from torchvision.datasets import ImageFolder

    _odd_tree(tmp_path)
    (tmp_path / "empty_class").mkdir()
    _png(tmp_path / "gif_only" / "a.gif")
    with pytest.raises(FileNotFoundError):
        ImageFolder(str(tmp_path))
    with pytest.raises(DatasetError, match="'empty_class', 'gif_only'.*Remove those folders"):
        MITIndoor(tmp_path)
