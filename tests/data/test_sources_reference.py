"""Image sources against values known by construction: folder trees, exact messages, hashlib digests, skimage."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from helpers.images import make_image
from PIL import Image

from iqa_saliency.data import images
from iqa_saliency.data.sources import NO_LABEL, ImageFolder, ImageRecord, SampleImages
from iqa_saliency.errors import ConfigError, DatasetError


def test_named_samples_keep_their_order_and_imagenet_labels():
    # chelsea is a tabby cat (ImageNet 281), clock an analog clock (409), camera has no label
    src = SampleImages(["clock", "camera", "chelsea"])
    assert src.records == [ImageRecord("clock", 409), ImageRecord("camera", NO_LABEL), ImageRecord("chelsea", 281)]


def test_an_unknown_sample_name_is_refused_naming_it_and_the_choices():
    expected = ("Unknown sample image(s) ['nope']. Use names from: "
                "astronaut, camera, chelsea, clock, coffee, hubble, motorcycle, rocket.")
    with pytest.raises(DatasetError, match=f"^{re.escape(expected)}$"):
        SampleImages(["camera", "nope"])


def test_the_motorcycle_sample_is_the_left_view_of_the_stereo_pair():
    left = skimage.data.stereo_motorcycle()[0]
    image = SampleImages(["motorcycle"]).load(ImageRecord("motorcycle"))
    np.testing.assert_array_equal(np.asarray(image), left)


def test_a_bad_decode_mode_names_the_setting_and_its_choices(tmp_path):
    make_image(tmp_path / "a.png")
    expected = "dataset.decode='bogus' is not valid. Use dataset.decode=oriented or imagefolder or torchvision."
    with pytest.raises(ConfigError, match=f"^{re.escape(expected)}$"):
        ImageFolder(tmp_path, decode="bogus")


def test_the_decode_mode_reaches_the_loader(tmp_path):
    # EXIF orientation 6 (rotate 90): torchvision's ImageFolder (decode=imagefolder) ignores it, oriented applies it
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (40, 20), (200, 10, 10)).save(tmp_path / "a.jpg", exif=exif)
    record = ImageRecord("a.jpg", NO_LABEL, str(tmp_path / "a.jpg"))
    assert ImageFolder(tmp_path, decode="imagefolder").load(record).size == (40, 20)
    assert ImageFolder(tmp_path, decode="oriented").load(record).size == (20, 40)


def test_load_reduced_passes_the_shorter_side_to_the_jpeg_draft(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "LARGE_PIXELS", 1_000)  # 400 x 300 counts as large
    Image.new("RGB", (400, 300), (30, 120, 200)).save(tmp_path / "big.jpg")
    src = ImageFolder(tmp_path, decode="imagefolder")
    # scale 300 // 100 = 3 asks for >= 133x100; JPEG drafts by 1/2, 1/4, 1/8: 1/2 (200x150) is the smallest
    assert src.load_reduced(src.records[0], 100).size == (200, 150)
    assert src.load(src.records[0]).size == (400, 300)


@pytest.mark.parametrize("root", [None, "", "???"])
def test_a_missing_root_setting_asks_for_one(root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # "" must not be read as the current folder
    with pytest.raises(DatasetError, match=r"^dataset=folder needs a folder\. Set dataset\.root=PATH\.$"):
        ImageFolder(root)


def test_hidden_entries_are_ignored_wherever_they_sort(tmp_path):
    make_image(tmp_path / ".hidden.png")
    make_image(tmp_path / ".thumbs" / "t.png")
    make_image(tmp_path / "a.png")
    make_image(tmp_path / "b.png")
    src = ImageFolder(tmp_path)
    assert src.class_names is None
    assert src.records == [ImageRecord("a.png", NO_LABEL, str(tmp_path / "a.png")),
                           ImageRecord("b.png", NO_LABEL, str(tmp_path / "b.png"))]


def test_a_top_level_link_leaving_the_root_is_an_unusable_record_with_its_reason(tmp_path, caplog):
    root, outside = tmp_path / "root", tmp_path / "outside"
    make_image(root / "cat" / "x.png")
    make_image(outside / "y.png")
    (root / "out").symlink_to(outside, target_is_directory=True)
    reason = f"symbolic link to {os.path.realpath(outside)}, outside the dataset root"
    with caplog.at_level(logging.WARNING, logger="iqa_saliency.data.sources"):
        src = ImageFolder(root)
    assert src.class_names == ["cat"]
    assert src.records == [ImageRecord("cat/x.png", 0, str(root / "cat" / "x.png")),
                           ImageRecord("out", NO_LABEL, str(root / "out"))]
    assert src.unusable == {"out": reason}
    assert [r.getMessage() for r in caplog.records] == [f"{root}/out: {reason}; listed in skipped.csv."]
    with pytest.raises(ValueError, match=f"^{re.escape(reason)}$"):
        src.load_reduced(src.records[1], None)


def test_top_level_images_beside_class_folders_read_flat_with_one_warning(tmp_path, caplog):
    make_image(tmp_path / "top.png")
    for c in range(1, 7):
        make_image(tmp_path / f"c{c}" / "x.png")
    with caplog.at_level(logging.WARNING, logger="iqa_saliency.data.sources"):
        src = ImageFolder(tmp_path)
    assert src.class_names is None
    assert src.records == [ImageRecord("top.png", NO_LABEL, str(tmp_path / "top.png"))]
    assert [r.getMessage() for r in caplog.records] == [
        f"{tmp_path} has images at its top level and in subfolders (c1, c2, c3, c4, c5): it is read as a flat "
        "folder, the subfolders are ignored. To use the subfolders as classes, move the top-level images into them."]


def test_no_images_names_the_lowercased_extensions(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    make_image(tmp_path / "a.bmp")
    expected = f"No images (.png, .jpg) found under '{tmp_path}'. Point dataset.root at a folder of images."
    with pytest.raises(DatasetError, match=f"^{re.escape(expected)}$"):
        ImageFolder(tmp_path, extensions=(".PNG", ".Jpg"))


def test_an_entry_whose_folder_check_fails_is_read_as_a_file(tmp_path, monkeypatch):
    make_image(tmp_path / "a.png")
    make_image(tmp_path / "b.png")
    is_dir = Path.is_dir

    def failing(path: Path) -> bool:  # as stat on a folder without search permission (not for root) would
        if path.name == "a.png":
            raise OSError(errno.EACCES, "Permission denied")
        return is_dir(path)

    monkeypatch.setattr(Path, "is_dir", failing)
    src = ImageFolder(tmp_path)
    assert [r.image_id for r in src.records] == ["a.png", "b.png"] and src.unusable == {}


def test_content_id_is_the_sha256_of_the_bytes_read_once_per_source(tmp_path):
    make_image(tmp_path / "a.png", seed=1)
    make_image(tmp_path / "b.png", seed=1)  # the same bytes under another name
    make_image(tmp_path / "c.png", seed=2)
    src = ImageFolder(tmp_path)
    digest = {n: "sha256:" + hashlib.sha256((tmp_path / n).read_bytes()).hexdigest() for n in ("a.png", "c.png")}
    ids = [src.content_id(r) for r in src.records]
    assert ids == [digest["a.png"], digest["a.png"], digest["c.png"]]
    (tmp_path / "a.png").write_bytes((tmp_path / "c.png").read_bytes())
    assert src.content_id(src.records[0]) == digest["a.png"]  # memoized: read once per source
    assert ImageFolder(tmp_path).content_id(src.records[0]) == digest["c.png"]
