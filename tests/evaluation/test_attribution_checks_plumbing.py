"""attr_ris, attr_ros and the deletion/insertion AUCs of a real run (Python API) recomputed here from the inputs and
the definitions: the RegionClassifier (helpers/plumbing_models.py; logits linear in the pixels, restated in numpy),
its input-times-gradient map restated, the corruption redone with each image's seed, RIS/ROS with Quantus's guards
and the curves pixel by pixel. A clean cell: nothing moved (RIS = ROS = 0) and each AUC equals its clean one."""

from __future__ import annotations

import math

import imagecorruptions
import numpy as np
import pytest
import skimage.data
from helpers import plumbing_models as pm
from helpers import reference as ref
from scipy import ndimage

NAMES = ("chelsea", "coffee", "astronaut", "rocket")
CORRUPTION, SEVERITY, SEED, STEPS = "contrast", 2, 0, 5
EPS = 1e-6
OVERRIDES = ["dataset.resize=null", "dataset.crop=null", "classifier._target_=helpers.plumbing_models.load_classifier",
             "quality._target_=helpers.plumbing_models.load_quality", "attribution=input_x_gradient",
             f"seed={SEED}", f"faithfulness.steps={STEPS}", "faithfulness.insertion=true"]


def _images() -> list[np.ndarray]:
    return [np.ascontiguousarray(getattr(skimage.data, n)()[60:108, 100:140]) for n in NAMES]


def _logits(x: np.ndarray) -> np.ndarray:
    """RegionNet's definition: GAIN * (mean over the class's region of w · x + bias), x (3, H, W) in [0, 1]."""
    out = []
    for _, weights, region, bias in pm.RULES:
        r0, r1, c0, c1 = pm.region_bounds(region, *x.shape[1:])
        out.append(pm.GAIN * (np.tensordot(weights, x[:, r0:r1, c0:c1], axes=1).mean() + bias))
    return np.array(out)


def _probs(x: np.ndarray) -> np.ndarray:
    z = _logits(x)
    e = np.exp(z - z.max())
    return e / e.sum()


def _input_x_gradient(x: np.ndarray, target: int) -> np.ndarray:
    """Σ_c |x_c · ∂logit_t/∂x_c|: GAIN · |w_c| x_c / |R_t| inside the class's region, 0 outside."""
    _, weights, region, _ = pm.RULES[target]
    r0, r1, c0, c1 = pm.region_bounds(region, *x.shape[1:])
    grad = np.zeros_like(x)
    grad[:, r0:r1, c0:c1] = pm.GAIN * np.array(weights)[:, None, None] / ((r1 - r0) * (c1 - c0))
    return np.abs(x * grad).sum(axis=0)


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm((a - b) / np.where(a == 0, EPS, a)))


def _auc(x: np.ndarray, e: np.ndarray, target: int, insertion: bool) -> float:
    """RISE's curve: the most attributed floor(i * n / STEPS) pixels (ties in pixel order) set to black (deletion)
    or copied onto the blurred image (insertion: sigma 5, radius 5, mirrored edges); trapezoid over [0, 1].
    `e`: the run's float32 map (checked against the restated one), so its ties order the pixels as in the run."""
    order = np.argsort(-e.ravel(), kind="stable")
    blurred = np.stack([ndimage.gaussian_filter(c, sigma=5.0, truncate=1.0, mode="mirror") for c in x])
    start, end = (blurred, x) if insertion else (x, np.zeros_like(x))
    probs = []
    for i in range(STEPS + 1):
        moved = np.zeros(e.size, bool)
        moved[order[: i * e.size // STEPS]] = True
        probs.append(_probs(np.where(moved.reshape(e.shape)[None], end, start))[target])
    return sum((probs[i] + probs[i + 1]) / 2 for i in range(STEPS)) / STEPS


def _expected(clean_u8: np.ndarray, name: str, corruption: str, severity: int, maps: dict[str, np.ndarray]
              ) -> dict[str, float]:
    corrupted_u8 = clean_u8
    if severity:
        np.random.seed(ref.corruption_seed(SEED, name, corruption, severity))
        corrupted_u8 = np.uint8(imagecorruptions.corrupt(clean_u8.copy(), severity=severity,
                                                         corruption_name=corruption))
    x, xc = (np.float64(im).transpose(2, 0, 1) / 255.0 for im in (clean_u8, corrupted_u8))
    t_clean, t = int(_logits(x).argmax()), int(_logits(xc).argmax())
    e, ec = _input_x_gradient(x, t_clean), _input_x_gradient(xc, t)
    saved, saved_c = maps["attribution_clean"], maps["attribution"]
    np.testing.assert_allclose(saved, e, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(saved_c, ec, rtol=1e-5, atol=1e-7)
    top = _relative(e, ec)
    dx, dh = _relative(x, xc), float(np.linalg.norm(_logits(x) - _logits(xc)))
    same = t == t_clean
    return {"attr_ris": top / (dx or EPS) if same else math.nan, "attr_ros": top / (dh or EPS) if same else math.nan,
            "deletion_auc_clean": _auc(x, saved, t_clean, False), "deletion_auc": _auc(xc, saved_c, t, False),
            "insertion_auc_clean": _auc(x, saved, t_clean, True), "insertion_auc": _auc(xc, saved_c, t, True),
            "flipped": float(not same)}


@pytest.mark.parametrize(("corruption", "severity"), [(CORRUPTION, SEVERITY), ("none", 0)])
def test_columns_equal_the_definitions(corruption, severity):
    from iqa_saliency.api import evaluate_images

    images = _images()
    result = evaluate_images(images, corruption=corruption, severity=severity, pretrained=False,
                             overrides=OVERRIDES, names=list(NAMES))
    rows = result.rows.set_index("image")
    expected = {n: _expected(im, n, corruption, severity, result.maps[n]) for n, im in zip(NAMES, images, strict=True)}
    if severity:  # the design tells the columns apart: some images keep their class, and the maps moved
        kept = [n for n in NAMES if not expected[n]["flipped"]]
        assert kept and all(expected[n]["attr_ris"] > 0 for n in kept)
    for name, want in expected.items():
        for col, value in want.items():
            got = float(rows.loc[name, col])
            assert (math.isnan(got) and math.isnan(value)) or got == pytest.approx(value, rel=1e-4, abs=1e-6), \
                (name, col, got, value)
    if not severity:
        assert (rows["attr_ris"] == 0).all() and (rows["attr_ros"] == 0).all()
        for curve in ("deletion_auc", "insertion_auc"):
            np.testing.assert_array_equal(rows[curve], rows[f"{curve}_clean"])
    metrics = result.summary["metrics"]
    for col, key in {"attr_ris": "attribution/ris", "attr_ros": "attribution/ros",
                     "deletion_auc": "faithfulness/deletion_auc", "insertion_auc_clean":
                     "faithfulness/insertion_auc_clean"}.items():
        want = np.nanmean([expected[n][col] for n in NAMES])
        assert metrics[key] == pytest.approx(want, rel=1e-4, abs=1e-6), key


def test_off_by_default_leaves_the_auc_columns_blank():
    from iqa_saliency.api import evaluate_images

    result = evaluate_images(_images()[:2], corruption=CORRUPTION, severity=SEVERITY, pretrained=False,
                             overrides=OVERRIDES[:-2], names=list(NAMES[:2]))
    for col in ("deletion_auc_clean", "deletion_auc", "insertion_auc_clean", "insertion_auc"):
        assert result.rows[col].isna().all(), col
        assert result.summary["metrics"][f"faithfulness/{col}"] is None
    assert result.rows["attr_ros"].notna().any() or result.rows["flipped"].all()


def test_the_clean_logits_come_from_the_clean_pass_without_another_forward():
    """ROS takes h(x) from the clean pass's outputs (also what the clean cache holds): the classifier is not run
    again for it; the value is Quantus's ||(e_x - e_x')/e_x|| / ||h(x) - h(x')|| on those logits."""
    import torch

    from iqa_saliency.evaluation.attribution_checks import AttributionChecks

    def no_forward(x):  # noqa: ANN001, ANN202
        raise AssertionError("the classifier ran again for the clean logits")

    h_clean, h = torch.tensor([[2.0, 0.0, 1.0]]), torch.tensor([[1.0, 0.5, 1.0]])
    e_clean, e = torch.tensor([[[1.0, 2.0], [4.0, 0.0]]]), torch.tensor([[[1.0, 1.0], [2.0, 0.0]]])
    x_clean, x = torch.full((1, 3, 2, 2), 0.5), torch.full((1, 3, 2, 2), 0.25)
    clean = {"probs": h_clean.softmax(1), "logits": h_clean, "attribution": e_clean}
    corrupted = {"probs": h.softmax(1), "logits": h, "attribution": e}
    got = AttributionChecks(no_forward).columns(x_clean, clean, x, corrupted, None)
    numerator = math.sqrt(0.5**2 + 0.5**2)  # (2-1)/2 and (4-2)/4; the zero stays 0 / EPS = 0
    assert float(got["attr_ros"][0]) == pytest.approx(numerator / math.sqrt(1.0 + 0.25))
    assert float(got["attr_ris"][0]) == pytest.approx(numerator / math.sqrt(12 * 0.5**2))
