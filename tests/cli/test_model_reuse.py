"""The models of a sweep's cells in one process: loaded, folded and checked once while their key stays the same,
loaded afresh when anything that determines them changes (another classifier, other weights, a changed weights
file, another device or precision), and a rerun cell's numbers unchanged by the reuse."""

from __future__ import annotations

import gc
import weakref

import pandas as pd
import pytest
import torch
from helpers.cli import run_cli
from omegaconf import open_dict, read_write

from iqa_saliency.api import compose_config
from iqa_saliency.cli import evaluate as cli
from iqa_saliency.cli import model_reuse
from iqa_saliency.data.selection import Selection
from iqa_saliency.models.reuse import ModelReuse, fold_once, is_reused


def _compose(*overrides: str):
    composed = compose_config(["logger=none", "pretrained=false", *overrides])
    with read_write(composed), open_dict(composed):
        del composed["hydra"]
    return composed


def _load(*overrides: str):
    cfg = _compose(*overrides)
    return cli.load_models(cfg, Selection.from_options({}, cfg.seed, None, False))


@pytest.fixture(autouse=True)
def fresh_cache(monkeypatch):
    """Each test starts from an empty cache (as a new process does) and counts its own builds."""
    monkeypatch.setattr(model_reuse, "MODELS", ModelReuse())
    return model_reuse.MODELS


def test_an_identical_cell_reuses_the_models_another_classifier_gets_its_own(fresh_cache):
    first = _load("corruption=contrast", "severity=1")
    second = _load("corruption=motion_blur", "severity=2")  # another cell of the same sweep: same models
    assert second.classifier.model is first.classifier.model and second.quality is first.quality
    assert fresh_cache.builds == {"quality": 1, "classifier": 1}
    other = _load("classifier.arch=resnet34")
    assert fresh_cache.builds == {"quality": 1, "classifier": 2}
    assert other.classifier.arch == "resnet34" and other.quality is first.quality
    assert len(other.classifier.model.net.layer1) == 3  # resnet34's, built, not resnet18's from the cache
    reseeded = _load("classifier.arch=resnet34", "seed=5")  # other (untrained) weights, and another quality model
    assert fresh_cache.builds == {"quality": 2, "classifier": 3}
    assert not torch.equal(reseeded.classifier.model.net.conv1.weight, other.classifier.model.net.conv1.weight)
    torch.manual_seed(5)  # the weights a fresh load with seed 5 builds (load_classifier seeds torch with it)
    from torchvision.models import resnet34

    torch.testing.assert_close(reseeded.classifier.model.net.conv1.weight, resnet34().conv1.weight, rtol=0, atol=0)


def test_settings_that_change_a_loaded_model_in_place_load_it_again(fresh_cache):
    base = _load()
    for override in ("channels_last=true", "fold_batchnorm=false", "trainer.precision=bf16-mixed"):
        again = _load(override)
        assert again.classifier.model is not base.classifier.model, override
        assert again.quality is not base.quality, override
    assert fresh_cache.builds == {"quality": 4, "classifier": 4}


def test_a_changed_weights_file_is_loaded_again(fresh_cache, tmp_path):
    path = tmp_path / "weights.pt"
    torch.manual_seed(1)
    from torchvision.models import resnet18

    torch.save(resnet18().state_dict(), path)
    first = _load(f"classifier.checkpoint={path}")
    assert _load(f"classifier.checkpoint={path}").classifier.model is first.classifier.model
    state = resnet18().state_dict()  # other weights under the same name
    torch.save(state, path)
    changed = _load(f"classifier.checkpoint={path}")
    assert changed.classifier.model is not first.classifier.model
    torch.testing.assert_close(changed.classifier.model.net.conv1.weight, state["conv1.weight"], rtol=0, atol=0)
    assert changed.classifier.weights.sha256 != first.classifier.weights.sha256


def test_the_classes_a_cell_renames_do_not_reach_the_next_cell():
    first = _load()
    names = list(first.classifier.class_names)
    first.classifier.class_names[:] = ["renamed"] * len(names)  # what map_labels does for folder-ordered classes
    assert _load().classifier.class_names == names


def test_a_reused_model_is_folded_once_and_others_every_time():
    reused = _load().classifier.model
    assert is_reused(reused)
    assert fold_once(reused) is fold_once(reused)
    from torchvision.models import resnet18

    plain = resnet18().eval()
    assert not is_reused(plain) and fold_once(plain) is not fold_once(plain)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(fold_once(reused)(x), reused(x), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_a_sweep_cell_with_reused_models_equals_the_cell_run_alone(tmp_path):
    """The second cell of a sweep (models from the first) writes the same rows as the same cell in a process of its
    own."""
    common = ["pretrained=false", "logger=none", "dataset.resize=72", "dataset.crop=64", "figures=1",
              "trainer.enable_progress_bar=false", "dataset.num_workers=0", "print_summary=false",
              "dataset.source.names=[chelsea,coffee,rocket]"]
    sweep = run_cli("evaluate.py", "-m", "corruption=contrast", "severity=1,2", *common,
                    f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    alone = run_cli("evaluate.py", "corruption=contrast", "severity=2", *common, f"hydra.run.dir={tmp_path / 'alone'}")
    assert alone.returncode == 0, alone.stderr[-3000:]
    in_sweep = pd.read_csv(next((tmp_path / "sweep").glob("*severity=2/per_image.csv")))
    pd.testing.assert_frame_equal(in_sweep, pd.read_csv(tmp_path / "alone" / "per_image.csv"))


def test_released_models_are_freed_also_from_a_cycle_frozen_after_a_cell():
    """The end of a cell collects and freezes what survives it (cli.evaluate); models released for another key are
    still freed before the next ones load, also when they sit in a reference cycle."""
    first = _load()
    model = first.classifier.model
    object.__setattr__(model, "_cycle", [model])  # a cycle only the collector can free
    gone = weakref.ref(model)
    del first, model
    try:
        gc.collect()
        gc.freeze()
        _load("classifier.arch=resnet34")
        assert gone() is None
    finally:
        gc.unfreeze()
