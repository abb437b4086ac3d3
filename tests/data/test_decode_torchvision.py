"""dataset.decode=torchvision (issue 13): JPEGs decoded by torchvision.io.decode_jpeg give PIL's pixels (EXIF
rotation applied as `oriented` does); other files are decoded as `oriented`."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from skimage import data

from iqa_saliency.data.images import open_image


@pytest.mark.parametrize(("quality", "subsampling", "orientation"), [(75, 2, 1), (95, 0, 6), (90, 2, 8)])
def test_torchvision_jpeg_decoding_equals_pil(tmp_path, quality, subsampling, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "chelsea.jpg"
    Image.fromarray(data.chelsea()).save(path, quality=quality, subsampling=subsampling, exif=exif.tobytes())
    pil = np.asarray(open_image(path, decode="oriented"))
    got = np.asarray(open_image(path, decode="torchvision"))
    np.testing.assert_array_equal(got, pil)


def test_torchvision_decoding_of_a_png_is_the_oriented_one(tmp_path):
    path = tmp_path / "rgba.png"
    rgba = np.zeros((40, 48, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 128
    Image.fromarray(rgba).save(path)
    np.testing.assert_array_equal(np.asarray(open_image(path, decode="torchvision")),
                                  np.asarray(open_image(path, decode="oriented")))
