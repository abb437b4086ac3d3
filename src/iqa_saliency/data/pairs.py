"""The dataset that yields each image clean and corrupted, and the collate that stacks them per size."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import functional as TF

from ..caches.clean import stack_clean_entries
from ..corruption import MIN_SIDE, apply_corruption, image_seed, is_clean
from ..errors import reraise_interrupt
from .images import SMALL_MODES, check_choice, prepare_image
from .protocol import Cell, Inputs
from .sources import ImageRecord, ImageSource

CORRUPT_AT = ("crop", "full_size")
DEFAULT_INPUTS = Inputs()


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
        cell: Cell,
        inputs: Inputs = DEFAULT_INPUTS,
        labels: Sequence[int] | None = None,
        corrupt_fn: Callable[[np.ndarray, str, int, int], np.ndarray] | None = apply_corruption,
        cached_clean: Callable[[str, str], dict[str, np.ndarray] | None] | None = None,
        corrupt_lookup: Callable[[np.ndarray, str, int, int], np.ndarray | None] | None = None,
    ) -> None:
        self.source = source
        self.corruption, self.severity, self.seed = cell.corruption, cell.severity, cell.seed
        self.resize = inputs.resize
        self.crop = inputs.crop
        self.labels = list(labels) if labels is not None else [r.label for r in source.records]
        # None: the corruption is left to the evaluation step (corruption_backend=torch, on the trainer's device);
        # items then carry the image's seed and, under full_size, the decoded image to corrupt ("full")
        self.corrupt_fn = corrupt_fn
        # with the corruption left to the step: a corruption-cache lookup (CachedCorruption.lookup) made here, in
        # the workers; an image found there arrives corrupted
        self.corrupt_lookup = corrupt_lookup
        # (image id, content id) -> the clean pass's cached outputs and prepared image, or None; read here, in
        # the workers, so a cached image is neither decoded nor resized again
        self.cached_clean = cached_clean
        self.corrupt_at = check_choice("dataset.corrupt_at", inputs.corrupt_at, CORRUPT_AT)
        self.small = check_choice("dataset.small", inputs.small, SMALL_MODES)
        self.max_pixels = inputs.max_pixels  # dataset.max_pixels: an image over it at any step is skipped

    def __len__(self) -> int:
        return len(self.source.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.source.records[index]
        item: dict[str, Any] = {"index": index, "image_id": record.image_id, "label": self.labels[index]}
        try:
            cached = None
            if self.cached_clean is not None:
                item["stamp"] = self.source.content_id(record)  # the cache's identity of the file: its bytes
                cached = self.cached_clean(record.image_id, item["stamp"])
            clean = cached.pop("image") if cached is not None else None
            if clean is not None and not self._is_prepared(clean):
                clean, cached = None, None
            seed = image_seed(self.seed, record.image_id, self.corruption, self.severity)
            full = None
            if self.corrupt_at == "full_size" and not is_clean(self.corruption, self.severity):
                full = self._decode(record)
                if clean is None:
                    clean = self._crop(full)
            elif clean is None:
                clean = self._prepare(record)
            corrupted = self._corrupt(clean if full is None else full, seed, item)
            if corrupted is None and full is not None:
                item["full"] = torch.from_numpy(np.ascontiguousarray(full)).permute(2, 0, 1)
            elif corrupted is not None and full is not None:
                corrupted = self._crop(corrupted)
        except Exception as exc:  # an unusable file must not stop the run: it is reported and skipped
            reraise_interrupt(exc)
            item["error"] = f"{type(exc).__name__}: {exc}".strip()
            return item
        item["clean"] = torch.from_numpy(np.ascontiguousarray(clean)).permute(2, 0, 1)
        if corrupted is not None:
            item["corrupted"] = torch.from_numpy(np.ascontiguousarray(corrupted)).permute(2, 0, 1)
        if self.cached_clean is not None:
            item["cached_clean"] = cached
        return item

    def _corrupt(self, image: np.ndarray, seed: int, item: dict[str, Any]) -> np.ndarray | None:
        """The corrupted image, or None when the evaluation step corrupts it (the seed is then put in `item`)."""
        if self.corrupt_fn is not None:
            return self.corrupt_fn(image, self.corruption, self.severity, seed)
        if is_clean(self.corruption, self.severity):
            return image
        found = self.corrupt_lookup(image, self.corruption, self.severity, seed) if self.corrupt_lookup else None
        if found is None:
            item["seed"] = seed
        return found

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
        return crop_image(image, self.crop, self.small, self.max_pixels)

    def _is_prepared(self, image: np.ndarray) -> bool:
        """Whether a cached image has the shape this dataset's preparation gives (a damaged entry does not)."""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < MIN_SIDE:
            return False
        return self.crop is None or image.shape[:2] == (self.crop, self.crop)


def crop_image(image: np.ndarray, crop: int | None, small: str, max_pixels: int | None) -> np.ndarray:
    """The centre crop of an HxWx3 uint8 image as the full_size protocol takes it (small images per `small`)."""
    if crop is None:
        return image
    out = prepare_image(Image.fromarray(image), None, crop, small, max_pixels)
    if min(out.size) < MIN_SIDE:
        raise ValueError(f"image is {out.size[0]}x{out.size[1]} after the crop, below the {MIN_SIDE} px minimum")
    return np.array(out, dtype=np.uint8)


def crop_batch(images: torch.Tensor, inputs: Inputs) -> torch.Tensor:
    """`crop_image` of a same-size uint8 (B, 3, H, W) batch on any device, pixel for pixel.

    A batch at least as large as the crop (or padded, small="pad") is cropped on its device, as torchvision's
    CenterCrop crops a PIL image (same offsets, zero padding); one to upscale goes through `crop_image` on the host.
    """
    crop = inputs.crop
    if crop is None:
        return images
    if min(images.shape[-2:]) < crop and inputs.small != "pad":
        host = images.permute(0, 2, 3, 1).cpu().numpy()
        out = np.stack([crop_image(im, crop, inputs.small, inputs.max_pixels) for im in host])
        return torch.from_numpy(out).permute(0, 3, 1, 2).to(images.device)
    return TF.center_crop(images, [crop, crop]).contiguous()


IMAGE_FIELDS = ("clean", "corrupted", "cached_clean", "full")


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
        }
        corrupted = [it.get("corrupted") for it in members]
        if all(c is not None for c in corrupted):
            group["corrupted"] = torch.stack(corrupted)
        else:  # the evaluation step corrupts the others (seed in items), under full_size from "full" (any size)
            group["found"] = corrupted
            if any("full" in it for it in members):
                group["full"] = [it.get("full") for it in members]
        if "cached_clean" in members[0]:
            group["cached_clean"] = stack_clean_entries([it["cached_clean"] for it in members])
        groups.append(group)
    return {"groups": groups, "skipped": [it for it in items if "error" in it]}
