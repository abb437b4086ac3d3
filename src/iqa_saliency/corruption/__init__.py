"""ImageNet-C corruptions (via imagecorruptions), seeded per image so reruns are identical."""

from __future__ import annotations

import hashlib
import inspect
from importlib import metadata
from typing import TYPE_CHECKING

from ..errors import ConfigError

if TYPE_CHECKING:
    import numpy as np

CLEAN = "none"
SEVERITIES = range(0, 6)
MIN_SIDE = 32  # imagecorruptions refuses smaller images
# imagecorruptions' get_corruption_names("all"), in its order (tested equal). Written out so that checking a name,
# `--help` and shell completion do not import the backend (scipy, scikit-image, OpenCV: seconds of start-up).
NAMES = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
         "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression",
         "speckle_noise", "gaussian_blur", "spatter", "saturate")


def corruption_names() -> list[str]:
    """All corruption names the backend offers (common + validation sets)."""
    return list(NAMES)


def backend_version() -> str:
    """Identity of the corruption backend, recorded with every run."""
    try:
        return f"imagecorruptions-imaug=={metadata.version('imagecorruptions-imaug')}"
    except metadata.PackageNotFoundError:
        return "imagecorruptions (unknown distribution)"


def check_corruption(name: str, severity: int) -> None:
    """Raise ConfigError for an unknown corruption name or a severity outside 0-5."""
    valid = corruption_names()
    if name != CLEAN and name not in valid:
        raise ConfigError(
            f"Unknown corruption '{name}'. Use one of: {CLEAN}, {', '.join(valid)}."
        )
    if isinstance(severity, bool) or not isinstance(severity, int) or severity not in SEVERITIES:
        raise ConfigError(f"Severity {severity!r} is out of range. Use an integer from 0 (clean) to 5.")
    if name == CLEAN and severity != 0:
        raise ConfigError(f"corruption=none has no severity {severity}. Use severity=0, or name a corruption.")


def is_clean(name: str, severity: int) -> bool:
    """True when the cell leaves images untouched."""
    return name == CLEAN or severity == 0


def image_seed(seed: int, image_id: str, corruption: str, severity: int) -> int:
    """A stable 32-bit seed for one (image, corruption, severity) under a run seed."""
    key = f"{seed}|{image_id}|{corruption}|{severity}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:4], "little")


def _accepts_seed(name: str) -> bool:
    import imagecorruptions

    return "seed" in inspect.signature(imagecorruptions.corruption_dict[name]).parameters


def apply_corruption(image: np.ndarray, name: str, severity: int, seed: int) -> np.ndarray:
    """Corrupt an HxWx3 uint8 image; severity 0 or name 'none' returns it unchanged."""
    import numpy as np
    from imagecorruptions import corrupt

    if is_clean(name, severity):
        return image
    if min(image.shape[:2]) < MIN_SIDE:
        raise ValueError(f"image is {image.shape[1]}x{image.shape[0]}, below the {MIN_SIDE} px minimum")
    # The backend draws from numpy's global generator (and numba's for glass_blur);
    # seeding it here, in the worker that runs this image, makes the result repeatable.
    np.random.seed(seed)
    kwargs = {"seed": seed} if _accepts_seed(name) else {}
    out = corrupt(image, severity=severity, corruption_name=name, **kwargs)
    return np.ascontiguousarray(out[: image.shape[0], : image.shape[1]], dtype=np.uint8)
