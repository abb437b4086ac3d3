"""Relative input and output stability of an attribution (Agarwal et al. 2022, "Rethinking stability for
attribution-based explanations", arXiv:2203.06877), with the corruption itself as the perturbation.

Per image, x the clean input, x' the corrupted one, e the attribution maps and h the classifier's logits:

    RIS = ||(e_x - e_x') / e_x||_2 / ||(x - x') / x||_2
    ROS = ||(e_x - e_x') / e_x||_2 / ||h(x) - h(x')||_2

as Quantus 0.6.0 computes them (quantus.RelativeInputStability / RelativeOutputStability, the objective of one
perturbation): the L2 norm over every entry of an image's array; an entry of e_x (or x) that is exactly 0 is
replaced by EPS_MIN in the division; a denominator that is exactly 0 becomes EPS_MIN. Lower is more stable.
Where this differs:
* Quantus takes the maximum over sampled perturbations (nr_samples); here there is one, the corruption.
* The paper writes the denominator as max(||.||_p, eps_min); Quantus (and this module) replaces only an exact 0,
  which differs for a denominator in (0, EPS_MIN) only.
* Quantus (docstring and code) uses the plain logit change ||h(x) - h(x')||_2 for ROS; a statement of ROS that
  divides it by h(x) inside the norm differs from it. This module follows Quantus (a logit near 0 would dominate
  the relative form).
* Like Quantus's default (return_nan_when_prediction_changes=True), the value is NaN for an image whose predicted
  class changed: the paper defines the stabilities over perturbations that keep the prediction.
x is the classifier's input as the models get it (RGB in [0, 1]; the classifier normalises inside); e is the map at
the resolution the attribution method returns. Maps with many exact zeros (Grad-CAM after its ReLU) make the
numerator large (a zero becoming positive counts as (e_x') / EPS_MIN): the values are heavy-tailed.
"""

from __future__ import annotations

import torch

EPS_MIN = 1e-6  # Quantus's eps_min default


def _relative_change(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """||(before - after) / before||_2 per image (float64), an exact 0 of `before` divided as EPS_MIN."""
    before, after = before.double(), after.double()
    change = (before - after) / torch.where(before == 0, EPS_MIN, before)
    return change.reshape(change.shape[0], -1).norm(dim=1)


def _at_least_eps(norm: torch.Tensor) -> torch.Tensor:
    return torch.where(norm == 0, EPS_MIN, norm)


def relative_input_stability(x: torch.Tensor, x_prime: torch.Tensor, e_x: torch.Tensor, e_x_prime: torch.Tensor,
                             same_prediction: torch.Tensor) -> torch.Tensor:
    """RIS per image (B,), NaN where `same_prediction` (B,) is False."""
    ris = _relative_change(e_x, e_x_prime) / _at_least_eps(_relative_change(x, x_prime))
    return torch.where(same_prediction, ris, torch.nan)


def relative_output_stability(h_x: torch.Tensor, h_x_prime: torch.Tensor, e_x: torch.Tensor,
                              e_x_prime: torch.Tensor, same_prediction: torch.Tensor) -> torch.Tensor:
    """ROS per image (B,) from the logits h (B, classes), NaN where `same_prediction` (B,) is False."""
    output_change = (h_x.double() - h_x_prime.double()).norm(dim=1)
    ros = _relative_change(e_x, e_x_prime) / _at_least_eps(output_change)
    return torch.where(same_prediction, ros, torch.nan)
