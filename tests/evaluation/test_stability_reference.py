"""Relative input/output stability (evaluation.stability) against Quantus's own objectives on the same inputs, a
float64 restatement written from Agarwal et al. 2022 with Quantus's guards, and hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from iqa_saliency.evaluation.stability import EPS_MIN, relative_input_stability, relative_output_stability


def _inputs(seed: int = 0) -> dict[str, np.ndarray]:
    """Images, maps and logits with exact zeros where the guards matter (x black pixels, Grad-CAM's ReLU zeros)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (4, 3, 6, 5))
    x[:, :, 0, :2] = 0.0
    x_prime = np.clip(x + rng.normal(0, 0.1, x.shape), 0, 1)
    x_prime[1] = x[1]  # an image the corruption left alone: the input change is exactly 0
    e = np.maximum(rng.normal(0.2, 1, (4, 6, 5)), 0)
    e_prime = np.maximum(e + rng.normal(0, 0.3, e.shape), 0)
    h = rng.normal(0, 3, (4, 7))
    h_prime = h + rng.normal(0, 1, h.shape)
    h_prime[2] = h[2]  # unchanged logits
    return {"x": x, "x_prime": x_prime, "e": e, "e_prime": e_prime, "h": h, "h_prime": h_prime}


def _ours(d: dict[str, np.ndarray], same: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    t = {k: torch.from_numpy(v).float() for k, v in d.items()}  # the evaluation's maps are float32
    keep = torch.ones(len(d["x"]), dtype=torch.bool) if same is None else torch.from_numpy(same)
    ris = relative_input_stability(t["x"], t["x_prime"], t["e"], t["e_prime"], keep)
    ros = relative_output_stability(t["h"], t["h_prime"], t["e"], t["e_prime"], keep)
    return ris.numpy(), ros.numpy()


def _restated(d: dict[str, np.ndarray]) -> tuple[list[float], list[float]]:
    """Per image, entry by entry: ||(e - e')/e||_2 over ||(x - x')/x||_2 (RIS) or ||h - h'||_2 (ROS); a 0 in a
    divisor is eps_min, as is a denominator of exactly 0."""
    def relative(a: np.ndarray, b: np.ndarray) -> float:
        total = 0.0
        for u, v in zip(a.ravel().tolist(), b.ravel().tolist(), strict=True):
            total += ((u - v) / (u if u != 0 else EPS_MIN)) ** 2
        return math.sqrt(total)

    d = {k: v.astype(np.float32).astype(np.float64) for k, v in d.items()}  # the float32 values the run sees
    ris, ros = [], []
    for i in range(len(d["x"])):
        top = relative(d["e"][i], d["e_prime"][i])
        bottom = relative(d["x"][i], d["x_prime"][i])
        out = math.sqrt(sum((a - b) ** 2 for a, b in zip(d["h"][i].tolist(), d["h_prime"][i].tolist(), strict=True)))
        ris.append(top / (bottom if bottom != 0 else EPS_MIN))
        ros.append(top / (out if out != 0 else EPS_MIN))
    return ris, ros


def test_against_quantus_objectives():
    quantus = pytest.importorskip("quantus")
    d = _inputs()
    f32 = {k: v.astype(np.float32).astype(np.float64) for k, v in d.items()}  # the same values on both sides
    e, e_prime = f32["e"][:, None], f32["e_prime"][:, None]  # Quantus's (B, 1, H, W) maps
    ris_q = quantus.RelativeInputStability(nr_samples=1, disable_warnings=True).relative_input_stability_objective(
        f32["x"].copy(), f32["x_prime"].copy(), e, e_prime)
    ros_q = quantus.RelativeOutputStability(nr_samples=1, disable_warnings=True).relative_output_stability_objective(
        f32["h"], f32["h_prime"], e, e_prime)
    ris, ros = _ours(d)
    np.testing.assert_allclose(ris, ris_q, rtol=1e-9)
    np.testing.assert_allclose(ros, ros_q, rtol=1e-9)
    assert ris[1] > 1e5 and ros[2] > 1e5  # the exact-zero denominators took eps_min, as in Quantus


def test_against_restatement_and_nan_where_the_prediction_changed():
    d = _inputs(seed=3)
    same = np.array([True, False, True, True])
    ris, ros = _ours(d, same)
    want_ris, want_ros = _restated(d)
    assert np.isnan(ris[1]) and np.isnan(ros[1])
    keep = [0, 2, 3]
    np.testing.assert_allclose(ris[keep], np.array(want_ris)[keep], rtol=1e-9)
    np.testing.assert_allclose(ros[keep], np.array(want_ros)[keep], rtol=1e-9)


def test_hand_computed():
    # x = [2, 4] -> [1, 5]: relative change [0.5, -0.25], norm sqrt(0.3125); e = [1, 2] -> [1.5, 1]: [-0.5, 0.5],
    # norm sqrt(0.5); so RIS = sqrt(0.5 / 0.3125) = sqrt(1.6); logits [3, 0] -> [0, 4]: norm 5, ROS = sqrt(0.5) / 5
    x, x_prime = torch.tensor([[2.0, 4.0]]), torch.tensor([[1.0, 5.0]])
    e, e_prime = torch.tensor([[1.0, 2.0]]), torch.tensor([[1.5, 1.0]])
    h, h_prime = torch.tensor([[3.0, 0.0]]), torch.tensor([[0.0, 4.0]])
    same = torch.tensor([True])
    assert relative_input_stability(x, x_prime, e, e_prime, same).item() == pytest.approx(math.sqrt(1.6), rel=1e-12)
    assert relative_output_stability(h, h_prime, e, e_prime, same).item() == pytest.approx(math.sqrt(0.5) / 5,
                                                                                            rel=1e-12)
    # a zero of e_x divides as 1e-6: (0 - 3e-6) / 1e-6 = -3; the same input: denominator 1e-6 -> RIS = 3e6
    zero, moved = torch.tensor([[0.0, 2.0]], dtype=torch.float64), torch.tensor([[3e-6, 2.0]], dtype=torch.float64)
    assert relative_input_stability(x, x, zero, moved, same).item() == pytest.approx(3e6, rel=1e-9)
    # the clean cell: nothing changed at all -> 0
    assert relative_input_stability(x, x, e, e, same).item() == 0.0
