"""An independent restatement of the original study's protocol, for comparison tests.

The study is github.com/dks2000dks/Saliency-Maps-NR-IQA-Classification-Models (commit f028918,
Dec 2022). Nothing here is copied from it and nothing here imports ``iqa_saliency``: every
function below re-derives, in its own code, what the study's scripts do, so that tests can hold
the project's "reproduce the study" paths against it. File/line references point into the study.

What the study does, in short (details in the docstrings):

* images are read by torchvision ``ImageFolder`` (PIL ``convert("RGB")``), turned into a float
  tensor (``ToTensor``), optionally corrupted at full size through ``imagecorruptions.corrupt`` on
  ``uint8(x*255)``, and center-cropped to 224 (zero padding when smaller); no resize, no ImageNet
  normalisation (datasets.py:22-36, 93, 103-121);
* split: ``train_test_split(arange(n), test_size=0.2, stratify=targets, random_state=32)`` over
  *all* ImageFolder samples (datasets.py:94) -- the Good/Excellent filter (datasets.py:50-68)
  only rebinds ``self.imgs``, which ImageFolder never reads, so it selects nothing;
* classifier: resnet18 (ImageNet init), fc=Identity, flatten, a Dropout(0.25) *built inside
  forward* (so always in training mode), Linear(512, n) -> logits (models.py:12-27);
* checkpoints: Lightning, ``state_dict`` keys ``model.ResNet_Module.*`` / ``model.fc.*``,
  ``hyper_parameters == {"args": argparse.Namespace(...)}`` (main.py:22-29, arguments.py);
* PaQ-2-PiQ score normalisation and categories (paq2piq/paq2piq_standalone.py:95-174).
"""

from __future__ import annotations

import argparse
import csv
import inspect
import math
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image
from torch import nn
from torch.nn import functional as F
from torchvision.ops import roi_pool

# --------------------------------------------------------------------------------------------
# Constants of the study
# --------------------------------------------------------------------------------------------

CROP = 224  # datasets.py:111,119  transforms.CenterCrop((224,224))
SPLIT_TEST_SIZE = 0.2  # datasets.py:94
SPLIT_RANDOM_STATE = 32  # datasets.py:94
NUM_CLASSES = 67  # main.py:153
DROPOUT_P = 0.25  # models.py:25

#: PaQ-2-PiQ standalone defaults (paq2piq/paq2piq_standalone.py:135-137): peak, std_left, std_right.
DEFAULT_NORM_PARAMS: tuple[float, float, float] = (72, 7.798274017370107, 4.118047289170692)
N_STD = 3.5  # paq2piq_standalone.py:135
CLIP_MAX = 99.9  # paq2piq_standalone.py:142  (100 // 20 == 5 would be out of range)
CATEGORIES = ("Bad", "Poor", "Fair", "Good", "Excellent")  # paq2piq_standalone.py:116
KEPT_CATEGORIES = ("Good", "Excellent")  # datasets.py:67 (intended; see study_quality_filter)

#: The study's working-folder-relative dataset root, as written into mos.csv image paths
#: (quality_accuracy.py:28, dataset_quality_analysis.py:12, utils.py:50-55).
STUDY_DATASET_PREFIX = "datasets/mit-indoor-scenes"
MOS_COLUMNS = ("image_path", "global_score", "normalized_global_score", "category")  # utils.py:69

#: The seven corruptions and the severities of the study's figures (quality_accuracy.py:35-36).
STUDY_CORRUPTIONS = ("brightness", "contrast", "jpeg_compression", "saturate",
                     "defocus_blur", "motion_blur", "zoom_blur")
STUDY_SEVERITIES = (0, 1, 2, 3)

#: A Lightning version of the study's era: torchmetrics.Accuracy() without `task` (< 0.11),
#: `pytorch_lightning.strategies.ddp.DDPStrategy` (>= 1.6), ResNet18_Weights (torchvision >= 0.13).
#: The exact version is not recorded anywhere in the study; this is a plausible stand-in.
STUDY_PL_VERSION = "1.7.7"


# --------------------------------------------------------------------------------------------
# (a) Transform
# --------------------------------------------------------------------------------------------

def study_load_image(path: str | os.PathLike) -> Image.Image:
    """What torchvision's ImageFolder default loader hands the transform: PIL ``convert("RGB")``.

    Greyscale (L), palette (P), CMYK, RGBA (alpha dropped, no compositing), LA, I;16 ... all
    become 3-channel RGB here, so the study's NonRGB channel stacking never fires in practice.
    EXIF orientation is not applied.
    """
    with open(path, "rb") as f:
        img = Image.open(f)
        return img.convert("RGB")


def _to_tensor(img: Image.Image) -> torch.Tensor:
    """ToTensor for 8-bit modes: HxWxC uint8 -> CxHxW float32 in [0, 1] (x / 255 in float32)."""
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    t = torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()
    return t.to(torch.float32).div(255)


def _stack_grey(t: torch.Tensor) -> torch.Tensor:
    """datasets.py:39-47 NonRGB: a 1-channel tensor is repeated to 3 channels (R=G=B)."""
    return torch.cat((t, t, t), dim=0) if t.shape[0] == 1 else t


def corruption_accepts_seed(name: str) -> bool:
    """Whether the installed imagecorruptions function takes a ``seed`` keyword.

    In the ``imagecorruptions-imaug`` fork only ``impulse_noise`` and ``glass_blur`` do; the
    others draw from numpy's global generator (``np.random.*``). ``glass_blur`` with no seed
    draws its numba seed from an *unseeded* ``np.random.default_rng()``, so for it the keyword
    is the only way to be repeatable.
    """
    import imagecorruptions

    fn = imagecorruptions.corruption_dict[name]
    return "seed" in inspect.signature(fn).parameters


def study_corrupt(image: np.ndarray, corruption: str, severity: int, seed: int | None = None) -> np.ndarray:
    """``imagecorruptions.corrupt(image, corruption_name=..., severity=...)`` on an HxWx3 uint8.

    The study never seeds (datasets.py:35): the random corruptions take whatever state numpy's
    global generator has (in a DataLoader worker, torch >= 1.9 seeds it per worker from an
    unseeded base seed), so its random cells are not repeatable. With ``seed`` given, this
    seeds numpy's global generator with it and also passes it as the ``seed`` keyword to the
    corruptions that accept one -- the convention to use when comparing against a project that
    seeds per image: give both sides the same per-image seed.
    """
    from imagecorruptions import corrupt

    kwargs = {}
    if seed is not None:
        np.random.seed(seed)
        if corruption_accepts_seed(corruption):
            kwargs["seed"] = seed
    return corrupt(image, corruption_name=corruption, severity=severity, **kwargs)


def study_center_crop(t: torch.Tensor, size: int = CROP) -> torch.Tensor:
    """torchvision CenterCrop on a CxHxW tensor, restated.

    A side shorter than ``size`` is first zero-padded: ``(size - s) // 2`` before and
    ``(size - s + 1) // 2`` after (the odd pixel goes to the right/bottom). Then the crop
    offset is ``int(round((s - size) / 2))`` -- Python's round, i.e. half to even, so an
    excess of 25 px starts at 12, an excess of 27 px starts at 14.
    """
    c, h, w = t.shape
    if h < size or w < size:
        ph, pw = max(size - h, 0), max(size - w, 0)
        t = F.pad(t, (pw // 2, (pw + 1) // 2, ph // 2, (ph + 1) // 2), value=0.0)
        c, h, w = t.shape
    top = int(round((h - size) / 2.0))
    left = int(round((w - size) / 2.0))
    return t[:, top:top + size, left:left + size]


def study_transform(pil_image: Image.Image, corruption: str | None = None, severity: int = 0,
                    seed: int | None = None, *, convert: bool = True) -> torch.Tensor:
    """What one item of the study's dataset is: a float32 tensor 3x224x224 in [0, 1].

    Order (datasets.py:103-121, 22-36):
      1. (ImageFolder's loader) PIL ``convert("RGB")`` -- ``convert=False`` skips it, to see
         what a bare ToTensor would give (then L is stacked to 3 channels, but P yields palette
         indices and CMYK/RGBA 4 channels, which the corruption then rejects);
      2. ToTensor (float32 x/255, CxHxW);
      3. NonRGB: 1 channel -> stacked 3 times;
      4. if a corruption is set (the study passes none at severity 0, quality_accuracy.py:61-64):
         ``uint8(x*255)`` (a truncating cast, lossless here since x came from uint8), HWC,
         ``corrupt()`` on the *full-size* image, then ``/255.0`` in float64 and cast back to the
         input dtype (float32) -- bit-identical to ToTensor of the corrupted uint8 image;
      5. CenterCrop(224) (zero padding for small images; see study_center_crop).
    No resize and no ImageNet mean/std normalisation, for training and evaluation alike.
    """
    img = pil_image.convert("RGB") if convert and pil_image.mode != "RGB" else pil_image
    x = _stack_grey(_to_tensor(img))
    if corruption is not None and severity > 0:
        hwc = np.uint8(x.numpy().transpose(1, 2, 0) * 255.0)
        out = study_corrupt(hwc, corruption, severity, seed)
        x = torch.as_tensor(out.transpose(2, 0, 1) / 255.0, dtype=x.dtype)
    return study_center_crop(x, CROP)


# --------------------------------------------------------------------------------------------
# (b) Samples, quality filter and split
# --------------------------------------------------------------------------------------------

def study_samples(root: str | os.PathLike) -> list[tuple[str, int]]:
    """ImageFolder's (path, class index) list: classes = sorted sub-folder names, files sorted
    within each class (recursively), only image extensions; paths are ``os.path.join(root, ...)``
    of the root *as given* (so a relative root gives relative paths, the mos.csv keys)."""
    return list(torchvision.datasets.ImageFolder(str(root)).samples)


def read_study_mos_csv(path: str | os.PathLike) -> dict[str, str]:
    """mos.csv -> {image_path: category} (datasets.py:60-62 reads column 0 and column 3)."""
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        assert tuple(header) == MOS_COLUMNS, header
        return {row[0]: row[3] for row in reader}


def study_quality_filter(samples: Sequence[tuple[str, int]], path_to_category: dict[str, str],
                         *, as_run: bool = True) -> list[tuple[str, int]]:
    """The Good/Excellent filter of datasets.py:50-68.

    Every sample path must be a key of mos.csv (a KeyError otherwise, in both modes). As run
    (``as_run=True``) the study keeps *every* sample: the filtered list is assigned to
    ``self.imgs``, while ImageFolder indexes ``self.samples``/``self.targets``, which stay whole.
    (Evidence: its checkpoints are named epoch=39-step=15640 etc., i.e. 391 steps per epoch at
    batch 32 = ceil(12496/32), and 12496 = 15620 - ceil(0.2*15620): all MIT Indoor images.)
    ``as_run=False`` gives what was intended: only Good and Excellent samples, order kept.
    """
    kept = []
    for path, target in samples:
        category_ = path_to_category[path]
        if as_run or category_ in KEPT_CATEGORIES:
            kept.append((path, target))
    return kept


def study_split(targets: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, val indices) as datasets.py:94 computes them (needs scikit-learn).

    ``train_test_split(np.arange(len(targets)), test_size=0.2, stratify=targets,
    random_state=32)``; the study feeds it the full ImageFolder targets (see
    study_quality_filter). Validation size is ``ceil(0.2 * n)``. Indices come back in the
    shuffled order sklearn returns (the study wraps them in ``Subset`` as is; the validation
    DataLoader does not shuffle, so that order is the evaluation order).
    """
    from sklearn.model_selection import train_test_split

    targets = list(targets)
    train, val = train_test_split(np.arange(len(targets)), test_size=SPLIT_TEST_SIZE,
                                  stratify=targets, random_state=SPLIT_RANDOM_STATE)
    return np.asarray(train), np.asarray(val)


# --------------------------------------------------------------------------------------------
# (c) Model and checkpoint
# --------------------------------------------------------------------------------------------

class StudyResNet(nn.Module):
    """models.py:12-27 ``ResNet_Model``, with the same parameter names.

    ``ResNet_Module`` = torchvision resnet18 with ``fc = nn.Identity()``; then flatten,
    dropout(0.25), ``fc = nn.Linear(512, num_classes)``; returns logits (no softmax).
    The study builds ``nn.Dropout(0.25)`` inside forward, a fresh module that is always in
    training mode, so dropout stays on under ``.eval()`` (a bug): ``dropout_bug=True``
    reproduces that; the default is the fixed behaviour (dropout only in training mode).
    The study initialises the body with ImageNet weights (``weights=ResNet18_Weights``, the
    enum class, which torchvision treats as IMAGENET1K_V1); here ``weights=None`` (no download).
    """

    def __init__(self, num_classes: int = NUM_CLASSES, dropout_bug: bool = False) -> None:
        super().__init__()
        self.ResNet_Module = torchvision.models.resnet18(weights=None)
        self.ResNet_Module.fc = nn.Identity()
        self.fc = nn.Linear(512, num_classes)
        self.dropout_bug = dropout_bug

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.flatten(self.ResNet_Module(x), 1)
        h = F.dropout(h, DROPOUT_P, training=True if self.dropout_bug else self.training)
        return self.fc(h)


def study_args_namespace(**overrides) -> argparse.Namespace:
    """main.py's parsed arguments (arguments.py defaults, attribute order of the parser) with
    the two fields main.py sets afterwards (main.py:163-164) and a dataset path.
    The study's actual command line is unknown; override what a test needs."""
    fields = dict(
        data=STUDY_DATASET_PREFIX, num_workers=64, image_shape=(224, 224), train=True,
        evaluate=False, main_path="", ckpt_path=None, epochs=60, batch_size=32,
        loss="CrossEntropy", optimizer="SGD", lr=0.001, momentum=0.0, weight_decay=0.001,
        scheduler="None", warmup_epochs=5, multiplier=59, num_nodes=1, gpu=1,
        model_name="resnet18", dataset_name="mit-indoor-scenes",
    )
    unknown = set(overrides) - set(fields)
    if unknown:
        raise TypeError(f"not an argument of the study: {sorted(unknown)}")
    fields.update(overrides)
    return argparse.Namespace(**fields)


def random_study_state_dict(num_classes: int = NUM_CLASSES, seed: int = 0) -> dict[str, torch.Tensor]:
    """A StudyResNet state_dict (un-prefixed keys) with seeded random weights *and* random
    BatchNorm buffers (running_mean/var, num_batches_tracked), so a loader that drops or
    mismaps buffers is caught."""
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = StudyResNet(num_classes)
    sd = model.state_dict()
    for key, value in sd.items():
        if key.endswith("running_mean"):
            value.copy_(torch.randn(value.shape, generator=gen) * 0.1)
        elif key.endswith("running_var"):
            value.copy_(torch.rand(value.shape, generator=gen) + 0.5)
        elif key.endswith("num_batches_tracked"):
            value.fill_(int(torch.randint(1, 10_000, (1,), generator=gen)))
    return {k: v.clone() for k, v in sd.items()}


def study_checkpoint_dict(num_classes: int = NUM_CLASSES, seed: int = 0, *, epoch: int = 59,
                          global_step: int = 23460, args: argparse.Namespace | None = None,
                          pl_version: str = STUDY_PL_VERSION) -> dict:
    """The dict the study's Lightning module would save (main.py:22-29, 95-105).

    ``Model_LightningModule.__init__(self, args)`` assigns ``self.model = ResNet_Model(67)``
    and calls ``save_hyperparameters()`` with no arguments, so Lightning collects the init
    arguments: ``hyper_parameters == {"args": Namespace(...)}`` and ``hparams_name == "kwargs"``
    (checked against pytorch-lightning 2.6 too). Its torchmetrics Accuracy members hold
    non-persistent state and the loss modules have no parameters, so ``state_dict`` is just
    ``model.ResNet_Module.*`` and ``model.fc.*`` (no ``model.ResNet_Module.fc.*``: Identity).
    Other top-level keys follow Lightning 1.7: epoch, global_step, pytorch-lightning_version,
    loops (schematic), callbacks (the two ModelCheckpoint callbacks), optimizer_states (SGD, as
    arguments.py configures it; momentum 0 stores ``momentum_buffer: None``), lr_schedulers
    (none: scheduler "None").
    """
    args = args if args is not None else study_args_namespace()
    sd = random_study_state_dict(num_classes, seed)
    state_dict = {f"model.{k}": v for k, v in sd.items()}
    n_params = sum(1 for k in sd if not (k.endswith("running_mean") or k.endswith("running_var")
                                         or k.endswith("num_batches_tracked")))
    steps_per_epoch = max(global_step // (epoch + 1), 1)
    dirpath = f"{args.main_path}checkpoints/{args.dataset_name}/{args.model_name}"

    def progress(n: int) -> dict:
        return {"ready": n, "completed": n, "started": n, "processed": n}

    loops = {
        "fit_loop": {
            "state_dict": {},
            "epoch_progress": {"total": progress(epoch + 1), "current": progress(epoch + 1)},
            "epoch_loop.state_dict": {"_batches_that_stepped": global_step},
            "epoch_loop.batch_progress": {"total": progress(global_step),
                                          "current": progress(steps_per_epoch), "is_last_batch": True},
        },
        "validate_loop": {"state_dict": {}},
        "test_loop": {"state_dict": {}},
        "predict_loop": {"state_dict": {}},
    }
    best_key = ("ModelCheckpoint{'monitor': 'val_loss', 'mode': 'min', 'every_n_train_steps': 0, "
                "'every_n_epochs': 1, 'train_time_interval': None, 'save_on_train_epoch_end': True}")
    last_key = ("ModelCheckpoint{'monitor': None, 'mode': 'min', 'every_n_train_steps': 0, "
                "'every_n_epochs': 1, 'train_time_interval': None, 'save_on_train_epoch_end': True}")
    callbacks = {
        best_key: {"monitor": "val_loss", "best_model_score": torch.tensor(1.2345),
                   "best_model_path": f"{dirpath}/best_model.ckpt", "current_score": torch.tensor(1.2345),
                   "dirpath": dirpath, "best_k_models": {f"{dirpath}/best_model.ckpt": torch.tensor(1.2345)},
                   "kth_best_model_path": f"{dirpath}/best_model.ckpt", "kth_value": torch.tensor(1.2345),
                   "last_model_path": ""},
        last_key: {"monitor": None, "best_model_score": None, "best_model_path": "", "current_score": None,
                   "dirpath": dirpath, "best_k_models": {}, "kth_best_model_path": "",
                   "kth_value": torch.tensor(float("inf")), "last_model_path": f"{dirpath}/last.ckpt"},
    }
    optimizer_states = [{
        "state": {i: {"momentum_buffer": None} for i in range(n_params)},
        "param_groups": [{"lr": args.lr, "momentum": args.momentum, "dampening": 0,
                          "weight_decay": args.weight_decay, "nesterov": False, "maximize": False,
                          "foreach": None, "params": list(range(n_params))}],
    }]
    return {
        "epoch": epoch,
        "global_step": global_step,
        "pytorch-lightning_version": pl_version,
        "state_dict": state_dict,
        "loops": loops,
        "callbacks": callbacks,
        "optimizer_states": optimizer_states,
        "lr_schedulers": [],
        "hparams_name": "kwargs",
        "hyper_parameters": {"args": args},
    }


def write_study_checkpoint(path: str | os.PathLike, num_classes: int = NUM_CLASSES, seed: int = 0,
                           **kwargs) -> dict[str, torch.Tensor]:
    """Write a study-format Lightning checkpoint with seeded random weights to ``path``.

    Returns the un-prefixed state_dict (what ``StudyResNet.load_state_dict`` takes), for
    comparisons. The file needs ``torch.load(weights_only=False)`` or an allow-list holding
    ``argparse.Namespace`` (``torch.serialization.safe_globals([argparse.Namespace])``).
    The study itself loads it with ``torch.load`` and strips every ``"model."`` substring from
    the keys (utils.py:140-161 ``Load_Model``), then ``load_state_dict`` strictly.
    """
    ckpt = study_checkpoint_dict(num_classes, seed, **kwargs)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, path)
    return {k[len("model."):]: v for k, v in ckpt["state_dict"].items()}


def load_study_checkpoint_into(model: StudyResNet, path: str | os.PathLike) -> StudyResNet:
    """The study's Load_Model (utils.py:140-161), restated: full unpickling, drop the
    ``model.`` prefix, strict load."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    sd = {k.replace("model.", ""): v for k, v in ckpt["state_dict"].items()}
    model.load_state_dict(sd, strict=True)
    return model


# --------------------------------------------------------------------------------------------
# (d) PaQ-2-PiQ normalisation, categories, mos.csv
# --------------------------------------------------------------------------------------------

def fit_normalization(scores: Iterable[float]) -> tuple[int, float, float]:
    """``InferenceModel.adapt_from_dir`` (paq2piq_standalone.py:144-156), restated on scores.

    * peak = the most common value of the scores truncated to int (``astype(int)``); on a tie
      the value that occurs *first* in the input wins (``Counter.most_common(1)``); the study's
      input order is ``Path(dir).rglob('*.*')`` order, filtered to .jpg/.jpeg/.bmp/.png;
    * left = scores strictly below the (integer) peak; right = scores >= peak (so everything in
      [peak, peak+1) -- the whole modal bin -- is on the right);
    * each std is the population std (ddof=0) of the side's scores together with their
      reflections ``2*peak - x``; that set has mean exactly ``peak``, so the std equals the RMS
      distance of that side's scores from the peak, ``sqrt(mean((x - peak)**2))``.
    The study ran this in float32 (scores are float32) with numpy 1.x promotion; here float64.
    An empty side gives NaN (as ``np.std`` of an empty array does in the study).
    """
    x = np.asarray(list(scores), dtype=np.float64)
    peak = Counter(x.astype(int).tolist()).most_common(1)[0][0]
    left, right = x[x < peak], x[x >= peak]

    def reflected_std(side: np.ndarray) -> float:
        if side.size == 0:
            return float("nan")
        return float(np.concatenate([side, 2 * peak - side]).std())

    return int(peak), reflected_std(left), reflected_std(right)


def normalize(score, params: Sequence[float] = DEFAULT_NORM_PARAMS, n_std: float = N_STD,
              new_peak: float | None = None, clip: bool = True):
    """Map a raw PaQ-2-PiQ score (scalar or array) to the 0-100 scale (paq2piq_standalone.py:101-112,139-142).

    Below the peak: ``p' + p' * (x - p) / (n_std * std_left)``; at or above it:
    ``p' + (100 - p') * (x - p) / (n_std * std_right)`` (``p' = new_peak or p``); then clipped to
    [0, 99.9]. The study evaluates it on a float32 value and returns float32; here float64.
    """
    peak, std_left, std_right = params
    p_new = peak if new_peak is None else new_peak
    x = np.asarray(score, dtype=np.float64)
    out = np.where(x < peak,
                   p_new + p_new * (x - peak) / (n_std * std_left),
                   p_new + (100 - p_new) * (x - peak) / (n_std * std_right))
    if clip:
        out = np.clip(out, 0, CLIP_MAX)
    return float(out) if out.ndim == 0 else out


def category(normalized_score: float) -> str:
    """``categories[int(x // 20)]`` on a normalised (clipped) score: [0,20) Bad, [20,40) Poor,
    [40,60) Fair, [60,80) Good, [80,100) Excellent."""
    index = int(normalized_score // 20)
    if not 0 <= index < len(CATEGORIES):
        raise ValueError(f"normalised score {normalized_score} is outside [0, 100)")
    return CATEGORIES[index]


def denormalize(normalized_score: float, params: Sequence[float] = DEFAULT_NORM_PARAMS,
                n_std: float = N_STD) -> float:
    """Inverse of normalize (unclipped range) -- handy to make a raw score land in a category."""
    peak, std_left, std_right = params
    if normalized_score < peak:
        return peak + (normalized_score - peak) * n_std * std_left / peak
    return peak + (normalized_score - peak) * n_std * std_right / (100 - peak)


def _fmt_float32(value: float) -> str:
    """How the study's mos.csv spells numbers: ``str()`` of a numpy float32 (shortest repr),
    because the rows go through ``np.array(Data)`` (a string array) before pandas writes them."""
    return str(np.float32(value))


def mos_row(rel_path: str, global_score: float,
            params: Sequence[float] = DEFAULT_NORM_PARAMS) -> tuple[str, float, float, str]:
    """One mos.csv row for ``<class>/<file>`` with a raw score: (rel_path, raw, normalised, category).
    The normalised value and category are computed on the float32 score, as the study does."""
    s = float(np.float32(global_score))
    n = float(np.float32(normalize(s, params)))
    return rel_path, s, n, category(n)


def study_mos_path(rel_path: str, prefix: str = STUDY_DATASET_PREFIX, path_style: str = "posix") -> str:
    """The image_path string for ``<class>/<file>``.

    ``posix`` (what the study wrote, utils.py:51-55): ``prefix + "/" + class + "/" + file``.
    ``windows``: every separator a backslash. ``mixed``: the prefix as given, then backslashes --
    what ``ImageFolder`` produces on Windows from a forward-slash root (``os.path.join``).
    """
    parts = rel_path.replace("\\", "/").split("/")
    if path_style == "posix":
        return "/".join([prefix.rstrip("/"), *parts])
    if path_style == "windows":
        return "\\".join([prefix.rstrip("/\\").replace("/", "\\"), *parts])
    if path_style == "mixed":
        return "\\".join([prefix.rstrip("/\\"), *parts])
    raise ValueError(f"path_style must be posix, windows or mixed, not {path_style!r}")


def write_study_mos_csv(root: str | os.PathLike, rows: Iterable[Sequence], *,
                        prefix: str = STUDY_DATASET_PREFIX, path_style: str = "posix") -> Path:
    """Write ``<root>/mos.csv`` in the study's format (utils.py:30-71).

    ``rows``: (``<class>/<file>``, global_score[, normalized_global_score, category]); missing
    values are computed with the default normalisation (see mos_row). Columns
    ``image_path,global_score,normalized_global_score,category``, no index column, rows in the
    order given (the study's order is ``os.listdir`` order: arbitrary), numbers as float32 strs.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    out = root / "mos.csv"
    with open(out, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(MOS_COLUMNS)
        for row in rows:
            row = tuple(row)
            if len(row) == 2:
                row = mos_row(*row)
            rel, raw, normed, cat = row
            writer.writerow([study_mos_path(rel, prefix, path_style), _fmt_float32(raw),
                             _fmt_float32(normed), cat])
    return out



# --------------------------------------------------------------------------------------------
# (e) PaQ-2-PiQ standalone inference and the published test images (estimate_quality.py)
# --------------------------------------------------------------------------------------------

def random_paq2piq_state(seed: int = 1) -> dict[str, torch.Tensor]:
    """A PaQ-2-PiQ state_dict (the authors' key layout: body.*, head.*) with random weights and BN statistics."""
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        body = torch.nn.Sequential(*list(torchvision.models.resnet18(weights=None).children())[:-2])
    state = {f"body.{k}": v for k, v in body.state_dict().items()}
    for i, n in ((2, 1024), (6, 512)):  # BatchNorm1d
        state[f"head.{i}.weight"] = torch.rand(n, generator=gen) + 0.5
        state[f"head.{i}.bias"] = torch.randn(n, generator=gen) * 0.1
        state[f"head.{i}.running_mean"] = torch.randn(n, generator=gen) * 0.1
        state[f"head.{i}.running_var"] = torch.rand(n, generator=gen) + 0.5
        state[f"head.{i}.num_batches_tracked"] = torch.tensor(7)
    state["head.4.weight"] = torch.randn(512, 1024, generator=gen) * 0.03
    state["head.4.bias"] = torch.randn(512, generator=gen) * 0.03
    state["head.8.weight"] = torch.randn(1, 512, generator=gen) * 0.1
    state["head.8.bias"] = torch.tensor([72.0])
    for key, value in state.items():
        if key.startswith("body.") and key.endswith("running_var"):
            value.copy_(torch.rand(value.shape, generator=gen) + 0.5)
    return state


def study_paq2piq_global(state: dict[str, torch.Tensor], image: torch.Tensor) -> float:
    """The study's PaQ-2-PiQ global score of one CxHxW [0,1] image: resnet18 body, the whole-image RoI through
    torchvision roi_pool (2x2, 1/32), concat max/avg pooling, BN, Linear, ReLU, BN, Linear (eval mode)."""
    body = torch.nn.Sequential(*list(torchvision.models.resnet18(weights=None).children())[:-2])
    body.load_state_dict({k[len("body."):]: v for k, v in state.items() if k.startswith("body.")})
    body.eval()
    with torch.no_grad():
        h, w = image.shape[-2:]
        feats = body(image[None])
        pooled = roi_pool(feats, [torch.tensor([[0.0, 0.0, float(w), float(h)]])], (2, 2), 1 / 32)
        z = torch.cat([F.adaptive_max_pool2d(pooled, 1), F.adaptive_avg_pool2d(pooled, 1)], 1).flatten(1)
        z = F.batch_norm(z, state["head.2.running_mean"], state["head.2.running_var"], state["head.2.weight"],
                         state["head.2.bias"], False, 0.0, 1e-5)
        z = F.relu(F.linear(z, state["head.4.weight"], state["head.4.bias"]))
        z = F.batch_norm(z, state["head.6.running_mean"], state["head.6.running_var"], state["head.6.weight"],
                         state["head.6.bias"], False, 0.0, 1e-5)
        return float(F.linear(z, state["head.8.weight"], state["head.8.bias"])[0, 0])


def study_paq2piq_predict(state: dict[str, torch.Tensor], image: Image.Image) -> tuple[float, str]:
    """InferenceModel.predict_from_pil_image (paq2piq_standalone.py): ToTensor of the RGB image at its own size, the
    raw global score as float32, its category under the file's default normalisation."""
    x = _to_tensor(image.convert("RGB"))
    score = float(np.float32(study_paq2piq_global(state, x)))
    return score, category(float(np.float32(normalize(score))))


def study_save_image(item: torch.Tensor, path: Path) -> None:
    """utils.py Save_Images: ``Image.fromarray(np.uint8(255.0 * img.numpy().transpose(1,2,0))).save(png)``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.uint8(255.0 * item.numpy().transpose(1, 2, 0))).save(path)


def study_generate_corrupted(clean_png: Path, corruption: str, severity: int, out_png: Path) -> None:
    """utils.py generate_corrupted_images for one file: ``np.uint8(255 * matplotlib imread(png))``, corrupt (the
    study never seeds), ``transforms.CenterCrop((224,224))`` of the PIL image, save as PNG."""
    import matplotlib.image as pimg
    from imagecorruptions import corrupt
    from torchvision import transforms

    img = np.uint8(255.0 * pimg.imread(clean_png))
    out = transforms.CenterCrop((CROP, CROP))(Image.fromarray(corrupt(img, corruption_name=corruption,
                                                                      severity=severity)))
    out_png.parent.mkdir(parents=True, exist_ok=True)
    out.save(out_png)


def study_predict_label(img: np.ndarray, model: StudyResNet, index_to_class: dict[int, str]) -> tuple[str, float]:
    """utils.py predict_label: the float HxWx3 image as a batch of one, softmax, the top class and its probability
    (the study's model keeps dropout on: build it with ``dropout_bug=True``)."""
    with torch.no_grad():
        prob = F.softmax(model(torch.Tensor(np.expand_dims(img.transpose(2, 0, 1), axis=0))), dim=1)
    p, i = torch.max(prob, 1)
    return index_to_class[int(i[0])], float(p[0])


def write_study_test_images(study_dir: Path, dataset_root: Path, paq_state: dict[str, torch.Tensor],
                            classifier: StudyResNet, corruptions: Sequence[str] = STUDY_CORRUPTIONS,
                            severities: Sequence[int] = (1, 2, 3)) -> Path:
    """estimate_quality.py on a dataset: the validation item at position 5 of the study's split (utils.py
    Save_Images, ``__getitem__(i+5)``) saved as test_images/severity=-1/<class>.png and severity=0/<class>.png, each
    corruption re-made from the severity=-1 file, then test_images/mos.csv: the PaQ-2-PiQ score and category of each
    file read back with matplotlib (``uint8(255 * imread)``), and the classifier's label and probability on the float
    image. As in the study, rows for severities >= 1 keep severity 0's pred_label (``pred_labe`` is assigned
    instead) while their probability is their own; severity -1 has "No Prediction" and 1."""
    import matplotlib.image as pimg

    folder = torchvision.datasets.ImageFolder(str(dataset_root))
    samples = folder.samples
    index_to_class = dict(enumerate(folder.classes))
    _, val = study_split([t for _, t in samples])
    path, label = samples[val[5]]
    name = index_to_class[label]
    images = study_dir / "test_images"
    item = study_transform(study_load_image(path))
    study_save_image(item, images / "severity=-1" / f"{name}.png")
    study_save_image(item, images / "severity=0" / f"{name}.png")
    for severity in severities:
        for corruption in corruptions:
            study_generate_corrupted(images / "severity=-1" / f"{name}.png", corruption, severity,
                                     images / f"severity={severity}" / corruption / f"{name}.png")
    rows = []
    pred_label = "No Prediction"
    for severity in (-1, 0, *severities):
        for corruption in (None,) if severity < 1 else corruptions:
            rel = f"test_images/severity={severity}/" + (f"{corruption}/" if corruption else "") + f"{name}.png"
            img = pimg.imread(study_dir / rel)
            score, cat = study_paq2piq_predict(paq_state, Image.fromarray(np.uint8(255.0 * img)))
            if severity == -1:
                p = 1
            elif severity == 0:
                pred_label, p = study_predict_label(img, classifier, index_to_class)
            else:
                _, p = study_predict_label(img, classifier, index_to_class)
            rows.append([rel, str(np.float32(score)), cat, name, "No Prediction" if severity == -1 else pred_label,
                         str(p)])
    out = images / "mos.csv"
    with open(out, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["image_path", "global_score", "category", "true_label", "pred_label", "probability"])
        writer.writerows(rows)
    return out



def build_study_fixture(folder: Path, n_classes: int = 3, per_class: int = 10) -> dict[str, Path]:
    """A small stand-in for the study's inputs under `folder`: an MIT-Indoor-like dataset (mit-indoor-scenes/),
    PaQ-2-PiQ weights (PAQ.pth) and a study checkpoint (best_model.ckpt) with seeded random values, and a folder
    laid out like the study's repository whose test_images/ and mos.csv write_study_test_images made (dropout on,
    motion_blur and dropout drawn from fixed but arbitrary states, as the study's were from unknown ones)."""
    folder = Path(folder)
    root = folder / "mit-indoor-scenes"
    make_study_dataset(root, classes=n_classes, per_class=per_class, seed=11)
    paq_state = random_paq2piq_state(5)
    torch.save({"model": paq_state}, folder / "PAQ.pth")
    state = write_study_checkpoint(folder / "best_model.ckpt", num_classes=n_classes, seed=4)
    model = StudyResNet(n_classes, dropout_bug=True).eval()
    model.load_state_dict(state)
    repo = folder / "Saliency-Maps-NR-IQA-Classification-Models"
    with torch.random.fork_rng(devices=[]):
        np.random.seed(123)
        torch.manual_seed(7)
        write_study_test_images(repo, root, paq_state, model)
    return {"root": root, "paq": folder / "PAQ.pth", "ckpt": folder / "best_model.ckpt", "repo": repo}


# --------------------------------------------------------------------------------------------
# Synthetic dataset
# --------------------------------------------------------------------------------------------

MIT_CLASS_NAMES = ("airport_inside", "artstudio", "auditorium", "bakery", "bar", "bathroom",
                   "bedroom", "bookstore", "bowling", "buffet", "casino", "children_room")

_CATEGORY_CYCLE = ("Good", "Excellent", "Fair", "Good", "Poor", "Excellent", "Bad", "Good")


def _photo_sources() -> list[np.ndarray]:
    import skimage.data as data

    return [data.coffee(), data.chelsea(), data.rocket(), data.astronaut(),
            data.hubble_deep_field(), data.immunohistochemistry(), data.colorwheel(), data.cat()]


def _synthetic_photo(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A crop of a bundled skimage photo resized to (width, height), plus a little noise."""
    sources = _photo_sources()
    src = sources[int(rng.integers(len(sources)))]
    h, w = src.shape[:2]
    ch, cw = int(rng.integers(h // 2, h + 1)), int(rng.integers(w // 2, w + 1))
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    crop = Image.fromarray(src[y:y + ch, x:x + cw, :3]).resize((width, height), Image.BILINEAR)
    arr = np.asarray(crop, dtype=np.int16) + rng.integers(-6, 7, size=(height, width, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def make_study_dataset(root: str | os.PathLike, classes: int = 3, per_class: int = 4, seed: int = 0, *,
                       prefix: str = STUDY_DATASET_PREFIX, path_style: str = "posix") -> list[dict]:
    """Write a small MIT-Indoor-like ImageFolder tree under ``root`` plus its study-format mos.csv.

    ``<root>/<class>/<file>`` for ``classes`` classes (MIT Indoor names) of ``per_class`` images,
    all non-square, mostly larger than 224 with odd excesses (so CenterCrop's half-to-even
    rounding matters). Among them, in this order over the flattened list: one greyscale 'L'
    JPEG, one CMYK JPEG, one palette 'P' PNG and one RGB JPEG smaller than 224 on both sides
    (zero padding); the rest RGB JPEGs. Raw scores are chosen so the categories cycle through
    Good/Excellent/Fair/Good/Poor/Excellent/Bad/Good (default normalisation), so both kept and
    dropped images exist for the Good/Excellent filter. mos.csv rows are written in a seeded
    shuffled order (the study's rows follow os.listdir). Returns one dict per image: class,
    target, rel_path, path, mode, size (w, h), global_score, normalized_global_score, category.
    """
    if classes > len(MIT_CLASS_NAMES):
        names = [f"class_{i:02d}" for i in range(classes)]
    else:
        names = list(MIT_CLASS_NAMES[:classes])
    root = Path(root)
    rng = np.random.default_rng(seed)
    specials = ["L", "CMYK", "P", "small"]
    manifest: list[dict] = []
    k = 0
    for target, name in enumerate(names):
        for i in range(per_class):
            kind = specials[k] if k < len(specials) else "RGB"
            if kind == "small":
                width, height = 197, 151
            else:
                while True:
                    width, height = int(rng.integers(229, 521)), int(rng.integers(227, 401))
                    if width != height:
                        break
            img = _synthetic_photo(rng, width, height)
            ext = ".png" if kind == "P" else ".jpg"
            fname = f"{name}_{i:03d}{ext}"
            path = root / name / fname
            path.parent.mkdir(parents=True, exist_ok=True)
            if kind == "L":
                img = img.convert("L")
            elif kind == "CMYK":
                img = img.convert("CMYK")
            elif kind == "P":
                img = img.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
            if ext == ".png":
                img.save(path)
            else:
                img.save(path, quality=92)
            wanted = _CATEGORY_CYCLE[k % len(_CATEGORY_CYCLE)]
            lo = 20 * CATEGORIES.index(wanted)
            target_norm = lo + 4 + 12 * float(rng.random())
            rel, raw, normed, cat = mos_row(f"{name}/{fname}", denormalize(target_norm))
            assert cat == wanted, (cat, wanted)
            manifest.append(dict(cls=name, target=target, rel_path=rel, path=str(path),
                                 mode=Image.open(path).mode, size=(width, height), global_score=raw,
                                 normalized_global_score=normed, category=cat))
            k += 1
    order = rng.permutation(len(manifest))
    write_study_mos_csv(root, [(manifest[j]["rel_path"], manifest[j]["global_score"],
                                manifest[j]["normalized_global_score"], manifest[j]["category"])
                               for j in order], prefix=prefix, path_style=path_style)
    return manifest


def study_validation_size(n: int) -> int:
    """Number of validation samples sklearn gives for ``test_size=0.2``: ceil(0.2 * n)."""
    return math.ceil(SPLIT_TEST_SIZE * n)
