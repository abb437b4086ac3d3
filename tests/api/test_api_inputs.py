"""The Python API refuses what it cannot evaluate right (issue 22), each in one line naming the fix, as a
ValueError: float pixels outside [0, 1] (0-255 floats would be clipped to white), NaN or infinite pixels, integer
types other than uint8, shapes that are not images, labels that are not classes. Files are read in the run: a
bad file in a batch is listed as skipped with its reason, and the others are evaluated.

The cases are generated from the rule (every float dtype x container x out-of-range kind), not listed by hand."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from helpers.images import make_image
from PIL import Image

from iqa_saliency.api import InMemoryImages, evaluate_images
from iqa_saliency.errors import InputError

H, W = 20, 24
FLOAT_DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
BAD_VALUES = {  # value written into one pixel, and what the message must say
    "0-255": (255.0, "divide by 255"),
    "just over 1": (1.0 + 1e-2, "outside [0, 1]"),
    "negative": (-0.5, "outside [0, 1]"),
    "nan": (float("nan"), "NaN or infinite"),
    "inf": (float("inf"), "NaN or infinite"),
    "-inf": (float("-inf"), "NaN or infinite"),
}


def _tensor(dtype: torch.dtype, layout: str) -> torch.Tensor:
    base = torch.rand(3, H, W, generator=torch.Generator().manual_seed(0)).to(dtype)
    if layout == "batch":
        return torch.stack([base, base])
    return base


def _one_line_value_error(make, *needles: str) -> str:
    with pytest.raises(ValueError) as caught:
        make()
    assert isinstance(caught.value, InputError)
    message = str(caught.value)
    assert "\n" not in message and message.rstrip().endswith(".")
    for needle in needles:
        assert needle in message, message
    return message


@pytest.mark.parametrize(("dtype", "container", "bad"),
                         [case for case in itertools.product(FLOAT_DTYPES, ["tensor", "batch", "array"], BAD_VALUES)
                          if case[:2] != (torch.bfloat16, "array")])  # numpy has no bfloat16
def test_float_pixels_outside_0_1_or_not_finite_are_refused(dtype, container, bad):
    value, needle = BAD_VALUES[bad]
    if container == "array":
        image = _tensor(dtype, "single").permute(1, 2, 0).numpy().copy()
        image[3, 4, 1] = value
        images, name = [image], "image_000"
    else:
        images = _tensor(dtype, "batch" if container == "batch" else "single")
        images[(-1, 1, 3, 4) if container == "batch" else (1, 3, 4)] = value
        name = "image_001" if container == "batch" else "image_000"
    _one_line_value_error(lambda: InMemoryImages(images), name, needle)


def test_what_read_image_float_gives_is_refused_and_the_uint8_or_scaled_image_accepted():
    rng = np.random.default_rng(1)
    u8 = torch.from_numpy(rng.integers(0, 256, size=(3, H, W), dtype=np.uint8))
    _one_line_value_error(lambda: InMemoryImages([u8.float()]), "divide by 255")
    for good in (u8, u8.float() / 255.0, u8.permute(1, 2, 0).numpy(), u8.double() / 255.0):
        source = InMemoryImages([good])
        np.testing.assert_array_equal(np.asarray(source.load(source.records[0])), u8.permute(1, 2, 0).numpy())
    # the edges of the range are images
    for edge in (torch.zeros(3, H, W), torch.ones(3, H, W)):
        InMemoryImages([edge])


INT_DTYPES = [np.int8, np.int16, np.int32, np.int64, np.uint16, np.uint32, np.bool_]


@pytest.mark.parametrize(("dtype", "container"),
                         [*[(d, "array") for d in INT_DTYPES],
                          *[(d, "tensor") for d in INT_DTYPES if d not in (np.uint16, np.uint32)]])
def test_integer_pixels_other_than_uint8_are_refused(dtype, container):
    array = np.ones((H, W, 3), dtype=dtype)
    if container == "tensor":
        image = torch.from_numpy(array).permute(2, 0, 1)
    else:
        image = array
    _one_line_value_error(lambda: InMemoryImages([image]), "uint8")


@pytest.mark.parametrize("shape", [(H, W, 2), (H, W, 5), (2, H, W), (5, H, W), (H,), (1, 1, H, W, 3), (0, W, 3),
                                   (H, 0, 3)])
def test_shapes_that_are_not_images_are_refused(shape):
    _one_line_value_error(lambda: InMemoryImages([np.zeros(shape, np.uint8)]), "shape")


@pytest.mark.parametrize("label", [1000, 5000, -2, -1000, 2.5, 3.0, True, "281", None])
def test_labels_that_are_not_imagenet_classes_are_refused(label):
    _one_line_value_error(lambda: InMemoryImages([np.zeros((H, W, 3), np.uint8)], labels=[label]), "Label")


@pytest.mark.parametrize("label", [0, 999, -1, np.int64(281)])
def test_imagenet_class_indices_are_labels(label):
    source = InMemoryImages([np.zeros((H, W, 3), np.uint8)], labels=[label])
    assert source.records[0].label == int(label)


def test_pil_images_and_paths_are_not_checked_as_arrays(tmp_path):
    InMemoryImages([Image.new("I;16", (W, H)), Image.new("F", (W, H)), tmp_path / "not_there.png"])


@pytest.mark.slow
def test_a_bad_file_in_a_batch_is_skipped_with_its_reason_and_the_others_evaluated(tmp_path):
    good = [make_image(tmp_path / f"ok{k}.png", size=(72, 64), seed=k) for k in range(2)]
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    result = evaluate_images([good[0], tmp_path / "broken.png", tmp_path / "missing.png", good[1]],
                             corruption="contrast", severity=1, pretrained=False,
                             overrides=["dataset.resize=64", "dataset.crop=64", "dataset.num_workers=0"])
    assert list(result.rows["image"]) == ["ok0.png", "ok1.png"]
    assert list(result.skipped["image"]) == ["broken.png", "missing.png"]
    assert all(isinstance(r, str) and r for r in result.skipped["reason"])
    assert result.summary["n_skipped"] == 2
