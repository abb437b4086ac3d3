"""Every per_image.csv column and summary.json metric of a real run, recomputed here from the inputs, the saved
arrays and the definitions, never by the evaluation code itself.

The cell runs twice, through the Python API in this process (the fast path) and through the command line
(marked slow). It evaluates three labelled samples (chelsea, clock, coffee; full size on the command line, every
other pixel through the API) under gaussian_noise severity 3, with a stub classifier whose class ranking is
designed so that the definitions are told apart (see helpers/stub_classifier.py): every image flips, one is right
at top-1 only when corrupted, one is in the corrupted top-5 only, one in the clean top-5 only; the probabilities of
the clean prediction differ by orders of magnitude between the clean and the corrupted image. The quality model
is the untrained PaQ-2-PiQ (seed 0), run here again.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

import imagecorruptions
import numpy as np
import pytest
import skimage.data
import torch
import torch.nn.functional as F
from helpers import reference as ref
from helpers import stub_classifier as stub
from helpers.cli import run_cli
from PIL import Image
from scipy import stats

from iqa_saliency.models.paq2piq import load_paq2piq

SAMPLES = {"chelsea": ("chelsea", 281), "clock": ("clock", 409), "coffee": ("coffee", 967)}
CORRUPTION, SEVERITY, SEED = "gaussian_noise", 3, 0
OVERRIDES = ["dataset.resize=null", "dataset.crop=null", "classifier._target_=helpers.stub_classifier.load"]


@dataclass
class Run:
    """What a run left: per_image.csv's rows (as text), each image's maps, summary.json's metrics."""

    rows: list[dict[str, str]]
    maps: dict[str, dict[str, np.ndarray]]
    metrics: dict[str, float | None]
    clean: dict[str, np.ndarray]  # the clean input of each image
    images: Path | None = None  # the saved corrupted inputs (command line only)


def _cli_run(tmp: Path) -> Run:
    out = tmp / "run"
    proc = run_cli("evaluate.py", "pretrained=false", "logger=none", "figures=0",
                   f"dataset.source.names=[{','.join(SAMPLES)}]", *OVERRIDES, "dataset.save_images=true",
                   f"corruption={CORRUPTION}", f"severity={SEVERITY}", f"seed={SEED}", f"hydra.run.dir={out}",
                   tests_importable=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    with (out / "per_image.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    maps = {r["image"]: dict(np.load(out / r["maps"])) for r in rows}
    metrics = json.loads((out / "summary.json").read_text())["metrics"]
    return Run(rows, maps, metrics, {n: _clean_image(n) for n in SAMPLES}, out / "images")


def _api_run() -> Run:
    from iqa_saliency.api import evaluate_images

    # every other pixel in each direction: a quarter of the work, the same design (see helpers/stub_classifier.py)
    clean = {n: np.ascontiguousarray(_clean_image(n)[::2, ::2]) for n in SAMPLES}
    result = evaluate_images(list(clean.values()), corruption=CORRUPTION, severity=SEVERITY,
                             pretrained=False, overrides=[*OVERRIDES, f"seed={SEED}"],
                             labels=[label for _, label in SAMPLES.values()], names=list(SAMPLES))
    rows = [{k: "" if isinstance(v, float) and math.isnan(v) else str(v) for k, v in r.items()}
            for r in result.rows.to_dict("records")]
    return Run(rows, result.maps, result.summary["metrics"], clean)


@pytest.fixture(scope="module", params=["api", pytest.param("cli", marks=pytest.mark.slow)])
def run(request, tmp_path_factory) -> Run:
    """The same cell through the Python API (in this process: the fast path) and the command line (slow)."""
    return _api_run() if request.param == "api" else _cli_run(tmp_path_factory.mktemp("per_image"))


@pytest.fixture(scope="module")
def rows(run) -> list[dict[str, str]]:
    return run.rows


def _clean_image(name: str) -> np.ndarray:
    array = np.asarray(getattr(skimage.data, SAMPLES[name][0])())
    return np.stack([array] * 3, axis=-1) if array.ndim == 2 else array


def _tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1)[None].double() / 255.0


def _gradcam(x: torch.Tensor, target: int) -> np.ndarray:
    """Grad-CAM (Selvaraju et al.) of the stub's layer, in float64: ReLU(Σ_k mean(∂y_t/∂A_k) A_k), bilinear up."""
    lap = F.conv2d(x, stub.LAPLACIAN.double().expand(3, 1, 3, 3), groups=3)
    acts = torch.cat([lap.square(), x[:, :, 1:-1, 1:-1]], dim=1).requires_grad_(True)
    (grads,) = torch.autograd.grad(stub.logits_from_layer(acts)[0, target], acts)
    cam = (grads.mean(dim=(2, 3), keepdim=True) * acts).sum(dim=1, keepdim=True).clamp_min(0)
    return F.interpolate(cam.detach(), size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0].numpy()


@pytest.fixture(scope="module")
def expected(run, rows) -> list[dict[str, float]]:
    """Each image's columns from first principles."""
    torch.manual_seed(0)
    quality, _ = load_paq2piq(pretrained=False, seed=SEED)
    out = []
    for row in rows:
        name = row["image"]
        label = SAMPLES[name][1]
        clean = run.clean[name]
        # the corrupted input, as imagecorruptions makes it under this image's own seed
        np.random.seed(ref.corruption_seed(SEED, name, CORRUPTION, SEVERITY))
        corrupted = imagecorruptions.corrupt(clean.copy(), severity=SEVERITY, corruption_name=CORRUPTION)
        if run.images is not None:
            saved = np.asarray(Image.open(run.images / f"{int(row['index']):06d}_{name}.png"))
            np.testing.assert_array_equal(saved, corrupted)
        xc, xk = _tensor(clean), _tensor(corrupted)
        with torch.no_grad():
            p_clean = stub.StubNet().double()(xc).softmax(dim=1)[0].numpy()
            p_corr = stub.StubNet().double()(xk).softmax(dim=1)[0].numpy()
            q_clean = quality(xc.float())[0].double().numpy()
            q_corr = quality(xk.float())[0].double().numpy()
        pred, clean_pred = int(p_corr.argmax()), int(p_clean.argmax())
        top5 = set(np.argsort(p_corr)[-5:].tolist())
        mos, mos_clean = q_corr[0], q_clean[0]
        attr_clean, attr_corr = _gradcam(xc, clean_pred), _gradcam(xk, pred)
        out.append({
            "label": label, "mos": mos, "mos_clean": mos_clean, "mos_drop": mos_clean - mos,
            "mos_normalized": ref.paq_normalise(mos), "quality_category": ref.paq_category(ref.paq_normalise(mos)),
            "pred": pred, "pred_prob": p_corr[pred], "clean_pred": clean_pred, "clean_pred_prob": p_corr[clean_pred],
            "flipped": float(pred != clean_pred), "correct_top1": float(pred == label),
            "correct_top5": float(label in top5), "attr_stability_cc": ref.mit_cc(attr_clean, attr_corr),
            "_clean_top5": float(label in set(np.argsort(p_clean)[-5:].tolist())), "_p_clean_of_clean_pred":
            p_clean[clean_pred], "_q_local": q_corr[1:].reshape(20, 20), "_q_local_clean": q_clean[1:].reshape(20, 20),
            "_attribution": attr_corr, "_attribution_clean": attr_clean,
            "quality_category_clean": ref.paq_category(ref.paq_normalise(mos_clean)),
            "confidence_drop": p_clean[clean_pred] - p_corr[clean_pred],
            "quality_stability_cc": ref.mit_cc(q_clean[1:], q_corr[1:]),
            **ref.change_similarity(q_clean[1:].reshape(20, 20), q_corr[1:].reshape(20, 20), attr_clean, attr_corr),
            "sim_cc_clean": ref.mit_cc(q_clean[1:].reshape(20, 20), ref.adaptive_avg_pool(attr_clean, 20)),
        })
    return out


def test_the_case_tells_the_definitions_apart(expected):
    # every image flips; vs the labels the picture differs: chelsea's corrupted prediction is its label
    assert [e["flipped"] for e in expected] == [1.0, 1.0, 1.0]
    assert [e["correct_top1"] for e in expected] == [1.0, 0.0, 0.0]
    assert [e["correct_top5"] for e in expected] == [1.0, 1.0, 0.0]
    assert [e["_clean_top5"] for e in expected] == [0.0, 0.0, 1.0]  # the clean probabilities would say otherwise
    for e in expected:
        assert e["_p_clean_of_clean_pred"] > 100 * e["clean_pred_prob"]
    drops = [e["mos_drop"] for e in expected]
    assert min(drops) < -1e-3 and max(drops) > 1e-3 or all(abs(d) > 1e-3 for d in drops)


def test_classification_columns(rows, expected):
    assert [r["image"] for r in rows] == list(SAMPLES)
    for r, e in zip(rows, expected, strict=True):
        assert int(float(r["label"])) == e["label"]
        assert int(float(r["pred"])) == e["pred"] and int(float(r["clean_pred"])) == e["clean_pred"]
        assert float(r["pred_prob"]) == pytest.approx(e["pred_prob"], rel=1e-4)
        assert float(r["clean_pred_prob"]) == pytest.approx(e["clean_pred_prob"], rel=1e-3)
        assert float(r["confidence_drop"]) == pytest.approx(e["confidence_drop"], rel=1e-3)
        assert float(r["flipped"] in ("1", "1.0", "True")) == e["flipped"]
        assert float(r["correct_top1"]) == e["correct_top1"]
        assert float(r["correct_top5"]) == e["correct_top5"]
        assert (r["corruption"], int(r["severity"])) == (CORRUPTION, SEVERITY)


def test_quality_columns(rows, expected):
    for r, e in zip(rows, expected, strict=True):
        assert float(r["mos"]) == pytest.approx(e["mos"], abs=1e-4)
        assert float(r["mos_clean"]) == pytest.approx(e["mos_clean"], abs=1e-4)
        assert float(r["mos_drop"]) == pytest.approx(e["mos_drop"], abs=1e-4)
        assert float(r["mos_normalized"]) == pytest.approx(e["mos_normalized"], abs=1e-4)
        assert r["quality_category"] == e["quality_category"]
        assert r["quality_category_clean"] == e["quality_category_clean"]


def test_saved_maps_and_similarity_columns(run, rows, expected):
    for r, e in zip(rows, expected, strict=True):
        maps = run.maps[r["image"]]
        np.testing.assert_allclose(maps["quality_map"], e["_q_local"], atol=1e-4)
        np.testing.assert_allclose(maps["quality_map_clean"], e["_q_local_clean"], atol=1e-4)
        scale = np.abs(e["_attribution"]).max()
        np.testing.assert_allclose(maps["attribution"], e["_attribution"], atol=1e-4 * scale)
        want = ref.similarities(maps["quality_map"].astype(np.float64), maps["attribution"].astype(np.float64))
        for col, value in want.items():
            assert float(r[col]) == pytest.approx(value, rel=1e-6, abs=1e-9), col
        assert float(r["attr_stability_cc"]) == pytest.approx(e["attr_stability_cc"], abs=1e-3)
        scale_clean = np.abs(e["_attribution_clean"]).max()
        np.testing.assert_allclose(maps["attribution_clean"], e["_attribution_clean"], atol=1e-4 * scale_clean)
        assert float(r["quality_stability_cc"]) == pytest.approx(e["quality_stability_cc"], abs=1e-4)
        assert float(r["sim_cc_clean"]) == pytest.approx(e["sim_cc_clean"], abs=1e-3)
        # the change maps: first from the saved maps (exact arithmetic), then from the first-principles maps
        saved = ref.change_similarity(maps["quality_map_clean"], maps["quality_map"], maps["attribution_clean"],
                                      maps["attribution"])
        for col in ("change_cc", "change_spearman"):
            assert float(r[col]) == pytest.approx(saved[col], rel=1e-6, abs=1e-9), col
            assert float(r[col]) == pytest.approx(e[col], abs=2e-3), col
        # no quality attribution in this run
        assert r["sim_cc_local"] in ("", "None") and r["sim_cc_qattr"] in ("", "None")


def test_summary_metrics(run, rows, expected):
    metrics = run.metrics
    col = {k: np.array([e[k] for e in expected], dtype=np.float64) for k in expected[0] if not k.startswith("_")
           and not k.startswith("quality_category")}
    sims = {c: np.array([float(r[c]) for r in rows]) for c in ("sim_cc", "sim_sim", "sim_kld", "sim_spearman")}
    assert metrics["acc/top1"] == pytest.approx(col["correct_top1"].mean())
    assert metrics["acc/top5"] == pytest.approx(col["correct_top5"].mean())
    assert metrics["robustness/flip_rate"] == pytest.approx(col["flipped"].mean())
    assert metrics["quality/mos_mean"] == pytest.approx(col["mos"].mean(), abs=1e-4)
    assert metrics["quality/mos_std"] == pytest.approx(col["mos"].std(ddof=1), abs=1e-4)
    assert metrics["quality/mos_clean_mean"] == pytest.approx(col["mos_clean"].mean(), abs=1e-4)
    assert metrics["quality/mos_drop"] == pytest.approx(col["mos_drop"].mean(), abs=1e-4)
    assert metrics["quality/mos_normalized_mean"] == pytest.approx(col["mos_normalized"].mean(), abs=1e-4)
    assert metrics["attribution/stability_cc"] == pytest.approx(col["attr_stability_cc"].mean(), abs=1e-3)
    assert metrics["quality/stability_cc"] == pytest.approx(col["quality_stability_cc"].mean(), abs=1e-4)
    assert metrics["change/cc"] == pytest.approx(col["change_cc"].mean(), abs=2e-3)
    assert metrics["change/spearman"] == pytest.approx(col["change_spearman"].mean(), abs=2e-3)
    assert metrics["similarity/cc_clean"] == pytest.approx(col["sim_cc_clean"].mean(), abs=1e-3)
    assert metrics["robustness/confidence_drop"] == pytest.approx(col["confidence_drop"].mean(), rel=1e-3)
    for c, values in sims.items():
        assert metrics[f"similarity/{c[4:]}"] == pytest.approx(values.mean(), rel=1e-9)
    rho = stats.spearmanr(col["mos"], col["clean_pred_prob"]).statistic
    assert metrics["correlation/mos_vs_clean_pred_prob_spearman"] == pytest.approx(rho, abs=1e-5)
    assert (metrics["n_images"], metrics["n_labeled"]) == (3, 3)
    assert metrics["similarity/cc_local"] is None or math.isnan(metrics["similarity/cc_local"])
