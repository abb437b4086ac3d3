"""Decoding and preparing images against hand-computed values: the pixel limit's arithmetic, the modes without a
fixed range, and the resize / crop / pad sizes of the ImageNet-C protocol."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from iqa_saliency.data.images import check_pixels


@pytest.mark.parametrize(("size", "short_side", "limit", "after"), [
    ((1, 300), 256, 1_000_000, "256x76800"),  # a 1 px side is scaled too: 256/1 = 256 times
    ((300, 2), 256, 5_000_000, "38400x256"),  # 300 * 128 = 38400
    ((100, 50), None, 4_999, "100x50"),  # no resize: the size itself against the limit
])
def test_the_pixel_limit_scales_the_shorter_side(size, short_side, limit, after):
    with pytest.raises(ValueError, match=rf"^{size[0]}x{size[1]} image would be {after} after resizing, over "
                                         rf"dataset\.max_pixels={limit} \(an extreme aspect ratio; raise "
                                         r"dataset\.max_pixels to evaluate it\)$"):
        check_pixels(size, short_side, limit)


def test_sizes_within_the_limit_pass():
    check_pixels((100, 50), None, 5_000)  # exactly at the limit
    check_pixels((0, 10), 256, 1_000)  # an empty image is not scaled (no division by its zero side)
    check_pixels((300, 2), 256, 38_400 * 256)
    check_pixels((10**6, 10**6), 256, None)  # no limit


@pytest.mark.parametrize(("mode", "values", "expected"), [
    ("I", [[0, 100, 200, 255]], [[0, 100, 200, 255]]),  # 32-bit integers within 0-255: read as 8-bit
    ("I", [[0, 256, 1000, 65535]], [[0, 1, 4, 255]]),  # above 255: the 16-bit range, round(v / 65535 * 255)
    ("I", [[-5, 70000, 0, 128]], [[0, 255, 0, 0]]),  # clipped to 0..65535 (128 / 65535 * 255 = 0.5 -> 0)
    ("F", [[0.4, 127.6, 255.0, -3.0]], [[0, 128, 255, 0]]),  # floats within 0-255: rounded
    ("F", [[300.0, 0.0, 65535.0, 1000.0]], [[1, 0, 255, 4]]),
])
def test_modes_without_a_fixed_range_are_scaled_to_8_bit(mode, values, expected):
    from iqa_saliency.data.images import to_rgb

    array = np.array(values, dtype=np.int32 if mode == "I" else np.float32)
    got = to_rgb(Image.fromarray(array, mode))
    assert got.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(got), np.repeat(np.array(expected, np.uint8)[..., None], 3, axis=2))


@pytest.mark.parametrize(("mode", "dtype"), [("I;16", "<u2"), ("I;16L", "<u2"), ("I;16B", ">u2")])
def test_16_bit_modes_use_the_16_bit_range(mode, dtype):
    from iqa_saliency.data.images import to_rgb

    image = Image.frombytes(mode, (4, 1), np.array([[0, 200, 32768, 65535]], dtype=dtype).tobytes())
    # 200 / 65535 * 255 = 0.78 -> 1 even though every value but one is below 256; 32768 -> 127.5 -> 128
    got = to_rgb(image)
    assert got.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(got), np.repeat(np.array([[0, 1, 128, 255]], np.uint8)[..., None], 3, 2))


@pytest.mark.parametrize("mode", ["P", "PA"])
def test_palette_transparency_is_composited_on_white(mode):
    from iqa_saliency.data.images import to_rgb

    palette = [10, 20, 30, 200, 100, 50] + [0] * (256 * 3 - 6)
    if mode == "P":
        image = Image.fromarray(np.array([[0, 1]], np.uint8), "P")
        image.putpalette(palette)
        image.info["transparency"] = 1  # palette entry 1 fully transparent: white shows
        expected = [[[10, 20, 30], [255, 255, 255]]]
    else:
        image = Image.new("PA", (2, 1))
        image.putpalette(palette)
        image.putdata([(0, 255), (1, 0)])
        expected = [[[10, 20, 30], [255, 255, 255]]]
    np.testing.assert_array_equal(np.asarray(to_rgb(image)), expected)
    opaque = Image.fromarray(np.array([[0, 1]], np.uint8), "P")
    opaque.putpalette(palette)  # no transparency: the palette's colours
    np.testing.assert_array_equal(np.asarray(to_rgb(opaque)), [[[10, 20, 30], [200, 100, 50]]])


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_a_png_colour_key_is_composited_on_white(tmp_path, mode):
    """A grayscale or RGB PNG whose tRNS chunk names one colour transparent: that colour shows white, as every other
    kind of transparency does (the other pixels keep their values)."""
    from iqa_saliency.data.images import to_rgb

    values = np.array([[0, 7, 200]], np.uint8)
    pixels = values if mode == "L" else np.repeat(values[..., None], 3, 2)
    key = 7 if mode == "L" else (7, 7, 7)
    Image.fromarray(pixels, mode).save(tmp_path / "keyed.png", transparency=key)
    with Image.open(tmp_path / "keyed.png") as image:
        assert image.mode == mode and "transparency" in image.info
        got = np.asarray(to_rgb(image))
    np.testing.assert_array_equal(got, [[[0, 0, 0], [255, 255, 255], [200, 200, 200]]])


@pytest.mark.parametrize(("w", "h", "left", "top"), [(40, 30, 12, 17), (41, 31, 11, 16)])
def test_pad_mode_centres_a_small_image_on_black(w, h, left, top):
    # torchvision's CenterCrop: (crop - side) // 2 before, the rest after
    from iqa_saliency.data.images import prepare_image

    rgb = np.random.default_rng(w).integers(1, 256, (h, w, 3), dtype=np.uint8)
    got = np.asarray(prepare_image(Image.fromarray(rgb), None, 64, small="pad"))
    expected = np.zeros((64, 64, 3), np.uint8)
    expected[top:top + h, left:left + w] = rgb
    np.testing.assert_array_equal(got, expected)


def test_an_image_already_at_the_sizes_is_not_resampled():
    from iqa_saliency.data.images import prepare_image

    rgb = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    np.testing.assert_array_equal(np.asarray(prepare_image(Image.fromarray(rgb), 40, None)), rgb)
    # shorter side already 40, crop 40: the centre 40 columns, offset (50 - 40) / 2 = 5
    np.testing.assert_array_equal(np.asarray(prepare_image(Image.fromarray(rgb), 40, 40)), rgb[:, 5:45])
    # nothing to do at all: the very image
    square = Image.fromarray(rgb[:, :40])
    assert prepare_image(square, 40, 40) is square


def _gradient(w: int, h: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx * 255 // (w - 1), yy * 255 // (h - 1), (xx + yy) % 256], axis=-1).astype(np.uint8)


def test_a_large_jpeg_is_drafted_to_the_smallest_scale_above_the_side(tmp_path, monkeypatch, caplog):
    import logging

    from iqa_saliency.data import images

    path = tmp_path / "large.jpg"
    Image.fromarray(_gradient(400, 300)).save(path, quality=95)
    monkeypatch.setattr(images, "LARGE_PIXELS", 1_000)  # 400 x 300 counts as large
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 123_456)  # a value of this test's own: restored after each open
    with caplog.at_level(logging.WARNING):
        # scale 300 // 100 = 3 asks for >= 133x100; JPEG drafts by 1/2, 1/4, 1/8: 1/2 (200x150) is the smallest
        assert images.open_image(path, 100).size == (200, 150)
        assert images.open_image(path, 150).size == (200, 150)  # 300 // 150 = 2: exactly half
        assert images.open_image(path, 300).size == (400, 300)  # 300 // 300 = 1: full size
        assert images.open_image(path, 1000).size == (400, 300)  # a side above the image's: scale 1, never 0
    assert [r.getMessage() for r in caplog.records][:2] == [
        f"{path} is 400x300; decoded at 200x150 (JPEG draft) before resizing"] * 2
    assert images.open_image(path, None).size == (400, 300)  # no side asked: a full decode (below MAX_PIXELS)
    assert Image.MAX_IMAGE_PIXELS == 123_456  # PIL's own limit restored
    monkeypatch.setattr(images, "LARGE_PIXELS", 400 * 300)  # exactly at the threshold: not large, not drafted
    assert images.open_image(path, 100).size == (400, 300)
    png = tmp_path / "large.png"
    Image.fromarray(_gradient(400, 300)).save(png)
    assert images.open_image(png, 100).size == (400, 300)  # not a JPEG: decoded in full
    monkeypatch.setattr(images, "LARGE_PIXELS", 1_000)
    monkeypatch.setattr(images, "MAX_PIXELS", 400 * 300)  # a non-JPEG exactly at the limit is decoded
    assert images.open_image(png, 100).size == (400, 300)
    monkeypatch.setattr(images, "MAX_PIXELS", 400 * 300 - 1)
    with pytest.raises(ValueError, match=r"^400x300 image is over the 119,999 pixel limit for a non-JPEG file$"):
        images.open_image(png, 100)


def test_imagefolder_decoding_keeps_the_stored_pixels(tmp_path):
    from iqa_saliency.data.images import open_image

    rgb = _gradient(64, 48)
    rgba = np.dstack([rgb, np.tile(np.linspace(0, 255, 64).astype(np.uint8), (48, 1))])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    # as torchvision's loader: convert("RGB") drops alpha, the colour under a transparent pixel shows
    np.testing.assert_array_equal(np.asarray(open_image(tmp_path / "a.png", decode="imagefolder")), rgb)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(rgb).save(tmp_path / "r.jpg", quality=95, exif=exif)
    assert open_image(tmp_path / "r.jpg", decode="imagefolder").size == (64, 48)  # stored, not turned
    assert open_image(tmp_path / "r.jpg").size == (48, 64)  # oriented: turned
    empty = tmp_path / "e.png"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"^empty file \(0 bytes\)$"):
        open_image(empty)


def test_choices_and_the_truncation_switch_name_their_fix(monkeypatch, tmp_path):
    from iqa_saliency.data import images
    from iqa_saliency.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        images.check_choice("dataset.small", "crop", images.SMALL_MODES)
    assert str(info.value) == "dataset.small='crop' is not valid. Use dataset.small=upscale or pad."
    Image.fromarray(_gradient(8, 8)).save(tmp_path / "a.png")
    monkeypatch.setattr("PIL.ImageFile.LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(RuntimeError) as info:
        images.open_image(tmp_path / "a.png")
    assert str(info.value) == "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is on; truncated files would load silently"


def test_torchvision_decodes_only_full_size_jpegs(tmp_path, monkeypatch):
    from iqa_saliency.data import images

    calls = []
    marker = Image.new("RGB", (5, 5), (1, 2, 3))  # what the stand-in decoder returns: where it was used shows
    monkeypatch.setattr(images, "_torchvision_jpeg", lambda path: calls.append(str(path)) or marker)
    jpeg, png = tmp_path / "a.jpg", tmp_path / "a.png"
    Image.fromarray(_gradient(400, 300)).save(jpeg, quality=95)
    Image.fromarray(_gradient(400, 300)).save(png)
    assert images.open_image(jpeg, decode="torchvision") is marker and calls == [str(jpeg)]
    assert images.open_image(png, decode="torchvision").size == (400, 300)  # not a JPEG: PIL
    assert images.open_image(jpeg).size == (400, 300) and images.open_image(jpeg, decode="imagefolder").size == (
        400, 300)
    monkeypatch.setattr(images, "LARGE_PIXELS", 1_000)  # drafted: PIL's reduced decode, not torchvision's
    assert images.open_image(jpeg, 100, decode="torchvision").size == (200, 150)
    assert calls == [str(jpeg)]
    monkeypatch.setattr(images, "_torchvision_jpeg", lambda path: None)  # torchvision cannot: PIL decodes it
    assert images.open_image(jpeg, decode="torchvision").size == (400, 300)


def test_rgb_is_passed_through_and_16_bit_rounding_at_the_half():
    from iqa_saliency.data.images import to_rgb

    rgb = Image.fromarray(_gradient(4, 3))
    assert to_rgb(rgb) is rgb
    # 33025 / 65535 * 255 = 128.50195 -> 129 (over 65536 it would be 128.49998 -> 128)
    image = Image.frombytes("I;16", (1, 1), np.array([[33025]], dtype="<u2").tobytes())
    assert np.asarray(to_rgb(image))[0, 0].tolist() == [129, 129, 129]
    # a 32-bit image whose maximum is 256 is read in the 16-bit range: 256 / 257 = 0.996 -> 1, 255 -> 1
    wide = to_rgb(Image.fromarray(np.array([[0, 256, 128, 255]], np.int32), "I"))
    assert np.asarray(wide)[..., 0].tolist() == [[0, 1, 0, 1]]


def test_upscaling_a_thin_image_to_the_crop_is_checked_against_the_limit():
    from iqa_saliency.data.images import prepare_image

    thin = Image.fromarray(np.zeros((300, 2, 3), np.uint8))  # 2 x 300: upscaled to 224 x 33600 = 7.5 million
    with pytest.raises(ValueError, match=r"^2x300 image would be 224x33600 after resizing, over "
                                         r"dataset\.max_pixels=1000000 "):
        prepare_image(thin, None, 224, max_pixels=1_000_000)
    assert prepare_image(thin, None, 224, max_pixels=224 * 33600).size == (224, 224)
