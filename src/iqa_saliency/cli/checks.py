"""Values checked before any model loads or run folder is written: one `error:` line and exit 2 each."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from ..errors import ConfigError, exit_on_user_error
from ..io.atomic import check_writable
from ..report.style import FigureStyle, StudyFigures

# numpy's legacy seeding (np.random.seed, which Lightning's seed_everything also calls) takes 0 to 2**32 - 1;
# torch.manual_seed would take more, so the narrower range is the one every seeded library accepts.
SEED_MAX = 2**32 - 1
HEX = re.compile(r"[0-9a-fA-F]{1,64}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_seed(value: Any, key: str = "seed") -> int:
    if not _is_int(value) or not 0 <= value <= SEED_MAX:
        raise ConfigError(f"{key}={value!r} is not valid. Use a whole number from 0 to {SEED_MAX} (2**32 - 1, "
                          "the range numpy's and Lightning's seeding accept).")
    return value


def check_batch_size(value: Any, key: str = "dataset.batch_size") -> int:
    if not _is_int(value) or value < 1:
        raise ConfigError(f"{key}={value!r} is not valid. Use a whole number, 1 or more.")
    return value


def check_sha256(value: Any, key: str) -> str | None:
    """A pinned digest (or prefix) as hex text. Hydra reads a digits-only one as a number, which loses leading
    zeros: such a value is refused with how to quote it."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{key}={value!r} was read as a number, not as hex text (Hydra parses digits-only "
                          f"values as numbers). Quote it: {key}=\"'{value}'\" (or give more of the digest).")
    if not HEX.fullmatch(value):
        raise ConfigError(f"{key}={value!r} is not a sha256 (up to 64 hex digits). Set {key} to the file's digest "
                          "or a prefix of it, or to null.")
    return value


def check_values(cfg: DictConfig) -> None:
    """The run-wide values a typo can break, checked before any model loads."""
    check_seed(cfg.get("seed"))
    dataset = cfg.get("dataset")
    if dataset is not None and "batch_size" in dataset:
        check_batch_size(dataset.batch_size)
    if dataset is not None and dataset.get("max_pixels") is not None:
        check_batch_size(dataset.max_pixels, "dataset.max_pixels")
    if dataset is not None and dataset.get("split_seed") is not None:
        check_seed(dataset.split_seed, "dataset.split_seed")
    for group in ("quality", "classifier"):
        node = cfg.get(group)
        if isinstance(node, DictConfig) and "sha256" in node:
            check_sha256(node.sha256, f"{group}.sha256")
    FigureStyle.from_config(cfg.get("report"))  # report.format / report.dpi, used when a -m sweep ends
    study = StudyFigures.from_config(cfg.get("report"))
    if study.enabled and dataset is not None and not dataset.get("save_images", False):
        raise ConfigError("report.study_figures=true draws the corrupted inputs: add dataset.save_images=true.")
    check_zoo_names(cfg)


def check_zoo_names(cfg: DictConfig) -> None:
    """A pyiqa metric's and a timm classifier's name, checked before either model loads (zoo extra only)."""
    quality, classifier = cfg.get("quality"), cfg.get("classifier")
    if isinstance(quality, DictConfig) and "pyiqa_zoo" in str(quality.get("_target_", "")):
        from ..models.pyiqa_zoo import check_metric_name

        check_metric_name(quality.metric)
    if isinstance(classifier, DictConfig) and "name" in classifier and "timm" in str(classifier.get("_target_", "")):
        from ..models.timm_zoo import check_timm_name

        check_timm_name(classifier.name)


def check_output_root(argv: list[str]) -> Path | None:
    """Before Hydra writes anything: the folder the run or sweep will be written to must take a file (a full
    disk or a read-only folder is one line, not an empty .hydra/config.yaml and a traceback).

    Returns the deepest of its folders that existed before (what a refused run's clean-up stops at)."""
    key = "hydra.sweep.dir=" if ("-m" in argv or "--multirun" in argv) else "hydra.run.dir="
    given = [arg[len(key):].strip("'\"") for arg in argv if arg.startswith(key)]
    roots = [arg[len("paths.output_dir="):].strip("'\"") for arg in argv if arg.startswith("paths.output_dir=")]
    folder = given[-1] if given and "${" not in given[-1] else (roots[-1] if roots else "outputs")
    if "${" in folder:
        return None
    existed = Path(folder).absolute()
    while not existed.exists() and existed != existed.parent:
        existed = existed.parent
    with exit_on_user_error():
        check_writable(Path(folder))
    created = Path(folder).absolute()
    while created != existed:  # Hydra makes them when it writes there (not for --help, --cfg or completion)
        created.rmdir()
        created = created.parent
    return existed
