"""Which random corruption each image gets: the per-image seed restated from its definition, the corrupted
pixels against imagecorruptions itself under that seed, and, through the dataset that feeds a run, distinct
images getting distinct draws while the same image and seed get the same one."""

from __future__ import annotations

import inspect

import imagecorruptions
import numpy as np
import pytest
from helpers import reference as ref
from PIL import Image

from iqa_saliency.corruption import apply_corruption, image_seed
from iqa_saliency.data.pairs import CorruptedPairs
from iqa_saliency.data.protocol import Cell, Inputs
from iqa_saliency.data.sources import ImageRecord, ImageSource

IMAGE = np.random.default_rng(0).integers(40, 216, size=(48, 64, 3), dtype=np.uint8)


def _imagecorruptions(image: np.ndarray, name: str, severity: int, seed: int) -> np.ndarray:
    """imagecorruptions' own output under `seed`: numpy's global generator seeded, and `seed=` where it takes one."""
    np.random.seed(seed)
    takes_seed = "seed" in inspect.signature(imagecorruptions.corruption_dict[name]).parameters
    return imagecorruptions.corrupt(image, severity=severity, corruption_name=name,
                                    **({"seed": seed} if takes_seed else {}))


@pytest.mark.parametrize(("run_seed", "image_id", "corruption", "severity"), [
    (0, "chelsea", "gaussian_noise", 3), (7, "cls/img 1.png", "impulse_noise", 5), (0, "chelsea", "shot_noise", 3),
    (0, "chelsea", "gaussian_noise", 2), (1, "chelsea", "gaussian_noise", 3)])
def test_image_seed_is_the_sha256_definition(run_seed, image_id, corruption, severity):
    assert image_seed(run_seed, image_id, corruption, severity) == ref.corruption_seed(
        run_seed, image_id, corruption, severity)


def test_image_seed_hand_value():
    # sha256(b"0|chelsea|gaussian_noise|3")[:4], little-endian
    import hashlib

    digest = hashlib.sha256(b"0|chelsea|gaussian_noise|3").digest()
    assert image_seed(0, "chelsea", "gaussian_noise", 3) == digest[0] | digest[1] << 8 | digest[2] << 16 | (
        digest[3] << 24)


@pytest.mark.parametrize(("name", "severity"), [("gaussian_noise", 2), ("impulse_noise", 4), ("shot_noise", 1),
                                                 ("contrast", 3)])
def test_apply_corruption_equals_imagecorruptions_under_the_seed(name, severity):
    seed = ref.corruption_seed(0, "x", name, severity)
    got = apply_corruption(IMAGE.copy(), name, severity, seed)
    np.testing.assert_array_equal(got, _imagecorruptions(IMAGE.copy(), name, severity, seed))
    assert got.dtype == np.uint8 and got.shape == IMAGE.shape


def test_clean_cells_return_the_image_unchanged():
    assert apply_corruption(IMAGE, "none", 0, 1) is IMAGE
    assert apply_corruption(IMAGE, "gaussian_noise", 0, 1) is IMAGE


class _SameImage(ImageSource):
    """Several records that all decode to the same pixels: only their ids differ."""

    def __init__(self, ids: list[str]) -> None:
        self.records = [ImageRecord(i, -1) for i in ids]

    def load(self, record: ImageRecord) -> Image.Image:
        return Image.fromarray(IMAGE)


@pytest.mark.parametrize("name", ["gaussian_noise", "impulse_noise"])
def test_run_dataset_seeds_each_image_by_its_id(name):
    ids = ["a", "b", "c"]
    pairs = CorruptedPairs(_SameImage(ids), Cell(name, 3, 5), Inputs(resize=None, crop=None))
    out = [pairs[i]["corrupted"].permute(1, 2, 0).numpy() for i in range(len(ids))]
    for image_id, corrupted in zip(ids, out, strict=True):
        want = _imagecorruptions(IMAGE.copy(), name, 3, ref.corruption_seed(5, image_id, name, 3))
        np.testing.assert_array_equal(corrupted, want)
    assert not np.array_equal(out[0], out[1]) and not np.array_equal(out[1], out[2])
    again = CorruptedPairs(_SameImage(ids[::-1]), Cell(name, 3, 5), Inputs(resize=None, crop=None))
    np.testing.assert_array_equal(again[2]["corrupted"].permute(1, 2, 0).numpy(), out[0])  # "a": same draw
    other_seed = CorruptedPairs(_SameImage(ids), Cell(name, 3, 6), Inputs(resize=None, crop=None))
    assert not np.array_equal(other_seed[0]["corrupted"].permute(1, 2, 0).numpy(), out[0])
    np.testing.assert_array_equal(pairs[0]["clean"].permute(1, 2, 0).numpy(), IMAGE)


def test_clean_names_and_sizes_at_the_limit():
    assert apply_corruption(IMAGE, "none", 3, 1) is IMAGE  # 'none' is clean whatever the severity
    tall = np.random.default_rng(1).integers(0, 256, size=(70, 32, 3), dtype=np.uint8)  # taller than wide
    seed = ref.corruption_seed(0, "tall", "gaussian_noise", 2)
    got = apply_corruption(tall.copy(), "gaussian_noise", 2, seed)
    np.testing.assert_array_equal(got, _imagecorruptions(tall.copy(), "gaussian_noise", 2, seed))  # 32 px works
    assert got.shape == (70, 32, 3)
    with pytest.raises(ValueError, match=r"^image is 40x31, below the 32 px minimum$"):
        apply_corruption(np.zeros((31, 40, 3), np.uint8), "gaussian_noise", 2, 0)
