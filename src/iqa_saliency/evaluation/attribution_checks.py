"""The attribution's robustness and faithfulness under the corruption, as per-image columns of a batch:
attr_ris / attr_ros (evaluation.stability) and, when asked, deletion_auc(_clean) / insertion_auc(_clean)
(evaluation.faithfulness)."""

from __future__ import annotations

import math

import torch

from .faithfulness import Faithfulness, faithfulness_aucs
from .stability import relative_input_stability, relative_output_stability

# per-image column -> summary.json key of its run mean
CHECK_MEAN_COLUMNS = {
    "attr_ris": "attribution/ris", "attr_ros": "attribution/ros",
    "deletion_auc_clean": "faithfulness/deletion_auc_clean", "deletion_auc": "faithfulness/deletion_auc",
    "insertion_auc_clean": "faithfulness/insertion_auc_clean", "insertion_auc": "faithfulness/insertion_auc",
}


class AttributionChecks:
    """Computes the columns from the passes' outputs, with the classifier the attribution explains for the
    deletion/insertion curves."""

    def __init__(self, classifier: torch.nn.Module, faithfulness: Faithfulness | None = None) -> None:
        self.classifier = classifier
        self.faithfulness = faithfulness or Faithfulness()

    def columns(self, x_clean: torch.Tensor, clean: dict[str, torch.Tensor], x: torch.Tensor,
                corrupted: dict[str, torch.Tensor], labels: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """The (B,) columns for one group: `clean` and `corrupted` are the passes' outputs (probs, logits,
        attribution; the clean ones possibly from the clean cache) for the [0, 1] inputs x_clean and x; `labels`:
        the explained classes when the attribution explains the label (attribution.target=label), else None (the
        predictions)."""
        pred_clean, pred = clean["probs"].argmax(dim=1), corrupted["probs"].argmax(dim=1)
        same, e_clean, e = pred_clean == pred, clean["attribution"], corrupted["attribution"]
        h_clean, h = clean["logits"], corrupted["logits"]  # no forward pass of its own (the clean cache holds logits)
        out = {"attr_ris": relative_input_stability(x_clean, x, e_clean, e, same),
               "attr_ros": relative_output_stability(h_clean, h, e_clean, e, same)}
        nan = torch.full_like(out["attr_ris"], math.nan)
        for curve in ("deletion", "insertion"):
            out[f"{curve}_auc_clean"] = out[f"{curve}_auc"] = nan
        if self.faithfulness.enabled:
            aucs_clean = faithfulness_aucs(self.classifier, x_clean, e_clean,
                                           pred_clean if labels is None else labels, self.faithfulness)
            aucs = aucs_clean if corrupted is clean else faithfulness_aucs(
                self.classifier, x, e, pred if labels is None else labels, self.faithfulness)
            out.update({f"{k}_auc_clean": v for k, v in aucs_clean.items()})
            out.update({f"{k}_auc": v for k, v in aucs.items()})
        return out
