"""Which weights each model really got (issue 22): the fallback replaces only weights the user did not name and is
never silent; the banner, summary.json, per_image.csv, the figures and the dashboard config all say the same.

The rules are restated here from the principle and checked on every combination of request and outcome; the end
to end runs use checkpoints the tests make, offline (an empty torch hub cache: the default weights cannot be had)."""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers.cli import ROOT
from helpers.images import make_image
from PIL import Image

from iqa_saliency.errors import UserError, WeightsUnavailableError
from iqa_saliency.models.classifier import CHECKPOINT_META_KEY, build_network
from iqa_saliency.models.paq2piq import PaQ2PiQWeights
from iqa_saliency.models.resolution import (
    ModelWeights,
    ResolvedWeights,
    WeightsRequest,
    classifier_request,
    load_with_fallback,
    quality_request,
)
from iqa_saliency.models.weights import UNTRAINED, WeightsIdentity

RELEASES = tuple(w.value.url for w in PaQ2PiQWeights)
TRAINED = WeightsIdentity("net:file.pth", "/w/file.pth", "ab" * 32)
OUTCOMES = {  # what loading the requested weights does
    "loads": None,
    "unavailable": WeightsUnavailableError("Weights 'x.pth' are not in the cache folder /c. Set k=PATH."),
    "broken": UserError("Could not load weights from 'x.pth' (EOFError). Set k=PATH to another file."),
    "bug": RuntimeError("not a user error"),
}


def _loader(outcome: str):
    def load():
        if OUTCOMES[outcome] is not None:
            raise OUTCOMES[outcome]
        return TRAINED
    return load


@pytest.mark.parametrize(("role", "named", "outcome", "allow"),
                         list(itertools.product(["quality", "classifier"], [True, False], OUTCOMES, [True, False])))
def test_the_fallback_replaces_only_unavailable_weights_the_user_did_not_name(role, named, outcome, allow):
    request = WeightsRequest(role, "/data/best.ckpt" if named else "resnet18:IMAGENET1K_V1", named, f"{role}.x")
    load = _loader(outcome)

    def run():
        return load_with_fallback(request, load, lambda: WeightsIdentity(UNTRAINED), lambda w: w, allow)

    if outcome == "loads":  # what was asked is what ran
        model, resolved = run()
        assert model is TRAINED and resolved.identity == TRAINED and not resolved.fallback and not resolved.untrained
    elif outcome == "unavailable" and allow and not named:  # the only case the fallback may act in
        model, resolved = run()
        assert resolved.untrained and resolved.fallback == str(OUTCOMES["unavailable"])
        assert resolved.as_dict()["requested"] == "resnet18:IMAGENET1K_V1"
    elif outcome == "unavailable" and allow and named:  # named weights: refused in one line naming the key
        with pytest.raises(WeightsUnavailableError) as caught:
            run()
        message = str(caught.value)
        assert "\n" not in message and f"{role}.x" in message and "never replaces weights you named" in message
    else:  # anything else surfaces unchanged
        with pytest.raises(type(OUTCOMES[outcome])) as caught:
            run()
        assert caught.value is OUTCOMES[outcome]


@pytest.mark.parametrize(("checkpoint", "pretrained"),
                         list(itertools.product([*RELEASES, "https://example.org/mine.pth", "/data/q.pth",
                                                 "q.pth"], [True, False])))
def test_a_quality_checkpoint_is_named_unless_it_is_a_published_release(checkpoint, pretrained):
    request = quality_request(checkpoint, pretrained, RELEASES)
    assert request.named == (pretrained and checkpoint not in RELEASES)
    assert request.requested == (checkpoint if pretrained else UNTRAINED)


@pytest.mark.parametrize(("checkpoint", "weights", "pretrained"),
                         list(itertools.product([None, "", "/r/best.ckpt", "https://h/x.ckpt"],
                                                [None, "IMAGENET1K_V1"], [True, False])))
def test_a_classifier_checkpoint_is_always_named(checkpoint, weights, pretrained):
    request = classifier_request("resnet18", weights, checkpoint, pretrained)
    assert request.named == bool(checkpoint) and request.key == ("classifier.checkpoint" if checkpoint
                                                                 else "classifier.weights")
    want = checkpoint if checkpoint else (f"resnet18:{weights}" if pretrained and weights else UNTRAINED)
    assert request.requested == want


STATES = ["trained", "pretrained=false", "fell back"]


def _resolved(role: str, state: str) -> ResolvedWeights:
    request = WeightsRequest(role, "asked", False, f"{role}.checkpoint")
    if state == "trained":
        return ResolvedWeights(request, WeightsIdentity(f"{role}:w.pth", "/w.pth", "cd" * 32))
    return ResolvedWeights(request, WeightsIdentity(UNTRAINED), "offline" if state == "fell back" else None)


@pytest.mark.parametrize(("quality", "classifier"), list(itertools.product(STATES, STATES)))
def test_every_output_says_the_same_about_the_weights(quality, classifier):
    weights = ModelWeights(_resolved("quality", quality), _resolved("classifier", classifier))
    untrained = {"quality": quality != "trained", "classifier": classifier != "trained"}
    fell = {"quality": quality == "fell back", "classifier": classifier == "fell back"}
    summary = weights.summary()
    assert summary["untrained"] == any(untrained.values())
    assert sorted(summary["fell_back"]) == sorted(r for r, f in fell.items() if f)
    for role in untrained:
        assert summary[role]["untrained"] == untrained[role]
        assert summary[role]["name"] == (UNTRAINED if untrained[role] else f"{role}:w.pth")
        assert weights.columns()[f"{role}_weights"] == summary[role]["name"]
        assert weights.dashboard()[f"{role}_weights"] == summary[role]["name"]
    assert weights.dashboard()["pretrained"] is not any(untrained.values())
    mark = weights.figure_mark()
    assert (mark is not None) == any(untrained.values())
    if mark:
        assert ("quality model" in mark) == untrained["quality"] and ("classifier" in mark) == untrained["classifier"]
    banner = weights.banner()
    assert (banner is not None) == any(fell.values())
    if banner:  # every model that fell back is named, and no other
        assert ("quality model" in banner) == fell["quality"]
        assert ("classifier: asked" in banner) == fell["classifier"]


# ---------------------------------------------------------------- end to end, offline, on checkpoints made here

BASE = ["corruption=contrast", "severity=1", "logger=none", "trainer.enable_progress_bar=false",
        "dataset.resize=64", "dataset.crop=64", "dataset.num_workers=0", "figures=1", "dataset=folder"]
CLASSES = ["kitchen", "office"]


def _env(tmp_path: Path) -> dict[str, str]:
    # an empty hub cache and no network: the default weights (PaQ-2-PiQ's release, torchvision's) cannot be had
    return {**os.environ, "TORCH_HOME": str(tmp_path / "torch_home"), "WANDB_SILENT": "true", "HYDRA_FULL_ERROR": "0",
            "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "https_proxy": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9"}


def _evaluate(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "evaluate.py"), *BASE, *overrides], cwd=tmp_path,
                          env=_env(tmp_path), capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def folder_with_checkpoint(tmp_path_factory) -> tuple[Path, Path]:
    """Two class folders and a train.py-style best.ckpt for them (its own metadata, 2 classes)."""
    root = tmp_path_factory.mktemp("fallback")
    data = root / "data"
    for c, name in enumerate(CLASSES):
        for k in range(2):
            make_image(data / name / f"{k}.png", size=(72, 64), seed=10 * c + k)
    with torch.random.fork_rng():
        torch.manual_seed(3)
        net = build_network("resnet18", len(CLASSES))
    ckpt = root / "best.ckpt"
    torch.save({"state_dict": {f"classifier.net.{k}": v for k, v in net.state_dict().items()},
                CHECKPOINT_META_KEY: {"arch": "resnet18", "class_names": CLASSES, "normalize": True}}, ckpt)
    return data, ckpt


def _one_line_refusal(proc: subprocess.CompletedProcess, *needles: str) -> str:
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.mark.slow
def test_a_named_checkpoint_runs_and_only_the_default_quality_weights_fall_back(tmp_path, folder_with_checkpoint):
    data, ckpt = folder_with_checkpoint
    run = tmp_path / "run"
    proc = _evaluate(tmp_path, f"dataset.root={data}", f"classifier.checkpoint={ckpt}", "allow_untrained_fallback=true",
                     f"hydra.run.dir={run}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    import hashlib

    digest = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    summary = json.loads((run / "summary.json").read_text())
    weights = summary["weights"]
    assert weights["classifier"]["sha256"] == digest and not weights["classifier"]["untrained"]
    assert weights["classifier"]["fallback"] is None and weights["classifier"]["requested"] == str(ckpt)
    assert weights["quality"]["untrained"] and weights["quality"]["fallback"] and weights["untrained"]
    assert weights["fell_back"] == ["quality"] and summary["classifier"]["num_classes"] == len(CLASSES)
    banner = proc.stdout + proc.stderr  # the banner names the quality model, not the classifier
    assert re.search(r"quality model \(PaQ-2-PiQ\): \S+ unavailable", banner)
    assert not re.search(r"^classifier: .* -> UNTRAINED", banner, re.M)
    rows = pd.read_csv(run / "per_image.csv")
    assert set(rows["quality_weights"]) == {UNTRAINED} and set(rows["classifier_weights"]) == {"resnet18:best.ckpt"}
    figures = sorted((run / "figures").glob("*.png"))
    assert figures and all("quality model" in Image.open(f).text["Warning"] for f in figures)
    assert all("classifier" not in Image.open(f).text["Warning"] for f in figures)
    assert summary["explained_layer"] == {"classifier": "net.layer4", "quality": None}


@pytest.mark.slow
@pytest.mark.parametrize("key", ["classifier.checkpoint", "quality.checkpoint"])
@pytest.mark.parametrize("how", ["missing file", "uncached URL"])
def test_named_weights_that_cannot_be_had_are_refused_never_replaced(tmp_path, folder_with_checkpoint, key, how):
    data, _ = folder_with_checkpoint
    value = str(tmp_path / "gone.ckpt") if how == "missing file" else "https://127.0.0.1:9/weights/mine.pth"
    run = tmp_path / "run"
    proc = _evaluate(tmp_path, f"dataset.root={data}", f"{key}={value}", "allow_untrained_fallback=true",
                     f"hydra.run.dir={run}")
    _one_line_refusal(proc, key, "never replaces weights you named")
    assert not (run / "INCOMPLETE").exists() and not (run / "summary.json").exists()
    assert "UNTRAINED" not in proc.stdout + proc.stderr


def test_a_dashboard_config_comes_from_the_resolved_weights():
    from omegaconf import OmegaConf

    from iqa_saliency.cli.evaluate import dashboard_config
    from iqa_saliency.evaluation.settings import EvaluationModels, Explanation
    from iqa_saliency.models.classifier import load_classifier
    from iqa_saliency.models.paq2piq import load_paq2piq

    cfg = OmegaConf.create({"corruption": "contrast", "severity": 1, "pretrained": True, "seed": 0,
                            "classifier": {"arch": "resnet18", "weights": "IMAGENET1K_V1"},
                            "trainer": {"precision": "32"}, "dataset": {"source": {"_target_": "x.ImageFolder"}}})
    quality, quality_weights = load_paq2piq(pretrained=False)
    classifier = load_classifier(pretrained=False)
    request = classifier_request("resnet18", "IMAGENET1K_V1", None, True)
    weights = ModelWeights(ModelWeights.as_loaded(quality_weights, classifier.weights).quality,
                           ResolvedWeights(request, classifier.weights, "offline"))
    flat = dashboard_config(cfg, Explanation(), EvaluationModels(quality, quality_weights, classifier,
                                                                 weights=weights))
    # configured pretrained=true with IMAGENET1K_V1, but both ran untrained: the dashboard says what ran
    assert flat["pretrained"] is False and flat["untrained"] is True
    assert flat["classifier_weights"] == UNTRAINED and flat["quality_weights"] == UNTRAINED
