"""Every config composes (fast, no model loads), and the installed package carries every config folder."""

from __future__ import annotations

import pytest
import tomllib
from helpers.cli import ROOT
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

CONF = ROOT / "conf"
GROUPS = ("dataset", "quality", "classifier", "attribution", "logger", "trainer")


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def _compose(name: str, overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name=name, overrides=overrides, return_hydra_config=True)


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in _options(g)])
def test_every_group_option_composes_for_evaluate(group, option):
    cfg = _compose("evaluate", [f"{group}={option}"])
    OmegaConf.resolve(cfg.hydra.job)  # the job name and override dir resolve
    assert "_target_" in cfg.dataset.source and "_target_" in cfg.quality and "_target_" in cfg.classifier
    assert cfg.attribution.name in {p.stem for p in (CONF / "attribution").glob("*.yaml")}


@pytest.mark.parametrize("experiment", _options("experiment"))
def test_every_experiment_composes(experiment):
    cfg = _compose("evaluate", [f"+experiment={experiment}"])
    assert cfg.task_name == experiment


@pytest.mark.parametrize("option", _options("dataset"))
def test_train_config_composes_with_every_dataset(option):
    cfg = _compose("train", [f"dataset={option}"])
    assert cfg.epochs > 0 and "_target_" in cfg.classifier


def test_study_recipe_sets_the_studys_training_and_the_command_line_still_wins():
    cfg = _compose("train", ["recipe=study", "classifier=study_resnet18", "dataset=mit_indoor"])
    assert (cfg.epochs, cfg.dataset.batch_size, cfg.label_smoothing, cfg.augment) == (60, 32, 0.0, False)
    assert (cfg.optimizer.name, cfg.optimizer.lr, cfg.optimizer.momentum, cfg.optimizer.weight_decay) == (
        "sgd", 1e-3, 0.0, 1e-3)
    assert cfg.scheduler.name == "none" and cfg.classifier.normalize is False
    assert _compose("train", ["recipe=study", "dataset.batch_size=8"]).dataset.batch_size == 8
    default = _compose("train", [])
    assert (default.epochs, default.augment, default.optimizer.lr, default.scheduler.name) == (30, True, 0.01, "cosine")


def test_the_quality_group_holds_only_model_arguments():
    """quality is instantiated as load_paq2piq(**group) less `normalization` (quality.normalization, issue 12: how
    raw scores become 0-100 and categories; the command line takes it out first): evaluate-only keys live under
    `similarity`."""
    import inspect

    from iqa_saliency.models.paq2piq import load_paq2piq

    cfg = _compose("evaluate", [])
    keys = set(cfg.quality) - {"_target_", "normalization"}
    assert keys <= set(inspect.signature(load_paq2piq).parameters)
    assert set(cfg.quality.normalization) == {"name", "fit_dir", "cache"}
    assert {"quality_map", "quality_saliency", "quality_saliency_options"} <= set(cfg.similarity)


def test_every_config_folder_is_an_installed_package():
    """pyproject lists conf/ and each of its folders as iqa_saliency.conf.*; a new folder must be added there."""
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = {p for p in meta["tool"]["setuptools"]["packages"] if p.startswith("iqa_saliency.conf")}
    folders = {"iqa_saliency.conf"} | {
        "iqa_saliency.conf." + ".".join(p.relative_to(CONF).parts)
        for p in CONF.rglob("*") if p.is_dir() and p.name != "__pycache__"
    }
    assert listed == folders
