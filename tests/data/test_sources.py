"""Image sources and the clean/corrupted pair dataset."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.images import make_image
from PIL import Image

from iqa_saliency.data.images import prepare_image
from iqa_saliency.data.pairs import CorruptedPairs, collate_pairs
from iqa_saliency.data.protocol import Cell, Inputs
from iqa_saliency.data.sources import SAMPLE_IMAGES, ImageFolder, SampleImages
from iqa_saliency.errors import DatasetError


def test_samples_are_real_photos_with_some_imagenet_labels():
    src = SampleImages()
    assert [r.image_id for r in src.records] == list(SAMPLE_IMAGES)
    labels = {r.image_id: r.label for r in src.records}
    assert labels["chelsea"] == 281 and labels["astronaut"] == -1
    img = src.load(src.records[0])
    assert img.mode == "RGB" and min(img.size) >= 224
    assert src.load(src.records[1]).mode == "RGB"  # camera is grayscale, converted


def test_class_folder_labels_from_folder_names(class_folder):
    src = ImageFolder(class_folder)
    assert src.class_names == ["alpha", "beta"]
    assert [(r.image_id, r.label) for r in src.records] == [
        ("alpha/img0.png", 0), ("alpha/img1.png", 1 - 1), ("beta/img0.png", 1), ("beta/img1.png", 1)]


def test_flat_folder_has_no_labels(tmp_path):
    make_image(tmp_path / "b.png")
    make_image(tmp_path / "a.jpg")
    (tmp_path / "notes.txt").write_text("x")
    src = ImageFolder(tmp_path)
    assert src.class_names is None
    assert [(r.image_id, r.label) for r in src.records] == [("a.jpg", -1), ("b.png", -1)]


def test_missing_root_and_empty_folder(tmp_path):
    with pytest.raises(DatasetError, match="does not exist.*dataset.root"):
        ImageFolder(tmp_path / "nope")
    with pytest.raises(DatasetError, match="dataset.root=PATH"):
        ImageFolder(None)
    with pytest.raises(DatasetError, match="No images"):
        ImageFolder(tmp_path)


def test_resize_null_crop_224_leaves_224_image_untouched():
    array = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    out = prepare_image(Image.fromarray(array), None, 224)
    np.testing.assert_array_equal(np.asarray(out), array)


def test_resize_then_crop_like_imagenet_c():
    img = Image.new("RGB", (400, 300))
    assert prepare_image(img, 256, 224).size == (224, 224)
    assert prepare_image(img, 256, None).size == (341, 256)
    assert prepare_image(img, None, None).size == (400, 300)
    assert prepare_image(Image.new("RGB", (100, 150)), None, 224).size == (224, 224)  # upscaled, not padded


def test_pairs_and_unreadable_file(tmp_path):
    make_image(tmp_path / "good.png", size=(64, 64))
    (tmp_path / "bad.jpg").write_text("not an image")
    ds = CorruptedPairs(ImageFolder(tmp_path), Cell("contrast", 2, 0), Inputs(resize=None, crop=None))
    batch = collate_pairs([ds[0], ds[1]])
    assert [it["image_id"] for it in batch["skipped"]] == ["bad.jpg"]
    assert "UnidentifiedImageError" in batch["skipped"][0]["error"]
    (group,) = batch["groups"]
    assert [it["image_id"] for it in group["items"]] == ["good.png"]
    assert group["clean"].shape == (1, 3, 64, 64) and group["clean"].dtype == torch.uint8
    assert not np.array_equal(group["clean"].numpy(), group["corrupted"].numpy())


def test_collate_stacks_each_image_size_and_the_cache_lookups():
    def item(index, size, cached):
        image = torch.full((3, *size), index, dtype=torch.uint8)
        return {"index": index, "image_id": f"im{index}", "label": index, "clean": image, "corrupted": image + 1,
                "cached_clean": cached}

    entry = {"q_global": np.float32(2.5), "q_local": np.ones((20, 20), np.float32),
             "probs": np.full(10, 0.1, np.float32), "logits": np.zeros(10, np.float32),
             "attribution": np.full((8, 6), 3.0, np.float32)}
    batch = collate_pairs([item(0, (8, 6), None), item(1, (4, 4), None), item(2, (8, 6), entry),
                           {"index": 3, "image_id": "bad", "label": 0, "error": "OSError: broken"}])
    assert [it["image_id"] for it in batch["skipped"]] == ["bad"]
    big, small = batch["groups"]
    assert [it["index"] for it in big["items"]] == [0, 2] and [it["index"] for it in small["items"]] == [1]
    assert set(big["items"][0]) == {"index", "image_id", "label"}  # the pixels travel stacked, once
    assert big["clean"].shape == (2, 3, 8, 6) and torch.equal(big["corrupted"][1], torch.full((3, 8, 6), 3))
    cached = big["cached_clean"]
    assert cached["found"].tolist() == [False, True]
    assert cached["q_global"].tolist() == [0.0, 2.5] and torch.equal(cached["attribution"][1], torch.full((8, 6), 3.0))
    assert small["cached_clean"]["found"].tolist() == [False] and "probs" not in small["cached_clean"]


def test_num_workers_auto_shares_the_usable_cores(monkeypatch):
    from iqa_saliency.data.loading import resolve_num_workers
    from iqa_saliency.errors import ConfigError

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(12)), raising=False)
    assert resolve_num_workers("auto") == 12
    assert resolve_num_workers("auto", processes=4) == 3
    assert resolve_num_workers("auto", processes=24) == 1  # never 0: decoding stays off the main process
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(64)), raising=False)
    assert resolve_num_workers("AUTO") == 16
    assert resolve_num_workers(3) == 3 and resolve_num_workers("0") == 0 and resolve_num_workers(None) == 0
    for bad in (-1, "many", 2.5):
        with pytest.raises(ConfigError, match=r"dataset.num_workers=.* Use a number of workers \(0 or more\) or auto"):
            resolve_num_workers(bad)


def test_an_interrupt_inside_compiled_code_is_not_a_skipped_image():
    """numba reports a Ctrl-C during its code as SystemError caused by KeyboardInterrupt: that stops the run."""
    def interrupted(image, name, severity, seed):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as exc:
            raise SystemError("CPUDispatcher(...) returned a result with an exception set") from exc

    def broken(image, name, severity, seed):
        raise SystemError("a real failure")

    source = SampleImages(["chelsea"])
    with pytest.raises(KeyboardInterrupt):
        CorruptedPairs(source, Cell("contrast", 2, 0), Inputs(resize=64, crop=64), corrupt_fn=interrupted)[0]
    item = CorruptedPairs(source, Cell("contrast", 2, 0), Inputs(resize=64, crop=64), corrupt_fn=broken)[0]
    assert item["error"] == "SystemError: a real failure"
