"""Model-randomisation sanity check: layer order, seeded re-initialisation, flagging, the CLI run."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from helpers.cli import run_cli
from scipy.stats import spearmanr

from iqa_saliency.attribution.base import AttributionMethod
from iqa_saliency.attribution.registry import ATTRIBUTION_METHODS
from iqa_saliency.evaluation.sanity import cascade_layers, randomize_, run_randomization
from iqa_saliency.models.classifier import load_classifier


@pytest.fixture(scope="module")
def classifier():
    return load_classifier(pretrained=False, seed=0)


def test_cascade_goes_from_the_output_down(classifier):
    assert cascade_layers(classifier.model) == ["net.fc", "net.layer4", "net.layer3", "net.layer2", "net.layer1",
                                                "net.bn1", "net.conv1"]


def test_randomize_is_seeded_and_touches_only_its_layer(classifier):
    a, b = (load_classifier(pretrained=False, seed=0).model for _ in range(2))
    randomize_(a.net.layer4, seed=5)
    randomize_(b.net.layer4, seed=5)
    for (name, pa), pb, p0 in zip(a.state_dict().items(), b.state_dict().values(),
                                  classifier.model.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name
        if name.startswith("net.layer4.") and name.endswith("conv1.weight"):
            assert not torch.equal(pa, p0)
        elif not name.startswith("net.layer4."):
            assert torch.equal(pa, p0), name


class _InputOnly(AttributionMethod):
    """Ignores the model: the textbook method the check must flag."""

    def attribute(self, inputs, target):
        return inputs.detach().abs().sum(dim=1)


def test_model_independent_method_is_flagged_and_gradcam_decays(classifier, monkeypatch):
    monkeypatch.setitem(ATTRIBUTION_METHODS, "input_only", _InputOnly)
    x = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    result = run_randomization(classifier.model, x, {"input_only": {}, "gradcam": {}}, seed=0)
    assert result.flagged == ["input_only"]
    rows = {(r["method"], r["step"]): r for r in result.rows}
    assert all(rows[("input_only", s)]["spearman_abs"] == pytest.approx(1.0) for s in range(8))
    assert rows[("gradcam", 7)]["spearman_abs"] < 0.5
    assert rows[("gradcam", 1)]["layer"] == "net.fc" and rows[("gradcam", 7)]["randomized"].endswith("conv1")


def test_table_values_equal_scipy_on_the_maps(classifier):
    from iqa_saliency.attribution.registry import build_attribution

    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    result = run_randomization(classifier.model, x, {"saliency": {}}, layers=["net.fc"], seed=3)
    model = classifier.model
    with torch.no_grad():
        target = model(x).argmax(1)
    twin = load_classifier(pretrained=False, seed=0).model
    randomize_(twin.net.fc, seed=3 * 1000 + 1)
    a = build_attribution("saliency", model).attribute(x.clone().requires_grad_(True), target).detach().numpy()
    b = build_attribution("saliency", twin).attribute(x.clone().requires_grad_(True), target).detach().numpy()
    want = np.mean([spearmanr(a[i].ravel(), b[i].ravel()).statistic for i in range(2)])
    assert result.rows[1]["spearman_abs"] == pytest.approx(want, abs=1e-6)


@pytest.mark.slow
def test_randomization_check_cli_is_reproducible(tmp_path):
    args = ["+check=randomization", "pretrained=false", "dataset.source.names=[chelsea,coffee]",
            "dataset.resize=64", "dataset.crop=64", "check.methods=[gradcam,smoothgrad]"]
    tables = []
    for name in ("a", "b"):
        run = tmp_path / name
        proc = run_cli("evaluate.py", *args, f"hydra.run.dir={run}")
        assert proc.returncode == 0, proc.stderr[-3000:]
        tables.append((run / "randomization.csv").read_bytes())
        assert (run / "randomization.png").stat().st_size > 10_000
    assert tables[0] == tables[1]
    with open(tmp_path / "a" / "randomization.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["layer"] for r in rows if r["method"] == "gradcam"] == [
        "", "net.fc", "net.layer4", "net.layer3", "net.layer2", "net.layer1", "net.bn1", "net.conv1"]
    assert all(np.isfinite(float(r["spearman_abs"])) and np.isfinite(float(r["ssim"])) for r in rows)
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["weights"]["name"] == "untrained" and summary["n_images"] == 2
    assert set(summary["flagged"]) <= {"gradcam", "smoothgrad"}
    assert summary["flagged"] == [m for m in ("gradcam", "smoothgrad")
                                  if float([r for r in rows if r["method"] == m][-1]["spearman_abs"]) >= 0.5]
