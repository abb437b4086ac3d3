"""The Python API: evaluate images in memory with the command line's configs and code path.

    from iqa_saliency.api import evaluate_images
    result = evaluate_images(["cat.jpg", pil_image, array], corruption="motion_blur", severity=2)
    result.rows            # pandas DataFrame, the columns of per_image.csv
    result.maps["cat.jpg"]["attribution"]   # float32 (H, W); also quality_map (20, 20), quality_map_clean, ...
    result.summary         # what summary.json holds (metrics, weights, provenance, config)

    # your own classifier (an nn.Module on normalised ImageNet input, like torchvision's), several cells per call:
    result = evaluate_images(images, corruption=["fog", "snow"], severity=[1, 3], classifier=my_resnet)
    result.rows            # one DataFrame, the cells' rows (corruption and severity columns); result.cells[(c, s)]

The configuration is composed from the packaged configs (`iqa_saliency.conf`) with the same override names as
`iqa-evaluate` (e.g. "attribution=saliency", "similarity.quality_map=drop", "dataset.crop=null"), and the cell
runs through `iqa_saliency.cli.evaluate.evaluate_cell` like a command-line run, in a temporary run folder that is
read back and removed.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
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
from torch import nn

from .attribution.given import given_attribution
from .cli.evaluate import evaluate_cell
from .cli.precheck import check_command_line
from .cli.runtime import quiet_known_warnings, show_progress
from .data.images import open_image, to_rgb
from .data.sources import NO_LABEL, ImageRecord, ImageSource, content_stamp
from .errors import ConfigError, InputError
from .evaluation.settings import GivenModels
from .io.csv_safe import restore_frame
from .io.maps import read_maps
from .io.schema import PER_IMAGE, SKIPPED, SKIPPED_COLUMNS
from .models.classifier import Classifier, NormalizedClassifier, imagenet_categories
from .models.weights import WeightsIdentity

ImageLike = str | os.PathLike | Image.Image | np.ndarray | torch.Tensor


@dataclass
class ApiResult:
    """Per-image rows (per_image.csv's columns), each image's maps by image id, the cell's summary and its
    figures (matplotlib figures by image id). Several cells: `rows` holds them all and `cells` each one's result."""

    rows: pd.DataFrame
    maps: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    cells: dict[tuple[str, int], ApiResult] = field(default_factory=dict)
    # images that could not be used (an unreadable or broken file), with the reason: skipped.csv's columns
    skipped: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=SKIPPED_COLUMNS))


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
        labels = [check_label(label, image_id) for label, image_id in zip(labels, ids, strict=True)]
        self.records = []
        for image_id, image, label in zip(ids, items, labels, strict=True):
            if not isinstance(image, (str, os.PathLike)):  # files are read in the run: a bad one is skipped
                check_pixels(image, image_id)
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
            try:
                st = os.stat(record.path)
            except OSError:  # a missing or unreadable file: skipped in the run, with the reason
                return "missing"
            return f"{st.st_size}:{st.st_mtime_ns}"
        return hashlib.sha1(np.asarray(_to_pil(self._images[record.image_id])).tobytes()).hexdigest()

    def content_id(self, record: ImageRecord) -> str:
        if record.path is not None:
            return content_stamp(record.path, self.__dict__.setdefault("_digests", {}))
        return self.stamp(record)


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


IMAGENET_CLASSES = 1000


def check_label(label: Any, image_id: str) -> int:
    """An ImageNet class index (0-999) or -1 (no label); anything else is refused (InputError)."""
    if isinstance(label, (bool, np.bool_)) or not isinstance(label, (int, np.integer)) or not (
            label == NO_LABEL or 0 <= label < IMAGENET_CLASSES):
        raise InputError(f"Label {label!r} of {image_id} is not an ImageNet class index. Pass labels as integers "
                         f"0-{IMAGENET_CLASSES - 1} (or -1 for an image without a label).")
    return int(label)


def check_pixels(image: Any, image_id: str) -> None:
    """Refuse in-memory pixels that would not be evaluated as given (InputError, naming the fix): another type,
    a shape that is not an image, integers other than uint8, floats outside [0, 1] (0-255 floats would be clipped
    to white) or NaN/infinite values."""
    if isinstance(image, Image.Image):
        return
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu()
        shape, layout = tuple(image.shape), "(3, H, W) tensor"
        ok_shape = image.ndim == 2 or (image.ndim == 3 and shape[0] in (1, 3, 4))
        array = image.float().numpy() if image.is_floating_point() else image.numpy()
    elif isinstance(image, np.ndarray):
        array, shape, layout = image, image.shape, "HxWx3 array"
        ok_shape = array.ndim == 2 or (array.ndim == 3 and shape[2] in (1, 3, 4))
    else:
        raise InputError(f"{image_id} is a {type(image).__name__}. Pass a path, a PIL image, an HxWx3 uint8 array "
                         "or a (3, H, W) tensor.")
    if not ok_shape or 0 in shape:
        raise InputError(f"{image_id} has shape {shape}, not an image. Pass a {layout} (or a batch of them).")
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise InputError(f"{image_id} has NaN or infinite pixels. Replace them (e.g. torch.nan_to_num) before "
                             "evaluating it.")
        low, high = float(array.min()), float(array.max())
        if low < 0.0 or high > 1.0:
            hint = " (0-255 values: divide by 255, or pass the uint8 image)" if high > 1.0 else ""
            raise InputError(f"{image_id} has float pixels in [{low:g}, {high:g}], outside [0, 1]{hint}. Pass floats "
                             "in [0, 1] or uint8 values.")
    elif array.dtype != np.uint8:
        raise InputError(f"{image_id} has {array.dtype} pixels. Pass uint8 values or floats in [0, 1].")


def _to_pil(image: ImageLike) -> Image.Image:
    """A PIL image from a PIL image, an HxW(x3/4) array or a (3, H, W) tensor (uint8, or floats in [0, 1])."""
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu()
        if image.ndim == 3 and image.shape[0] in (1, 3, 4):
            image = image.permute(1, 2, 0)
        image = image.float().numpy() if image.is_floating_point() else image.numpy()  # bfloat16 has no numpy
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
    corruption: str | Sequence[str] = "motion_blur",
    severity: int | Sequence[int] = 2,
    attribution: str | Any = "gradcam",
    classifier: str | nn.Module = "resnet18",
    quality: str | nn.Module = "paq2piq",
    overrides: Sequence[str] = (),
    pretrained: bool = True,
    labels: Sequence[int] | None = None,
    names: Sequence[str] | None = None,
    figures: int = 0,
    figures_dir: str | os.PathLike | None = None,
    progress: bool = False,
) -> ApiResult:
    """Evaluate `images` clean and with each `corruption` at each `severity` (0: clean), as `iqa-evaluate` would.

    `classifier` and `quality` are config names or models: an nn.Module classifier taking ImageNet-normalised
    input as torchvision's do (the [0, 1] pixels are normalised for it; "classifier.normalize=false" feeds them
    as they are), and a PaQ-2-PiQ-shaped quality module (forward -> (B, 1 + grid²), `split`), e.g. one from
    `iqa_saliency.models.paq2piq.load_paq2piq` with your weights. `attribution` is a method name, a captum
    attribution object built on the nn.Module passed as `classifier` (e.g. IntegratedGradients(net),
    LayerGradCam(net, net.layer4); its attribute() arguments via functools.partial(obj.attribute, n_steps=16)), or a
    function (inputs, target) -> attributions on the [0, 1] pixels; see iqa_saliency.attribution.given and
    docs/api.md. `overrides` are command-line overrides
    ("attribution.target=label", "similarity.quality_map=drop", "allow_untrained_fallback=true", ...); they come
    after the keyword arguments and win. No experiment logger and nothing on the console unless asked
    (`progress=True`: the progress bar and each cell's table; "logger=csv"). `figures=N`: the first N images'
    three-panel figures, returned as matplotlib figures and, with `figures_dir`, written there as PNG (a subfolder
    per cell when there are several). The image options are dataset=folder's; the run folders are temporary.

    Raises ValueError (InputError) in one line for what cannot be evaluated right: float pixels outside [0, 1],
    NaN/inf pixels, integers other than uint8, shapes that are not images, labels that are not classes. A file that
    cannot be read is skipped (result.skipped, with its reason) and the others are evaluated.
    """
    cells = [(c, int(s)) for c in _as_list(corruption) for s in _as_list(severity)]
    given = _given_models(classifier, quality, overrides)
    if not isinstance(attribution, str):  # a captum object or a function (attribution.given)
        given.attribution = given_attribution(attribution, classifier)
    shared = tempfile.mkdtemp(prefix="iqa-saliency-clean-") if len(cells) > 1 else None
    results: dict[tuple[str, int], ApiResult] = {}
    try:
        cell_overrides = {}
        for cell in cells:
            base = [f"corruption={cell[0]}", f"severity={cell[1]}", f"pretrained={str(bool(pretrained)).lower()}",
                    "dataset=folder", "logger=none", f"figures={int(figures)}",
                    f"trainer.enable_progress_bar={str(progress).lower()}",
                    f"print_summary={str(progress).lower()}"]
            base += [f"attribution={attribution}"] if isinstance(attribution, str) else []
            base += [f"classifier={classifier}"] if isinstance(classifier, str) else []
            base += [f"quality={quality}"] if isinstance(quality, str) else []
            base += [f"clean_cache={shared}"] if shared else []  # the clean pass once for all the cells
            cell_overrides[cell] = [*base, *overrides]
            _check_overrides(cell_overrides[cell])  # every cell's configuration before the first cell runs
        for cell, command in cell_overrides.items():
            folder = (Path(figures_dir) / (f"{cell[0]}-s{cell[1]}" if len(cells) > 1 else "")) if figures_dir else None
            with _lightning_info(shown=progress):
                results[cell] = _evaluate_cell(command, images, labels, names, given, folder)
    finally:
        if shared:
            shutil.rmtree(shared, ignore_errors=True)
    if len(results) == 1:
        return next(iter(results.values()))
    rows = pd.concat([r.rows for r in results.values()], ignore_index=True)
    # the files every cell could not read (each cell's own list is in cells)
    return ApiResult(rows=rows, cells=results, skipped=next(iter(results.values())).skipped)


def _check_overrides(overrides: list[str]) -> None:
    """The configuration the API will run, checked as the command line's is: one-line ValueError (InputError)."""
    try:
        check_command_line(overrides, "evaluate")
    except ConfigError as exc:
        raise InputError(str(exc)) from None


@contextlib.contextmanager
def _lightning_info(shown: bool) -> Iterator[None]:
    """Lightning's informational lines ("GPU available: ...") only when progress was asked for."""
    import pytorch_lightning  # noqa: F401  (its import sets its logger's level: first, so ours stays)

    loggers = [logging.getLogger(name) for name in ("pytorch_lightning", "lightning_fabric", "lightning.pytorch")]
    levels = [lg.level for lg in loggers]
    if not shown:
        for lg in loggers:
            lg.setLevel(max(lg.level, logging.WARNING))
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _as_list(value: Any) -> list[Any]:
    return [value] if isinstance(value, (str, int)) else list(value)


def _given_models(classifier: str | nn.Module, quality: str | nn.Module, overrides: Sequence[str]) -> GivenModels:
    """The caller's models as the pipeline takes them (names are left to the configuration)."""
    given = GivenModels()
    if isinstance(classifier, nn.Module):
        normalize = "classifier.normalize=false" not in [o.replace(" ", "").lower() for o in overrides]
        given.classifier = wrap_classifier(classifier, normalize)
    elif not isinstance(classifier, str):
        raise ConfigError(f"classifier={type(classifier).__name__} is not a model. Pass an nn.Module or a config "
                          "name such as 'resnet18'.")
    if isinstance(quality, nn.Module):
        if not callable(getattr(quality, "split", None)):
            raise ConfigError(f"quality={type(quality).__name__} has no split(). Pass a PaQ-2-PiQ-shaped module "
                              "(forward -> (B, 1 + grid²) and split), e.g. models.paq2piq.load_paq2piq(...)[0].")
        given.quality = (quality.eval(), WeightsIdentity(f"given:{type(quality).__name__}", None,
                                                         state_digest(quality)))
    elif not isinstance(quality, str):
        raise ConfigError(f"quality={type(quality).__name__} is not a model. Pass an nn.Module or 'paq2piq'.")
    return given


def state_digest(module: nn.Module) -> str:
    """sha256 over a module's parameters and buffers (names, shapes, values): who made the numbers, recorded in
    summary.json and part of the clean-pass cache key."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def wrap_classifier(module: nn.Module, normalize: bool = True) -> Classifier:
    """A caller's nn.Module as the pipeline's Classifier: [0, 1] input normalised for it, class names ImageNet's
    when it has 1000 outputs (else 0, 1, ...)."""
    net = module if isinstance(module, NormalizedClassifier) else NormalizedClassifier(module, normalize=normalize)
    net.eval()
    with torch.no_grad():
        first = next(net.parameters(), None)
        probe = torch.zeros(1, 3, 224, 224, device=first.device if first is not None else "cpu")
        n_classes = int(net(probe).shape[-1])
    class_names = imagenet_categories() if n_classes == 1000 else [str(i) for i in range(n_classes)]
    weights = WeightsIdentity(f"given:{type(module).__name__}", None, state_digest(module))
    return Classifier(model=net, arch=type(module).__name__, class_names=class_names, weights=weights,
                      imagenet_classes=n_classes == 1000)


def _evaluate_cell(overrides: Sequence[str], images: Any, labels: Sequence[int] | None, names: Sequence[str] | None,
                   given: GivenModels, figures_dir: Path | None) -> ApiResult:
    cfg = compose_config(overrides)
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
        summary = evaluate_cell(cfg, run_dir, source=source, given=given)
        return _read_run(Path(run_dir), summary, figures_dir)
    finally:
        HydraConfig.instance().cfg = previous
        shutil.rmtree(run_dir, ignore_errors=True)
        gc.collect()  # the run's trainer, module and models sit in reference cycles: free them before the next call


def _read_run(run_dir: Path, summary: dict[str, Any], figures_dir: Path | None = None) -> ApiResult:
    rows = restore_frame(pd.read_csv(run_dir / PER_IMAGE, keep_default_na=True))  # names as given (io.csv_safe)
    maps = {}
    for image_id, rel in zip(rows["image"], rows.get("maps", pd.Series([""] * len(rows))), strict=True):
        if isinstance(rel, str) and rel:  # an .npz path, or a zarr store and row (maps_format=zarr)
            maps[str(image_id)] = read_maps(run_dir, rel)
    skipped_csv = run_dir / SKIPPED
    skipped = (restore_frame(pd.read_csv(skipped_csv, keep_default_na=False)) if skipped_csv.exists()
               else pd.DataFrame(columns=SKIPPED_COLUMNS))
    return ApiResult(rows=rows, maps=maps, summary=summary, figures=_figures(run_dir / "figures", figures_dir),
                     skipped=skipped)


def _figures(folder: Path, copy_to: Path | None) -> dict[str, Any]:
    """The run's three-panel figures as matplotlib figures by image id (copied as PNG into `copy_to` if given)."""
    from matplotlib.figure import Figure
    from matplotlib.image import imread

    figures = {}
    for png in sorted(folder.glob("*.png")) if folder.is_dir() else []:
        if copy_to is not None:
            copy_to.mkdir(parents=True, exist_ok=True)
            shutil.copy2(png, copy_to / png.name)
        pixels = imread(png)
        figure = Figure(figsize=(pixels.shape[1] / 100, pixels.shape[0] / 100), dpi=100)
        axes = figure.add_axes((0, 0, 1, 1))
        axes.imshow(pixels)
        axes.set_axis_off()
        figures[png.stem.split("_", 1)[1]] = figure  # <index>_<image id>.png
    return figures
