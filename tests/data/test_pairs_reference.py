"""The clean/corrupted pairs (data/pairs.py) against values known by construction: noise images whose centre crop
is a slice, a stand-in corruption that inverts the pixels and records what it was given, hashlib seeds and
stamps, exact messages."""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pytest
import torch
from PIL import Image

from iqa_saliency.data.pairs import CorruptedPairs, collate_pairs, crop_batch, crop_image
from iqa_saliency.data.protocol import Cell, Inputs
from iqa_saliency.data.sources import ImageFolder
from iqa_saliency.errors import ConfigError

RNG = np.random.default_rng(3)
WIDE = RNG.integers(0, 256, (64, 80, 3), dtype=np.uint8)  # H x W: its centre 48 x 48 is [8:56, 16:64]
SQUARE = RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)


def _seed(seed: int, image_id: str, corruption: str, severity: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}|{image_id}|{corruption}|{severity}".encode()).digest()[:4], "little")


class Invert:
    """Stands in for a corruption: 255 - pixels; records each call's (shape, name, severity, seed)."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def __call__(self, image: np.ndarray, name: str, severity: int, seed: int) -> np.ndarray:
        self.calls.append((image.shape, name, severity, seed))
        return 255 - image


@pytest.fixture
def source(tmp_path):
    for cls, name, pixels in (("a", "p.png", WIDE), ("b", "q.png", SQUARE)):
        (tmp_path / "data" / cls).mkdir(parents=True)
        Image.fromarray(pixels).save(tmp_path / "data" / cls / name)
    return ImageFolder(tmp_path / "data")


def _hwc(t: torch.Tensor) -> np.ndarray:
    return t.permute(1, 2, 0).numpy()


def test_crop_order_corrupts_the_centre_crop(source):
    invert = Invert()
    pairs = CorruptedPairs(source, Cell("contrast", 3, 7), Inputs(resize=None, crop=48), corrupt_fn=invert)
    assert len(pairs) == 2
    item = pairs[0]
    assert set(item) == {"index", "image_id", "label", "clean", "corrupted"}
    assert (item["index"], item["image_id"], item["label"]) == (0, "a/p.png", 0)
    np.testing.assert_array_equal(_hwc(item["clean"]), WIDE[8:56, 16:64])
    np.testing.assert_array_equal(_hwc(item["corrupted"]), 255 - WIDE[8:56, 16:64])
    assert item["clean"].dtype == torch.uint8
    assert invert.calls == [((48, 48, 3), "contrast", 3, _seed(7, "a/p.png", "contrast", 3))]
    assert pairs[1]["label"] == 1


def test_full_size_corrupts_the_decoded_image_then_crops(source):
    invert = Invert()
    pairs = CorruptedPairs(source, Cell("fog", 2, 1), Inputs(resize=None, crop=48, corrupt_at="full_size"),
                           labels=[5, 9], corrupt_fn=invert)
    item = pairs[0]
    assert (item["label"], set(item)) == (5, {"index", "image_id", "label", "clean", "corrupted"})
    np.testing.assert_array_equal(_hwc(item["clean"]), WIDE[8:56, 16:64])
    np.testing.assert_array_equal(_hwc(item["corrupted"]), 255 - WIDE[8:56, 16:64])
    assert invert.calls == [((64, 80, 3), "fog", 2, _seed(1, "a/p.png", "fog", 2))]
    assert pairs[1]["label"] == 9
    # resize before the corruption under full_size: 80 x 64 -> 40 x 32 (shorter side 32)
    small = CorruptedPairs(source, Cell("fog", 2, 1), Inputs(resize=32, crop=None, corrupt_at="full_size"),
                           corrupt_fn=invert)
    assert small[0]["clean"].shape == (3, 32, 40) and invert.calls[-1][0] == (32, 40, 3)
    # a clean cell is never decoded in full: the crop is "corrupted" as it is
    clean = CorruptedPairs(source, Cell("fog", 0, 1), Inputs(resize=None, crop=48, corrupt_at="full_size"),
                           corrupt_fn=invert)[0]
    assert invert.calls[-1][0] == (48, 48, 3)
    np.testing.assert_array_equal(_hwc(clean["corrupted"]), 255 - WIDE[8:56, 16:64])


def test_a_corruption_left_to_the_step_carries_the_seed_and_the_full_image(source):
    crop = CorruptedPairs(source, Cell("fog", 2, 4), Inputs(resize=None, crop=48), corrupt_fn=None)[0]
    assert set(crop) == {"index", "image_id", "label", "clean", "seed"}
    assert crop["seed"] == _seed(4, "a/p.png", "fog", 2)
    full = CorruptedPairs(source, Cell("fog", 2, 4), Inputs(resize=None, crop=48, corrupt_at="full_size"),
                          corrupt_fn=None)[0]
    assert set(full) == {"index", "image_id", "label", "clean", "seed", "full"}
    np.testing.assert_array_equal(_hwc(full["full"]), WIDE)
    np.testing.assert_array_equal(_hwc(full["clean"]), WIDE[8:56, 16:64])
    # a clean cell needs no step: the clean image is its own "corrupted" one
    clean = CorruptedPairs(source, Cell("fog", 0, 4), Inputs(resize=None, crop=48, corrupt_at="full_size"),
                           corrupt_fn=None)[0]
    assert "seed" not in clean and torch.equal(clean["corrupted"], clean["clean"])


def test_a_corruption_found_in_the_cache_arrives_corrupted(source):
    invert = Invert()
    full = CorruptedPairs(source, Cell("fog", 2, 4), Inputs(resize=None, crop=48, corrupt_at="full_size"),
                          corrupt_fn=None, corrupt_lookup=invert)[0]
    assert set(full) == {"index", "image_id", "label", "clean", "corrupted"}
    np.testing.assert_array_equal(_hwc(full["corrupted"]), 255 - WIDE[8:56, 16:64])
    assert invert.calls == [((64, 80, 3), "fog", 2, _seed(4, "a/p.png", "fog", 2))]
    missing = CorruptedPairs(source, Cell("fog", 2, 4), Inputs(resize=None, crop=48), corrupt_fn=None,
                             corrupt_lookup=lambda *a: None)[0]
    assert "corrupted" not in missing and missing["seed"] == _seed(4, "a/p.png", "fog", 2)


def test_a_cached_clean_image_of_the_right_shape_is_used_and_a_damaged_one_is_not(source, tmp_path):
    stamp = "sha256:" + hashlib.sha256((tmp_path / "data" / "a" / "p.png").read_bytes()).hexdigest()
    asked = []

    def cache(entry):
        def lookup(image_id, content):
            asked.append((image_id, content))
            return None if entry is None else {**entry}
        return lookup

    def pair(entry, crop=48):
        return CorruptedPairs(source, Cell("fog", 2, 0), Inputs(resize=None, crop=crop), corrupt_fn=Invert(),
                              cached_clean=cache(entry))[0]

    cached = np.full((48, 48, 3), 9, np.uint8)
    item = pair({"image": cached, "q_global": 1.5})
    assert asked == [("a/p.png", stamp)] and item["stamp"] == stamp
    assert item["cached_clean"] == {"q_global": 1.5}
    np.testing.assert_array_equal(_hwc(item["clean"]), cached)
    np.testing.assert_array_equal(_hwc(item["corrupted"]), 255 - cached)
    damaged = [np.full((47, 48, 3), 9, np.uint8), np.full((48, 48, 3), 9.0, np.float32),
               np.full((48, 48), 9, np.uint8), np.full((48, 48, 4), 9, np.uint8), np.full((48, 48, 1), 9, np.uint8)]
    for image in damaged:
        item = pair({"image": image, "q_global": 1.5})
        assert item["cached_clean"] is None
        np.testing.assert_array_equal(_hwc(item["clean"]), WIDE[8:56, 16:64])
    # without a crop any size from the 32 px minimum up is a prepared image; below it, not
    uncropped = pair({"image": np.full((32, 40, 3), 9, np.uint8)}, crop=None)
    assert uncropped["cached_clean"] == {} and uncropped["clean"].shape == (3, 32, 40)
    too_small = pair({"image": np.full((31, 40, 3), 9, np.uint8)}, crop=None)
    assert too_small["cached_clean"] is None
    np.testing.assert_array_equal(_hwc(too_small["clean"]), WIDE)
    nothing = pair(None)
    assert nothing["cached_clean"] is None and "stamp" in nothing


def test_images_below_the_minimum_are_skipped_with_the_fix(tmp_path):
    (tmp_path / "c").mkdir()
    Image.fromarray(np.zeros((20, 40, 3), np.uint8)).save(tmp_path / "c" / "s.png")
    Image.fromarray(np.zeros((32, 40, 3), np.uint8)).save(tmp_path / "c" / "t.png")
    src = ImageFolder(tmp_path)

    def error(inputs, index=0):
        return CorruptedPairs(src, Cell("fog", 2, 0), inputs, corrupt_fn=Invert())[index].get("error")

    assert error(Inputs(resize=None, crop=None)) == (
        "ValueError: image is 40x20 after resize/crop, below the 32 px minimum (set dataset.resize or dataset.crop "
        "to upscale small images)")
    assert error(Inputs(resize=None, crop=None, corrupt_at="full_size")) == (
        "ValueError: image is 40x20, below the 32 px minimum (set dataset.resize to upscale small images)")
    assert error(Inputs(resize=None, crop=None), 1) is None  # 32 is enough
    assert error(Inputs(resize=None, crop=None, corrupt_at="full_size"), 1) is None
    with pytest.raises(ValueError, match=r"^image is 20x20 after the crop, below the 32 px minimum$"):
        crop_image(np.zeros((40, 40, 3), np.uint8), 20, "upscale", None)
    assert crop_image(np.zeros((40, 40, 3), np.uint8), 32, "upscale", None).shape == (32, 32, 3)


def test_max_pixels_reaches_every_step(source):
    # 80 x 64 resized to a shorter side of 128 is 160 x 128 = 20480 pixels
    over = ("ValueError: 80x64 image would be 160x128 after resizing, over dataset.max_pixels=20000 (an extreme "
            "aspect ratio; raise dataset.max_pixels to evaluate it)")
    for corrupt_at in ("crop", "full_size"):
        inputs = Inputs(resize=128, crop=None, corrupt_at=corrupt_at, max_pixels=20_000)
        assert CorruptedPairs(source, Cell("fog", 2, 0), inputs, corrupt_fn=Invert())[0]["error"] == over
        fits = Inputs(resize=128, crop=None, corrupt_at=corrupt_at, max_pixels=20_480)
        assert "error" not in CorruptedPairs(source, Cell("fog", 2, 0), fits, corrupt_fn=Invert())[0]
    # the crop of a full-size image upscaled to 96: 96 x 120 = 11520 pixels
    crop_over = Inputs(resize=None, crop=96, corrupt_at="full_size", max_pixels=11_000)
    assert "11000" in CorruptedPairs(source, Cell("fog", 2, 0), crop_over, corrupt_fn=Invert())[0]["error"]
    with pytest.raises(ValueError, match="max_pixels=11000"):
        crop_image(WIDE, 96, "upscale", 11_000)


def test_unknown_choices_are_refused_naming_the_setting():
    src = ImageFolder.__new__(ImageFolder)
    with pytest.raises(ConfigError, match=re.escape("dataset.corrupt_at='before' is not valid. Use "
                                                    "dataset.corrupt_at=crop or full_size.")):
        CorruptedPairs(src, Cell("fog", 2, 0), Inputs(corrupt_at="before"), labels=[])
    with pytest.raises(ConfigError, match=re.escape("dataset.small='shrink' is not valid. Use "
                                                    "dataset.small=upscale or pad.")):
        CorruptedPairs(src, Cell("fog", 2, 0), Inputs(small="shrink"), labels=[])


def test_crop_batch_crops_like_crop_image():
    batch = torch.from_numpy(np.stack([WIDE, 255 - WIDE])).permute(0, 3, 1, 2)
    assert crop_batch(batch, Inputs(crop=None)) is batch
    out = crop_batch(batch, Inputs(crop=48))
    assert out.is_contiguous()
    np.testing.assert_array_equal(out.permute(0, 2, 3, 1).numpy(), np.stack([WIDE, 255 - WIDE])[:, 8:56, 16:64])
    # padded: 64 x 80 into 72 x 72 keeps rows 0-63 at 4-67 and columns 4-75 of the image, black rows around
    padded = crop_batch(batch, Inputs(crop=72, small="pad")).permute(0, 2, 3, 1).numpy()
    assert padded.shape == (2, 72, 72, 3)
    np.testing.assert_array_equal(padded[0, 4:68], WIDE[:, 4:76])
    assert not padded[:, :4].any() and not padded[:, 68:].any()
    # upscaled (a side below the crop): each image as crop_image makes it on the host
    up = crop_batch(batch, Inputs(crop=72)).permute(0, 2, 3, 1).numpy()
    for image, got in zip((WIDE, 255 - WIDE), up, strict=True):
        np.testing.assert_array_equal(got, crop_image(image, 72, "upscale", None))
    assert up.shape == (2, 72, 72, 3)


def test_collate_sets_aside_what_the_step_must_corrupt():
    def item(index, corrupted=True, full=False):
        it = {"index": index, "image_id": f"i{index}", "label": 0, "clean": torch.full((3, 4, 4), index,
                                                                                       dtype=torch.uint8)}
        if corrupted:
            it["corrupted"] = torch.full((3, 4, 4), 100 + index, dtype=torch.uint8)
        else:
            it["seed"] = index
        if full:
            it["full"] = torch.full((3, 6, 5), index, dtype=torch.uint8)
        return it

    (group,) = collate_pairs([item(0), item(1, corrupted=False)])["groups"]
    assert "corrupted" not in group and "full" not in group and "cached_clean" not in group
    assert torch.equal(group["found"][0], torch.full((3, 4, 4), 100, dtype=torch.uint8)) and group["found"][1] is None
    assert group["items"] == [{"index": 0, "image_id": "i0", "label": 0},
                              {"index": 1, "image_id": "i1", "label": 0, "seed": 1}]
    (group,) = collate_pairs([item(0, corrupted=False), item(1, corrupted=False, full=True)])["groups"]
    assert group["found"] == [None, None] and group["full"][0] is None
    assert torch.equal(group["full"][1], torch.full((3, 6, 5), 1, dtype=torch.uint8))
    (group,) = collate_pairs([item(2), item(3)])["groups"]
    assert torch.equal(group["corrupted"], torch.stack([torch.full((3, 4, 4), v, dtype=torch.uint8)
                                                        for v in (102, 103)]))
    assert "found" not in group and collate_pairs([])["groups"] == []


def test_the_none_corruption_is_clean_at_any_severity(source):
    invert = Invert()
    full = CorruptedPairs(source, Cell("none", 3, 0), Inputs(resize=None, crop=48, corrupt_at="full_size"),
                          corrupt_fn=invert)[0]
    assert invert.calls[-1][0] == (48, 48, 3)  # the crop, not the full image
    np.testing.assert_array_equal(_hwc(full["corrupted"]), 255 - WIDE[8:56, 16:64])
    step = CorruptedPairs(source, Cell("none", 3, 0), Inputs(resize=None, crop=48), corrupt_fn=None)[0]
    assert "seed" not in step and torch.equal(step["corrupted"], step["clean"])


def test_the_crop_order_pads_when_told_and_asks_the_source_for_the_resize(source):
    padded = _hwc(CorruptedPairs(source, Cell("fog", 2, 0), Inputs(resize=None, crop=72, small="pad"),
                                 corrupt_fn=Invert())[0]["clean"])
    np.testing.assert_array_equal(padded[4:68], WIDE[:, 4:76])
    assert not padded[:4].any() and not padded[68:].any()
    asked = []

    class Recording(ImageFolder):
        def load_reduced(self, record, min_side):  # noqa: ANN001, ANN201
            asked.append(min_side)
            return super().load_reduced(record, min_side)

    rec = Recording(source.root)
    CorruptedPairs(rec, Cell("fog", 2, 0), Inputs(resize=40, crop=32), corrupt_fn=Invert())[0]
    CorruptedPairs(rec, Cell("fog", 2, 0), Inputs(resize=48, crop=32, corrupt_at="full_size"), corrupt_fn=Invert())[0]
    assert asked == [40, 48]


def test_crop_batch_keeps_the_pixel_limit_on_the_host_path():
    batch = torch.from_numpy(np.stack([WIDE])).permute(0, 3, 1, 2)
    with pytest.raises(ValueError, match="max_pixels=11000"):  # 64 x 80 upscaled to 96: 96 x 120 pixels
        crop_batch(batch, Inputs(crop=96, max_pixels=11_000))
