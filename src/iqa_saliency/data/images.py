"""Decoding an image file safely as RGB, and the resize + centre crop of the ImageNet-C protocol."""

from __future__ import annotations

import logging
import os

import numpy as np
from PIL import Image, ImageFile, ImageOps
from torchvision.transforms import functional as TF

from ..errors import ConfigError

log = logging.getLogger(__name__)

# Above LARGE_PIXELS a JPEG is decoded at a reduced scale (draft) before resizing, so memory stays bounded;
# a non-JPEG must be decoded in full, so above MAX_PIXELS it is skipped rather than risk exhausting memory.
LARGE_PIXELS = 40_000_000
MAX_PIXELS = 200_000_000
# dataset.max_pixels: the most pixels an image may have after resize/crop (or at any step between). A 20000x2 PNG
# resized to a 256 px shorter side would be 2.56 million x 256 px (2 GB); such an image is skipped instead.
MAX_PREPARED_PIXELS = 50_000_000

# dataset.decode: how a file becomes RGB.
#   oriented:    EXIF orientation applied, transparency composited onto white, 16-bit scaled to 8-bit (to_rgb)
#   imagefolder: what torchvision's ImageFolder loader (and so the original study) does: PIL convert("RGB") as
#                stored -- no EXIF rotation, alpha dropped (the colour under a transparent pixel shows)
#   torchvision: a JPEG decoded by torchvision.io.decode_jpeg (libjpeg-turbo, EXIF rotation applied), any other
#                file as `oriented`; the same pixels as PIL on the bundled samples (see docs/backends.md)
DECODE_MODES = ("oriented", "imagefolder", "torchvision")
# dataset.small: what happens to an image whose shorter side is below the crop
#   upscale: resize the shorter side to the crop first (no borders)
#   pad:     zero (black) padding around it, as torchvision's CenterCrop does (the original study)
SMALL_MODES = ("upscale", "pad")


def check_choice(key: str, value: str, choices: tuple[str, ...]) -> str:
    """`value` if it is one of `choices`, else a ConfigError naming the key and the choices."""
    if value not in choices:
        raise ConfigError(f"{key}={value!r} is not valid. Use {key}={' or '.join(choices)}.")
    return value


def open_image(path: str | os.PathLike, min_side: int | None = None, decode: str = "oriented") -> Image.Image:
    """Decode an image file as RGB (see DECODE_MODES); raise ValueError/OSError if it is unusable.

    A truncated file is an error (never a partly grey image). A file over LARGE_PIXELS is decoded at
    the smallest JPEG draft scale whose shorter side stays >= `min_side`; over MAX_PIXELS a non-JPEG is refused.
    """
    if ImageFile.LOAD_TRUNCATED_IMAGES:  # some library switched it on process-wide; we do not accept that
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is on; truncated files would load silently")
    if os.path.getsize(path) == 0:
        raise ValueError("empty file (0 bytes)")
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # the size is checked below, against our own limits
    try:
        im = Image.open(path)
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    with im:
        w, h = im.size
        if w * h > LARGE_PIXELS:
            if im.format == "JPEG" and min_side:
                scale = max(1, min(w, h) // min_side)
                im.draft(None, (max(1, w // scale), max(1, h // scale)))
                log.warning("%s is %dx%d; decoded at %dx%d (JPEG draft) before resizing", path, w, h, *im.size)
            elif w * h > MAX_PIXELS:
                raise ValueError(f"{w}x{h} image is over the {MAX_PIXELS:,} pixel limit for a non-JPEG file")
        if decode == "torchvision" and im.format == "JPEG" and im.size == (w, h):  # not drafted
            decoded = _torchvision_jpeg(path)
            if decoded is not None:
                return decoded
        im.load()
        if decode == "imagefolder":
            return im.convert("RGB")
        return to_rgb(ImageOps.exif_transpose(im))


def _torchvision_jpeg(path: str | os.PathLike) -> Image.Image | None:
    """A JPEG decoded by torchvision (RGB, EXIF orientation applied), or None where it cannot (then PIL does)."""
    from torchvision.io import ImageReadMode, decode_jpeg, read_file

    try:
        rgb = decode_jpeg(read_file(str(path)), mode=ImageReadMode.RGB, apply_exif_orientation=True)
    except RuntimeError:  # e.g. a CMYK or an arithmetic-coded JPEG
        return None
    return Image.fromarray(rgb.permute(1, 2, 0).numpy())


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode (L, LA, P, RGBA, I;16, CMYK, ...) to 8-bit RGB."""
    keyed = image.mode in ("P", "L", "RGB") and "transparency" in image.info  # a PNG tRNS colour key
    if image.mode == "RGB" and not keyed:
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        # 16-bit modes span 0-65535 whatever the content; 32-bit I/F have no fixed range (values > 255 -> 16-bit)
        peak = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        array = np.clip(array, 0, peak)
        return Image.fromarray(np.round(array / peak * 255).astype(np.uint8)).convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or keyed:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def check_pixels(size: tuple[int, int], short_side: int | None, max_pixels: int | None) -> None:
    """Raise ValueError when resizing `size` to a shorter side of `short_side` would exceed `max_pixels`."""
    if max_pixels is None:
        return
    w, h = size
    if short_side is not None and min(w, h) > 0:
        scale = short_side / min(w, h)
        w, h = max(short_side, round(w * scale)), max(short_side, round(h * scale))
    if w * h > max_pixels:
        raise ValueError(f"{size[0]}x{size[1]} image would be {w}x{h} after resizing, over dataset.max_pixels="
                         f"{max_pixels} (an extreme aspect ratio; raise dataset.max_pixels to evaluate it)")


def prepare_image(image: Image.Image, resize: int | None, crop: int | None, small: str = "upscale",
                  max_pixels: int | None = MAX_PREPARED_PIXELS) -> Image.Image:
    """Resize the shorter side to `resize`, then centre-crop `crop` x `crop`, as ImageNet-C does.

    An image with a side below `crop` is upscaled first (small="upscale") or zero-padded by the crop
    (small="pad": torchvision CenterCrop, (crop - s) // 2 before and the rest after; offsets round half to even).
    A step that would make more than `max_pixels` pixels raises ValueError before it allocates them.
    """
    if resize is not None and min(image.size) != resize:
        check_pixels(image.size, resize, max_pixels)
        image = TF.resize(image, resize, interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    if crop is not None:
        if min(image.size) < crop and small != "pad":
            check_pixels(image.size, crop, max_pixels)
            # Padding would add black borders the models would see; upscaling keeps the content.
            image = TF.resize(image, crop, interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
        if image.size != (crop, crop):
            image = TF.center_crop(image, [crop, crop])
    return image
