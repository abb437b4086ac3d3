"""One typed schema for every configuration key of evaluate.yaml and train.yaml, checked after Hydra composes and
before anything is created or loaded: a key with a wrong type, a value out of range or not among the choices, or a
key no config defines is one `ConfigError` line that names the key and the fix.

Data, not code: `KEYS` maps each dotted key to a `Spec` (type, range, choices); the attribution methods' option
names come from conf/attribution/*.yaml and their types from `OPTIONS`. Nothing heavy is imported here (no torch,
captum, Lightning, imagecorruptions): the choices that the library defines in heavy modules are restated and a
test compares them with the library's own lists.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping
from functools import cache
from importlib import resources
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from ..errors import ConfigError
from .specs import (  # noqa: F401  (SEED_MAX, CATEGORIES: part of this module's interface)
    ANY,
    BOOL,
    CATEGORIES,
    CATEGORY,
    EXISTING_DIR,
    EXISTING_FILE,
    FILE_PATH,
    FOLDER,
    HEX,
    NULL,
    POSITIVE,
    SEED,
    SEED_MAX,
    SIZE,
    TEXT,
    Choice,
    Int,
    ListOf,
    Num,
    Spec,
    is_whole,
)

# imagecorruptions' get_corruption_names("all"), and the clean cell
CORRUPTIONS = ("none", "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
               "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
               "jpeg_compression", "speckle_noise", "gaussian_blur", "spatter", "saturate")
SAMPLES = ("astronaut", "camera", "chelsea", "clock", "coffee", "hubble", "motorcycle", "rocket")
PRECISIONS = ("64-true", "64", "32-true", "32", "16-true", "16-mixed", "16", "bf16-true", "bf16-mixed", "bf16",
              "transformer-engine", "transformer-engine-float16")


# ------------------------------------------------------------------------------------------------- the key table
# Every key a config of the groups can hold (the union over a group's choices); `group.*` marks a group whose extra
# keys pass through to a third-party constructor (Lightning's Trainer, a logger): those keys are typed where known.
DATASET = {
    "source._target_": TEXT, "source.root": TEXT | NULL, "source.decode": TEXT,
    "source.names": ListOf(Choice(*SAMPLES)) | NULL,
    "root": TEXT | NULL, "resize": SIZE, "crop": SIZE,
    "corrupt_at": Choice("crop", "full_size"), "small": Choice("upscale", "pad"),
    "decode": Choice("oriented", "imagefolder", "torchvision"), "save_images": BOOL, "max_pixels": POSITIVE,
    "batch_size": POSITIVE, "num_workers": Int(0) | Choice("auto"),
    "split": Choice("all", "train", "val"), "split_method": Choice("project", "study"),
    "val_fraction": Num(0, 1, open_lo=True, open_hi=True, example="0.2"), "split_seed": SEED,
    "quality_filter": Spec("a list of quality categories, or null", (ListOf(CATEGORY) | NULL).accepts, "[Good]",
                           lambda key, v: f"Unknown quality category {[c for c in v if not CATEGORY.accepts(c)]} "
                           f"in {key}. Use names from {list(CATEGORIES)}, e.g. {key}=[Good,Excellent]."
                           if isinstance(v, list) else ""), "quality_cache": FILE_PATH,
    "quality_scores": EXISTING_FILE | NULL, "quality_score_size": Choice("eval", "full"),
}
CLASSIFIER = {
    "_target_": TEXT, "arch": TEXT, "name": TEXT, "weights": TEXT | NULL, "checkpoint": TEXT | NULL, "normalize": BOOL,
    "num_classes": POSITIVE | NULL, "pretrained": BOOL, "seed": SEED,
}
QUALITY = {
    "_target_": TEXT, "checkpoint": TEXT | NULL, "sha256": HEX | NULL, "pretrained": BOOL, "seed": SEED,
    "normalization.name": Choice("study_defaults", "fit", "official"), "normalization.fit_dir": EXISTING_DIR | NULL,
    "normalization.cache": FILE_PATH,
    "metric": TEXT, "map_method": TEXT,  # quality=pyiqa (its metric names come from pyiqa, checked when it loads)
}
ATTRIBUTION = {"name": TEXT, "target": Choice("pred", "label")}  # options.*: per method, below
LOGGER = {
    "_target_": TEXT, "save_dir": ANY, "name": TEXT | NULL, "version": ANY, "project": TEXT, "offline": BOOL,
    "job_type": TEXT | NULL, "group": TEXT | NULL, "tags": ListOf(ANY), "log_model": BOOL | Choice("all"),
}
TRAINER = {
    "_target_": TEXT, "accelerator": Choice("cpu", "gpu", "cuda", "mps", "tpu", "auto"),
    "devices": POSITIVE | Choice("auto", -1) | ListOf(Int(0)) | TEXT, "num_nodes": POSITIVE, "strategy": TEXT,
    "precision": Choice(*PRECISIONS, 16, 32, 64), "inference_mode": BOOL, "use_distributed_sampler": BOOL,
    "enable_checkpointing": BOOL, "enable_model_summary": BOOL, "enable_progress_bar": BOOL,
    "num_sanity_val_steps": Int(-1), "max_epochs": Int(-1), "log_every_n_steps": POSITIVE,
    "deterministic": BOOL | Choice("warn"), "benchmark": BOOL | NULL, "default_root_dir": TEXT | NULL,
}
SIMILARITY = {"quality_map": Choice("raw", "inverted", "drop"), "quality_saliency": TEXT}  # checked against methods
CHECK = {"name": Choice("randomization"), "methods": ListOf(TEXT) | NULL, "layers": ListOf(TEXT) | NULL,
         "max_images": POSITIVE, "flag_spearman": Num(0, 1, example="0.5")}
COMMON = {"task_name": TEXT, "seed": SEED, "pretrained": BOOL, "paths.output_dir": TEXT}
EVALUATE = {
    **COMMON,
    "corruption": Spec("one of: " + ", ".join(CORRUPTIONS), Choice(*CORRUPTIONS).accepts, "motion_blur",
                       lambda key, v: f"Unknown corruption '{v}'.{suggest(v, CORRUPTIONS)} Use one of: "
                       f"{', '.join(CORRUPTIONS)}."),
    "severity": Spec("a whole number from 0 (clean) to 5", Int(0, 5).accepts, "2",
                     lambda key, v: f"Severity {v!r} is out of range ({key}={v!r}). Use an integer from 0 (clean) "
                     "to 5."), "allow_untrained_fallback": BOOL,
    "figures": Int(0, example="8"), "save_maps": BOOL, "maps_format": Choice("npz", "zarr"),
    "corruption_backend": Choice("numpy", "torch"), "resume": BOOL, "clean_cache": Choice("auto") | NULL | FOLDER,
    "channels_last": BOOL, "fold_batchnorm": BOOL, "corruption_cache": FOLDER | NULL,
    "progress_interval": Num(0, open_lo=True, example="30"), "print_summary": BOOL,
    "report.format": Choice("png", "pdf", "svg"), "report.dpi": POSITIVE, "report.study_figures": BOOL,
    "report.study_image": Int(0) | TEXT, "report.study_severity": Int(1, 5),
    "faithfulness.steps": Int(0, example="20"), "faithfulness.insertion": BOOL,
}
TRAIN = {
    **COMMON, "allow_untrained_fallback": BOOL, "ckpt_path": TEXT | NULL,
    "epochs": POSITIVE, "label_smoothing": Num(0, 1, open_hi=True, example="0.1"),
    "augment": BOOL, "optimizer.name": Choice("sgd", "adamw"), "optimizer.lr": Num(0, open_lo=True, example="0.01"),
    "optimizer.momentum": Num(0, 1, open_hi=True, example="0.9"), "optimizer.nesterov": BOOL,
    "optimizer.weight_decay": Num(0, example="1e-4"), "scheduler.name": Choice("cosine", "step", "none"),
    "scheduler.warmup_epochs": Int(0), "scheduler.step_size": POSITIVE,
    "scheduler.gamma": Num(0, open_lo=True, example="0.1"), "early_stopping.patience": POSITIVE | NULL,
}
GROUPS = {"dataset": DATASET, "classifier": CLASSIFIER, "quality": QUALITY, "logger": LOGGER, "trainer": TRAINER}
OPEN_GROUPS = ("logger", "trainer")  # their constructors take more keyword arguments than the configs list
TASKS: dict[str, dict[str, Spec]] = {
    "evaluate": {**EVALUATE, **{f"{g}.{k}": s for g, keys in {**GROUPS, "attribution": ATTRIBUTION,
                                                              "similarity": SIMILARITY, "check": CHECK}.items()
                                for k, s in keys.items()}},
    "train": {**TRAIN, **{f"{g}.{k}": s for g, keys in GROUPS.items() for k, s in keys.items()}},
}
# Attribution options, by name, for every method that takes them (which method takes which: its yaml)
OPTIONS = {
    "layer": TEXT | NULL, "relu": BOOL, "interpolate": Choice("bilinear", "nearest", "bicubic"),
    "eps": Num(0, example="0"), "reduce": Choice("abs_sum", "sum", "max_abs", "l2"),
    "baseline": Choice("black", "blurred", "mean"), "blur_sigma": Num(0, open_lo=True, example="5.0"),
    "n_steps": POSITIVE, "internal_batch_size": POSITIVE, "n_samples": POSITIVE,
    "stdevs": Num(0, open_lo=True, example="0.15"), "nt_samples": POSITIVE, "nt_samples_batch_size": POSITIVE,
    "window": POSITIVE, "stride": POSITIVE, "perturbations_per_eval": POSITIVE, "seed": SEED,
    "head_fusion": Choice("mean", "max", "min"),
}
METHOD_OPTIONS = {"gradient_shap": {"baseline": Choice("black", "mean")}}  # narrower than OPTIONS for one method
OPTION_NODES = {"attribution.options": "attribution.name", "similarity.quality_saliency_options":
                "similarity.quality_saliency"}


@cache
def method_options() -> dict[str, tuple[str, ...]]:
    """Each attribution method (a conf/attribution/<name>.yaml) and its option names."""
    folder = resources.files("iqa_saliency.conf") / "attribution"
    out = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            node = OmegaConf.create(entry.read_text())
            out[entry.name[:-5]] = tuple(node.get("options") or {})
    return out


# ------------------------------------------------------------------------------------------------------ checking
_UNSET = object()


def _leaves(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, raw value) of every leaf; lists and empty nodes are leaves."""
    if isinstance(node, Mapping) and node:
        for key, value in node.items():
            yield from _leaves(value, f"{prefix}{key}.")
    else:
        yield prefix[:-1], node


def _value(cfg: DictConfig, key: str) -> Any:
    """The resolved value at `key`; _UNSET where it refers to Hydra's runtime (set only once a job runs)."""
    try:
        value = OmegaConf.select(cfg, key, throw_on_missing=True)
        return OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value
    except Exception as exc:  # noqa: BLE001  (an interpolation that cannot resolve: OmegaConf's several errors)
        raw = OmegaConf.to_container(cfg, resolve=False)
        for part in key.split("."):
            raw = raw.get(part) if isinstance(raw, dict) else None
        if (isinstance(raw, str) and "${hydra:" in raw) or key.split(".")[0] in OPEN_GROUPS:
            return _UNSET  # Hydra's runtime; or a logger's name the other entry point replaces (train.py's)
        raise ConfigError(f"{key} cannot be resolved ({type(exc).__name__}: {str(exc).splitlines()[0]}). "
                          f"Set {key} to a plain value.") from None


class _Values:
    """Resolved values by dotted key: each top-level node resolved once (a node that refers to Hydra's runtime,
    such as a logger's save_dir, key by key)."""

    def __init__(self, cfg: DictConfig, raw: dict[str, Any]) -> None:
        self.cfg, self.nodes = cfg, {}
        for top in raw:
            try:
                self.nodes[top] = OmegaConf.to_container(cfg[top], resolve=True) if isinstance(
                    cfg[top], (DictConfig, ListConfig)) else cfg[top]
            except Exception:  # noqa: BLE001,S112  (left to _value, which names the key)
                continue

    def __call__(self, key: str) -> Any:
        top, _, rest = key.partition(".")
        if top not in self.nodes:
            return _value(self.cfg, key)
        node = self.nodes[top]
        for part in rest.split(".") if rest else []:
            node = node.get(part) if isinstance(node, dict) else None
        return node


def _show(value: Any) -> str:
    return "null" if value is None else repr(value)


def suggest(word: str, choices: Any) -> str:
    """" Did you mean X?" for the closest of `choices` (or the same word in another case), else ""."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices if str(c) != str(word)], n=1, cutoff=0.6)
    if not close:
        lower = {str(c).lower(): str(c) for c in choices}
        close = [lower[str(word).lower()]] if str(word).lower() in lower else []
    return f" Did you mean {close[0]}?" if close else ""


def _refuse(key: str, value: Any, spec: Spec) -> ConfigError:
    if spec.explain is not None and spec.explain(key, value):
        return ConfigError(spec.explain(key, value))
    choices = spec.want.split("one of: ", 1)[1].split(", or ")[0].split(", ") if "one of: " in spec.want else []
    hint = suggest(value, choices) if isinstance(value, str) and choices else ""
    example = f" (e.g. {key}={spec.example})" if spec.example and not choices else ""
    wrong = "is out of range" if is_whole(value) and "whole number" in spec.want else "is not valid"
    return ConfigError(f"{key}={_show(value)} {wrong}.{hint} Use {spec.want}{example}.")


def _unknown(key: str, known: list[str]) -> ConfigError:
    group = key.rsplit(".", 1)[0] if "." in key else ""
    siblings = sorted(k.rsplit(".", 1)[-1] for k in known if (k.rsplit(".", 1)[0] if "." in k else "") == group)
    where = f"{group} has" if group else "the configuration has"
    return ConfigError(f"Unknown key '{key}': {where} no such key.{suggest(key, known)} Check the spelling "
                       f"(keys: {', '.join(siblings[:30])}{', ...' if len(siblings) > 30 else ''}).")


def _option_specs(method: Any, node: str) -> dict[str, Spec] | None:
    """The typed options of `method` under `node`; None when the method itself is unknown (reported elsewhere)."""
    names = method_options().get(method) if isinstance(method, str) else None
    if names is None:
        return None
    return {f"{node}.{name}": METHOD_OPTIONS.get(method, {}).get(name, OPTIONS.get(name, ANY)) for name in names}


def check_config(cfg: DictConfig, task: str) -> None:
    """Raise ConfigError for the first key of `cfg` (an `evaluate` or `train` config) that the schema refuses."""
    table = dict(TASKS[task])
    raw = OmegaConf.to_container(cfg, resolve=False)
    raw.pop("hydra", None)
    value = _Values(cfg, raw)
    for node, name_key in OPTION_NODES.items():
        if name_key not in table or not _present(raw, name_key):
            continue
        method = value(name_key)
        if method == "local" and name_key != "attribution.name":
            continue
        specs = _option_specs(method, node)
        if specs is None:
            names = sorted(method_options()) + ([] if name_key == "attribution.name" else ["local"])
            raise ConfigError(f"Unknown attribution method '{method}' ({name_key}).{suggest(method, names)} "
                              f"Use one of: {', '.join(names)}.")
        table.update(specs)
    known = sorted(set(table) | config_keys(task))
    for key, _ in _leaves(raw):
        parent = key.rsplit(".", 1)[0]
        if key in table or key in OPTION_NODES:
            continue
        if parent in OPTION_NODES:  # another method's option is no option of this one
            method = value(OPTION_NODES[parent])
            name = key.rsplit(".", 1)[-1]
            opts = [k.rsplit(".", 1)[-1] for k in table if k.startswith(parent + ".")]
            raise ConfigError(f"{method} has no option {name}.{suggest(name, opts)} Use {parent} keys from: "
                              f"{', '.join(opts) or '(none)'}.")
        if key in known or key.split(".")[0] in OPEN_GROUPS:
            continue
        raise _unknown(key, known)
    # keys given as values before the keys that refer to them (dataset.root before dataset.source.root's ${..})
    for key, spec in sorted(table.items(), key=lambda item: _refers(raw, item[0])):
        if not _present(raw, key):
            continue  # absent from this choice of the group (dataset=samples has no split)
        found = value(key)
        if found is not _UNSET and not spec.accepts(found):
            raise _refuse(key, found, spec)
    _cross_checks(cfg, task)


def _refers(raw: Any, key: str) -> bool:
    """True when the key's value is an interpolation of another key."""
    for part in key.split("."):
        raw = raw.get(part) if isinstance(raw, dict) else None
    return isinstance(raw, str) and "${" in raw


def _present(raw: Any, key: str) -> bool:
    for part in key.split("."):
        if not isinstance(raw, dict) or part not in raw:
            return False
        raw = raw[part]
    return True


@cache
def config_sources() -> dict[str, tuple[str, ...]]:
    """Every dotted key some packaged config file defines, and the files (`group=option`) that define it (a group's
    keys under its name; `@package _global_` files at the top; Hydra's own keys left out)."""
    root = resources.files("iqa_saliency.conf")
    sources: dict[str, list[str]] = {}
    entries = [(root, "")] + [(root / g, g) for g in ("dataset", "classifier", "quality", "attribution", "logger",
                                                       "trainer", "paths", "recipe", "experiment", "check")]
    for folder, group in entries:
        for entry in sorted(folder.iterdir(), key=lambda e: e.name):
            if not entry.name.endswith(".yaml"):
                continue
            text = entry.read_text()
            node = OmegaConf.to_container(OmegaConf.create(text), resolve=False) or {}
            node.pop("defaults", None)
            node.pop("hydra", None)
            prefix = "" if (not group or "@package _global_" in text) else f"{group}."
            for key, _ in _leaves(node):
                if key:
                    sources.setdefault(prefix + key, []).append(f"{group}={entry.name[:-5]}" if group else
                                                                entry.name)
    return {k: tuple(v) for k, v in sources.items()}


TASK_FILES = {"evaluate": ("evaluate.yaml", "experiment=", "check="), "train": ("train.yaml", "recipe=")}


def config_keys(task: str | None = None) -> frozenset[str]:
    """Every dotted key some packaged config file (of `task`'s, if given) defines: a key outside these and the
    schema is a typo."""
    other = () if task is None else tuple(f for t, files in TASK_FILES.items() if t != task for f in files)
    return frozenset(k for k, files in config_sources().items() if any(not f.startswith(other) for f in files))


def _empty_node(cfg: DictConfig, key: str) -> bool:
    node = OmegaConf.select(cfg, key, default=None)
    return isinstance(node, DictConfig) and len(node) == 0 and key.split(".")[0] in GROUPS


def _cross_checks(cfg: DictConfig, task: str) -> None:
    """Rules between keys."""
    if task == "evaluate":
        if cfg.get("corruption") == "none" and cfg.get("severity") != 0:
            raise ConfigError(f"corruption=none has no severity {cfg.get('severity')}. Use severity=0, or name a "
                              "corruption.")
        saliency = OmegaConf.select(cfg, "similarity.quality_saliency", default="local")
        if saliency != "local" and saliency not in method_options():
            names = ["local", *sorted(method_options())]
            raise ConfigError(f"similarity.quality_saliency={saliency!r} is not valid.{suggest(saliency, names)} "
                              f"Use one of: {', '.join(names)}.")
        if cfg.get("maps_format") == "zarr" and OmegaConf.select(cfg, "dataset.crop", default=None) is None:
            raise ConfigError("maps_format=zarr stores maps of one size: set dataset.crop, or use maps_format=npz.")
        methods = OmegaConf.select(cfg, "check.methods", default=None)
        for name in methods or []:
            if name not in method_options():
                raise ConfigError(f"check.methods names '{name}', not an attribution method."
                                  f"{suggest(name, method_options())} Use names from: "
                                  f"{', '.join(sorted(method_options()))}.")
    if task == "train" and OmegaConf.select(cfg, "dataset.crop", default=None) is None:
        raise ConfigError("Training needs a fixed input size. Set dataset.crop=224 (or another size).")
