"""The Python API: evaluate images in memory with the command line's configs and code path.

    from iqa_saliency.api import evaluate_images
    result = evaluate_images(["cat.jpg", pil_image, array], corruption="motion_blur", severity=2)
    result.rows            # pandas DataFrame, the columns of per_image.csv
    result.maps["cat.jpg"]["attribution"]   # float32 (H, W); also quality_map (20, 20), quality_map_clean, ...
    result.summary         # what summary.json holds (metrics, weights, provenance, config)

The configuration is composed from the packaged configs (`iqa_saliency.conf`) with the same override names as
`iqa-evaluate` (e.g. "attribution=saliency", "similarity.quality_map=drop", "dataset.crop=null"), and the cell
runs through `iqa_saliency.cli.evaluate.evaluate_cell` like a command-line run, in a temporary run folder that is
read back and removed.
"""

from __future__ import annotations

import gc
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict, read_write
from PIL import Image

from .cli.evaluate import evaluate_cell
from .cli.runtime import quiet_known_warnings, show_progress
from .data.images import open_image, to_rgb
from .data.sources import NO_LABEL, ImageRecord, ImageSource
from .errors import ConfigError
from .io.maps import read_maps
from .io.schema import PER_IMAGE

ImageLike = str | os.PathLike | Image.Image | np.ndarray | torch.Tensor


@dataclass
class ApiResult:
    """Per-image rows (per_image.csv's columns), each image's maps by image id, and the cell's summary."""

    rows: pd.DataFrame
    maps: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)


class InMemoryImages(ImageSource):
    """An ImageSource over images given in memory: paths, PIL images, HxWx3 arrays or a (B, 3, H, W) tensor.

    Paths are decoded as `dataset=folder` decodes files (dataset.decode) and keep their file name as
    id, so a run on the same files gives the same ids, per-image seeds and numbers. Other images are named
    image_000, image_001, ... unless `names` are given. `labels` are ImageNet class indices (-1: none).
    """

    def __init__(self, images: Iterable[ImageLike], names: Sequence[str] | None = None,
                 labels: Sequence[int] | None = None, decode: str = "oriented") -> None:
        self.decode = decode
        items = _split_batch(images)
        if not items:
            raise ConfigError("No images were given. Pass paths, PIL images, arrays or a (B, 3, H, W) tensor.")
        self._images: dict[str, ImageLike] = {}
        ids = list(names) if names is not None else [_default_id(x, i) for i, x in enumerate(items)]
        if len(ids) != len(items) or len(set(ids)) != len(ids):
            raise ConfigError("Image names must be unique, one per image (two files with the same name? pass "
                              "names=[...]).")
        self.imagenet_labels = labels is not None
        labels = list(labels) if labels is not None else [NO_LABEL] * len(items)
        if len(labels) != len(items):
            raise ConfigError(f"{len(labels)} labels for {len(items)} images.")
        self.records = []
        for image_id, image, label in zip(ids, items, labels, strict=True):
            self._images[image_id] = image
            path = str(image) if isinstance(image, (str, os.PathLike)) else None
            self.records.append(ImageRecord(image_id, int(label), path))

    def load(self, record: ImageRecord) -> Image.Image:
        return self.load_reduced(record, None)

    def load_reduced(self, record: ImageRecord, min_side: int | None) -> Image.Image:
        image = self._images[record.image_id]
        if record.path is not None:
            return open_image(record.path, min_side, decode=self.decode)
        return to_rgb(_to_pil(image))

    def stamp(self, record: ImageRecord) -> str:
        if record.path is not None:
            st = os.stat(record.path)
            return f"{st.st_size}:{st.st_mtime_ns}"
        return hashlib.sha1(np.asarray(_to_pil(self._images[record.image_id])).tobytes()).hexdigest()


def _split_batch(images: Iterable[ImageLike] | torch.Tensor | np.ndarray) -> list[ImageLike]:
    if isinstance(images, torch.Tensor) and images.ndim == 4:
        return list(images)
    if isinstance(images, np.ndarray) and images.ndim == 4:
        return list(images)
    if isinstance(images, (str, os.PathLike, Image.Image, torch.Tensor, np.ndarray)):
        return [images]
    return list(images)


def _default_id(image: ImageLike, index: int) -> str:
    return Path(image).name if isinstance(image, (str, os.PathLike)) else f"image_{index:03d}"


def _to_pil(image: ImageLike) -> Image.Image:
    """A PIL image from a PIL image, an HxW(x3/4) array or a (3, H, W) tensor (uint8, or floats in [0, 1])."""
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu()
        if image.ndim == 3 and image.shape[0] in (1, 3, 4):
            image = image.permute(1, 2, 0)
        image = image.numpy()
    array = np.asarray(image)
    if array.dtype != np.uint8:
        if np.issubdtype(array.dtype, np.floating):
            array = np.clip(np.rint(array * 255.0), 0, 255).astype(np.uint8)
        else:
            raise ConfigError(f"Images as arrays must be uint8 or floats in [0, 1], not {array.dtype}.")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    return Image.fromarray(array)


def compose_config(overrides: Sequence[str] = ()) -> DictConfig:
    """The evaluate configuration as `iqa-evaluate <overrides>` composes it (Hydra's own keys included)."""
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    with initialize_config_module(config_module="iqa_saliency.conf", version_base="1.3"):
        return compose(config_name="evaluate", overrides=list(overrides), return_hydra_config=True)


def evaluate_images(
    images: Iterable[ImageLike] | torch.Tensor | np.ndarray,
    *,
    corruption: str = "motion_blur",
    severity: int = 2,
    attribution: str = "gradcam",
    classifier: str = "resnet18",
    overrides: Sequence[str] = (),
    pretrained: bool = True,
    labels: Sequence[int] | None = None,
    names: Sequence[str] | None = None,
) -> ApiResult:
    """Evaluate `images` clean and with `corruption` at `severity` (0: clean), as `iqa-evaluate` would.

    `overrides` are command-line overrides ("attribution.target=label", "similarity.quality_map=drop",
    "allow_untrained_fallback=true", ...); they come after the keyword arguments and win. No experiment logger
    and no figures unless asked for ("logger=csv", "figures=4"); the image options are dataset=folder's
    (dataset.resize, dataset.crop, dataset.decode, ...); the run folder is temporary.
    """
    base = [f"corruption={corruption}", f"severity={severity}", f"attribution={attribution}",
            f"classifier={classifier}", f"pretrained={str(bool(pretrained)).lower()}", "dataset=folder",
            "logger=none", "figures=0"]
    cfg = compose_config([*base, *overrides])
    source = InMemoryImages(images, names=names, labels=labels, decode=cfg.dataset.get("decode", "oriented"))
    run_dir = tempfile.mkdtemp(prefix="iqa-saliency-")
    previous = HydraConfig.instance().cfg
    try:
        with read_write(cfg), open_dict(cfg):
            cfg.hydra.runtime.output_dir = run_dir
            HydraConfig.instance().set_config(cfg)  # ${hydra:runtime.output_dir} in the logger configs
            del cfg["hydra"]
        quiet_known_warnings()
        show_progress(cfg.trainer.get("enable_progress_bar", True))
        summary = evaluate_cell(cfg, run_dir, source=source)
        return _read_run(Path(run_dir), summary)
    finally:
        HydraConfig.instance().cfg = previous
        shutil.rmtree(run_dir, ignore_errors=True)
        gc.collect()  # the run's trainer, module and models sit in reference cycles: free them before the next call


def _read_run(run_dir: Path, summary: dict[str, Any]) -> ApiResult:
    rows = pd.read_csv(run_dir / PER_IMAGE, keep_default_na=True)
    maps = {}
    for image_id, rel in zip(rows["image"], rows.get("maps", pd.Series([""] * len(rows))), strict=True):
        if isinstance(rel, str) and rel:  # an .npz path, or a zarr store and row (maps_format=zarr)
            maps[str(image_id)] = read_maps(run_dir, rel)
    return ApiResult(rows=rows, maps=maps, summary=summary)
