"""The dataset that yields each image clean and corrupted, and the collate that stacks them per size."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..caches.clean import stack_clean_entries
from ..corruption import MIN_SIDE, apply_corruption, image_seed, is_clean
from ..errors import reraise_interrupt
from .images import MAX_PREPARED_PIXELS, SMALL_MODES, check_choice, prepare_image
from .sources import ImageRecord, ImageSource

CORRUPT_AT = ("crop", "full_size")


class CorruptedPairs(Dataset):
    """Yields each image clean and corrupted (uint8 CHW tensors), or the reason it is unusable.

    corrupt_at="crop" (ImageNet-C): decode, resize, centre-crop, then corrupt the crop.
    corrupt_at="full_size" (the original study): decode, resize (only if set), corrupt that image, then
    centre-crop the corrupted image. The clean image is the same in both orders (the crop of the decoded image);
    under full_size a cached clean image therefore still leaves the corrupted one to decode in full.
    """

    def __init__(
        self,
        source: ImageSource,
        corruption: str,
        severity: int,
        seed: int,
        resize: int | None = 256,
        crop: int | None = 224,
        labels: Sequence[int] | None = None,
        corrupt_fn: Callable[[np.ndarray, str, int, int], np.ndarray] = apply_corruption,
        cached_clean: Callable[[str, str], dict[str, np.ndarray] | None] | None = None,
        corrupt_at: str = "crop",
        small: str = "upscale",
        max_pixels: int | None = MAX_PREPARED_PIXELS,
    ) -> None:
        self.source = source
        self.corruption = corruption
        self.severity = severity
        self.seed = seed
        self.resize = resize
        self.crop = crop
        self.labels = list(labels) if labels is not None else [r.label for r in source.records]
        self.corrupt_fn = corrupt_fn
        # (image id, source stamp) -> the clean pass's cached outputs and prepared image, or None; read here, in
        # the workers, so a cached image is neither decoded nor resized again
        self.cached_clean = cached_clean
        self.corrupt_at = check_choice("dataset.corrupt_at", corrupt_at, CORRUPT_AT)
        self.small = check_choice("dataset.small", small, SMALL_MODES)
        self.max_pixels = max_pixels  # dataset.max_pixels: an image over it at any step is skipped

    def __len__(self) -> int:
        return len(self.source.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.source.records[index]
        item: dict[str, Any] = {"index": index, "image_id": record.image_id, "label": self.labels[index]}
        try:
            cached = None
            if self.cached_clean is not None:
                item["stamp"] = self.source.stamp(record)
                cached = self.cached_clean(record.image_id, item["stamp"])
            clean = cached.pop("image") if cached is not None else None
            if clean is not None and not self._is_prepared(clean):
                clean, cached = None, None
            seed = image_seed(self.seed, record.image_id, self.corruption, self.severity)
            if self.corrupt_at == "full_size" and not is_clean(self.corruption, self.severity):
                full = self._decode(record)
                if clean is None:
                    clean = self._crop(full)
                corrupted = self._crop(self.corrupt_fn(full, self.corruption, self.severity, seed))
            else:
                if clean is None:
                    clean = self._prepare(record)
                corrupted = self.corrupt_fn(clean, self.corruption, self.severity, seed)
        except Exception as exc:  # an unusable file must not stop the run: it is reported and skipped
            reraise_interrupt(exc)
            item["error"] = f"{type(exc).__name__}: {exc}".strip()
            return item
        item["clean"] = torch.from_numpy(np.ascontiguousarray(clean)).permute(2, 0, 1)
        item["corrupted"] = torch.from_numpy(np.ascontiguousarray(corrupted)).permute(2, 0, 1)
        if self.cached_clean is not None:
            item["cached_clean"] = cached
        return item

    def _prepare(self, record: ImageRecord) -> np.ndarray:
        """Decode, resize and crop one image into a uint8 (H, W, 3) array."""
        image = prepare_image(self.source.load_reduced(record, self.resize), self.resize, self.crop, self.small,
                              self.max_pixels)
        if min(image.size) < MIN_SIDE:
            # Neither corruptions nor PaQ-2-PiQ (stride 32) work below this; upscaling is the user's call.
            raise ValueError(f"image is {image.size[0]}x{image.size[1]} after resize/crop, below the {MIN_SIDE}"
                             " px minimum (set dataset.resize or dataset.crop to upscale small images)")
        return np.array(image, dtype=np.uint8)

    def _decode(self, record: ImageRecord) -> np.ndarray:
        """Decode and resize (when dataset.resize is set) one image into a uint8 (H, W, 3) array."""
        image = prepare_image(self.source.load_reduced(record, self.resize), self.resize, None,
                              max_pixels=self.max_pixels)
        if min(image.size) < MIN_SIDE:
            # Neither corruptions nor PaQ-2-PiQ (stride 32) work below this; upscaling is the user's call.
            raise ValueError(f"image is {image.size[0]}x{image.size[1]}, below the {MIN_SIDE} px minimum "
                             "(set dataset.resize to upscale small images)")
        return np.array(image, dtype=np.uint8)

    def _crop(self, image: np.ndarray) -> np.ndarray:
        """The centre crop of a decoded (and possibly corrupted) uint8 image; small images per dataset.small."""
        if self.crop is None:
            return image
        out = prepare_image(Image.fromarray(image), None, self.crop, self.small, self.max_pixels)
        if min(out.size) < MIN_SIDE:
            raise ValueError(f"image is {out.size[0]}x{out.size[1]} after the crop, below the {MIN_SIDE} px minimum")
        return np.array(out, dtype=np.uint8)

    def _is_prepared(self, image: np.ndarray) -> bool:
        """Whether a cached image has the shape this dataset's preparation gives (a damaged entry does not)."""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < MIN_SIDE:
            return False
        return self.crop is None or image.shape[:2] == (self.crop, self.crop)


IMAGE_FIELDS = ("clean", "corrupted", "cached_clean")


def collate_pairs(items: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Stack the usable items per image size into groups and set unusable ones aside.

    Stacking happens in the DataLoader worker, so a batch crosses to the main process as a few large tensors
    rather than two or more per image (each shared tensor costs the receiver a socket round trip and a mapping).
    A group: {"items": per-image metadata, "clean"/"corrupted": uint8 (B, 3, H, W), and, when the dataset
    looks up the clean-pass cache, "cached_clean" (see stack_clean_entries)}.
    """
    by_size: dict[tuple[int, ...], list[dict[str, Any]]] = {}
    for it in items:
        if "error" not in it:
            by_size.setdefault(tuple(it["clean"].shape), []).append(it)
    groups = []
    for members in by_size.values():
        group: dict[str, Any] = {
            "items": [{k: v for k, v in it.items() if k not in IMAGE_FIELDS} for it in members],
            "clean": torch.stack([it["clean"] for it in members]),
            "corrupted": torch.stack([it["corrupted"] for it in members]),
        }
        if "cached_clean" in members[0]:
            group["cached_clean"] = stack_clean_entries([it["cached_clean"] for it in members])
        groups.append(group)
    return {"groups": groups, "skipped": [it for it in items if "error" in it]}
