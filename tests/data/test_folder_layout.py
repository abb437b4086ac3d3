"""Odd folders: stray subfolders, symbolic links (to `.`, loops, outside the root, duplicates), amplification."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
from helpers.images import make_image
from PIL import Image

from iqa_saliency.data.images import MAX_PREPARED_PIXELS, check_pixels, prepare_image
from iqa_saliency.data.pairs import CorruptedPairs
from iqa_saliency.data.protocol import Cell, Inputs
from iqa_saliency.data.sources import NO_LABEL, ImageFolder


def test_top_level_images_make_a_folder_flat_with_a_log_line(tmp_path, caplog):
    root = tmp_path / "data"
    for name in ("b.jpg", "a.jpg"):
        make_image(root / name)
    make_image(root / "x" / "thumb.png")
    with caplog.at_level(logging.WARNING):
        source = ImageFolder(root)
    assert source.class_names is None and [r.image_id for r in source.records] == ["a.jpg", "b.jpg"]
    assert any("read as a flat folder" in r.getMessage() and "x" in r.getMessage() for r in caplog.records)


def test_symlinks_followed_once_loops_and_escapes_listed(tmp_path):
    root = tmp_path / "data"
    make_image(root / "cat" / "1.png", seed=1)
    make_image(root / "dog" / "2.png", seed=2)
    outside = make_image(tmp_path / "elsewhere" / "o.png", seed=3)
    os.symlink(".", root / "again")  # a link to the root: no extra class repeating every image
    os.symlink("..", root / "cat" / "up")  # back up the tree
    os.symlink("loop_b.png", root / "dog" / "loop_a.png")
    os.symlink("loop_a.png", root / "dog" / "loop_b.png")
    os.symlink(outside, root / "dog" / "out.png")
    os.symlink("1.png", root / "cat" / "same.png")  # the same file twice
    os.symlink("../cat/1.png", root / "dog" / "linked.png")
    source = ImageFolder(root)
    assert source.class_names == ["cat", "dog"]
    usable = [r.image_id for r in source.records if r.image_id not in source.unusable]
    assert usable == ["cat/1.png", "dog/2.png"]
    assert set(source.unusable) == {"again", "cat/up", "cat/same.png", "dog/linked.png", "dog/loop_a.png",
                                    "dog/loop_b.png", "dog/out.png"}
    assert "loop" in source.unusable["dog/loop_a.png"] and "outside" in source.unusable["dog/out.png"]
    pairs = CorruptedPairs(source, Cell("contrast", 1, 0), Inputs(resize=64, crop=64))
    items = [pairs[i] for i in range(len(pairs))]
    errors = {it["image_id"]: it["error"] for it in items if "error" in it}
    assert set(errors) == set(source.unusable)  # each reaches skipped.csv with its reason
    assert all(it["label"] == NO_LABEL for it in items if "error" in it)
    for record in source.records:
        source.stamp(record)  # a loop or broken link still has a stamp (resume records every file)


def test_a_symlinked_class_folder_inside_the_root_is_read_once(tmp_path):
    root = tmp_path / "data"
    make_image(root / "real" / "1.png")
    os.symlink("real", root / "zlink")
    source = ImageFolder(root)
    assert source.class_names == ["real"] and "zlink" in source.unusable


def test_amplifying_resize_is_refused_before_allocating(tmp_path):
    # a 20000x2 PNG resized to a 256 px shorter side would be 2.56 million x 256 px: refused from its size alone
    with pytest.raises(ValueError, match="20000x2 image would be 2560000x256 .*dataset.max_pixels=50000000"):
        check_pixels((20000, 2), 256, MAX_PREPARED_PIXELS)
    path = tmp_path / "wide.png"
    Image.fromarray(np.zeros((2, 2000, 3), np.uint8)).save(path)  # 64000x64 after resize=64
    with pytest.raises(ValueError, match="dataset.max_pixels"):
        prepare_image(Image.open(path), 64, 64, max_pixels=1_000_000)
    assert prepare_image(Image.open(path), 64, 64).size == (64, 64)  # under the default budget
    source = ImageFolder(tmp_path)
    item = CorruptedPairs(source, Cell("contrast", 1, 0), Inputs(resize=64, crop=64, max_pixels=1_000_000))[0]
    assert "dataset.max_pixels" in item["error"]  # a skipped image with its reason, not a stopped run
