"""The randomisation check's table (randomization.csv) against scipy and scikit-image on maps computed here:
Spearman of |maps|, SSIM of min-max scaled maps, their mean and sample std, the cumulative cascade, which
methods are flagged, and the CSV's columns in order."""

from __future__ import annotations

import copy
import csv
import math

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from skimage.metrics import structural_similarity
from torch import nn

from iqa_saliency.attribution.registry import build_attribution
from iqa_saliency.evaluation.sanity import COLUMNS, cascade_layers, run_randomization, write_table


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.stem = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.act = nn.ReLU()
        self.layer4 = nn.Sequential(nn.Conv2d(4, 5, 3, padding=1))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(5, 6)
        for p in self.parameters():
            p.data = torch.randn(p.shape, generator=g)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.layer4(self.act(self.stem(x)))).flatten(1))


X = torch.rand(5, 3, 24, 24, generator=torch.Generator().manual_seed(1))


def _reinit(module: nn.Module, seed: int) -> None:
    """Re-initialise as at construction, under torch.manual_seed(seed)."""
    torch.manual_seed(seed)
    for sub in module.modules():
        if hasattr(sub, "reset_parameters"):
            sub.reset_parameters()


def _spearman_abs(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.abs(a).ravel(), np.abs(b).ravel()
    return math.nan if np.ptp(a) == 0 or np.ptp(b) == 0 else spearmanr(a, b).statistic


def _ssim(a: np.ndarray, b: np.ndarray) -> float:
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return math.nan
    a = (a - a.min()) / (a.max() - a.min())
    b = (b - b.min()) / (b.max() - b.min())
    return structural_similarity(a, b, data_range=1.0)


def test_cascade_is_output_side_first():
    assert cascade_layers(Tiny()) == ["fc", "layer4", "stem"]


def test_table_rows_against_scipy_and_skimage(tmp_path):
    model = Tiny().eval()
    seed = 4
    state = torch.random.get_rng_state()
    result = run_randomization(model, X, {"gradcam": {}, "saliency": {}}, seed=seed, flag_spearman=0.5)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG is left alone
    assert result.layers == ["fc", "layer4", "stem"]
    with torch.no_grad():
        target = model(X).argmax(dim=1)
    rows = {(r["method"], r["step"]): r for r in result.rows}
    assert len(result.rows) == 2 * 4
    checked = 0
    for method in ("gradcam", "saliency"):
        def maps(m: nn.Module, method: str = method) -> np.ndarray:
            return build_attribution(method, m).attribute(X.clone().requires_grad_(True), target).detach().numpy()

        original = maps(model)
        twin = copy.deepcopy(model)
        assert rows[(method, 0)] == {"method": method, "step": 0, "layer": "", "randomized": "none",
                                     "spearman_abs": 1.0, "spearman_abs_std": 0.0, "ssim": 1.0, "ssim_std": 0.0,
                                     "n_images": 5}
        with torch.random.fork_rng():
            for step, layer in enumerate(["fc", "layer4", "stem"], start=1):
                _reinit(twin.get_submodule(layer), seed * 1000 + step)
                after = maps(twin)
                rho = [_spearman_abs(o, a) for o, a in zip(original, after, strict=True)]
                ssim = [_ssim(o, a) for o, a in zip(original, after, strict=True)]
                rho = [r for r in rho if not math.isnan(r)]
                ssim = [s for s in ssim if not math.isnan(s)]
                row = rows[(method, step)]
                assert row["layer"] == layer
                assert row["randomized"] == "+".join(["fc", "layer4", "stem"][:step])
                for key, values in (("spearman_abs", rho), ("ssim", ssim)):
                    mean = np.mean(values) if values else math.nan
                    std = np.std(values, ddof=1) if len(values) > 1 else math.nan
                    assert row[key] == pytest.approx(mean, abs=1e-6, nan_ok=True), (method, step, key)
                    assert row[f"{key}_std"] == pytest.approx(std, abs=1e-6, nan_ok=True), (method, step, key)
                checked += len(rho) > 1
                assert row["n_images"] == 5
        final = rows[(method, 3)]["spearman_abs"]
        assert (method in result.flagged) == (final >= 0.5)

    assert checked >= 4  # most steps have several finite values: the mean and std are exercised
    path = tmp_path / "randomization.csv"
    write_table(path, result.rows)
    with path.open(newline="") as f:
        table = list(csv.reader(f))
    assert table[0] == ["method", "step", "layer", "randomized", "spearman_abs", "spearman_abs_std", "ssim",
                        "ssim_std", "n_images"] == COLUMNS
    for line, row in zip(table[1:], result.rows, strict=True):
        assert line[0] == row["method"] and int(line[1]) == row["step"] and line[2] == row["layer"]
        for i, key in enumerate(["spearman_abs", "spearman_abs_std", "ssim", "ssim_std"], start=4):
            assert (line[i] == "") if math.isnan(row[key]) else (float(line[i]) == row[key]), key
        assert int(line[8]) == row["n_images"]


def test_flag_threshold():
    model = Tiny().eval()
    always = run_randomization(model, X[:2], {"saliency": {}}, layers=["fc"], seed=0, flag_spearman=-1.0)
    never = run_randomization(model, X[:2], {"saliency": {}}, layers=["fc"], seed=0, flag_spearman=1.01)
    assert always.flagged == ["saliency"] and never.flagged == []
