"""Names in a run folder: file names and the column lists of its CSV files."""

from __future__ import annotations

PER_IMAGE_COLUMNS = [
    "index", "image", "label", "label_name", "corruption", "severity",
    "mos", "mos_normalized", "quality_category", "mos_clean", "quality_category_clean", "mos_drop",
    "pred", "pred_name", "pred_prob", "clean_pred", "clean_pred_prob", "confidence_drop", "flipped",
    "correct_top1", "correct_top5",
    "sim_cc", "sim_sim", "sim_kld", "sim_spearman", "sim_cc_local", "sim_cc_qattr", "attr_stability_cc",
    "quality_stability_cc", "change_cc", "change_spearman", "sim_cc_clean", "maps",
    "quality_weights", "classifier_weights",  # the weights each model ran with ("untrained"; models.resolution)
    "quality_map_kind",  # the quality map's source: the model's own output ("model:...") or "attribution:<method>"
]
SKIPPED_COLUMNS = ["index", "image", "reason"]
PER_IMAGE = "per_image.csv"
SKIPPED = "skipped.csv"
SUMMARY = "summary.json"
INCOMPLETE = "INCOMPLETE"  # JSON status of a run that has not finished (running, interrupted, failed)
