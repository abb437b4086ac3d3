"""Names in a run folder: file names and the column lists of its CSV files."""

from __future__ import annotations

import hashlib

PER_IMAGE_COLUMNS = [
    "index", "image", "label", "label_name", "corruption", "severity",
    "mos", "mos_normalized", "quality_category", "mos_clean", "quality_category_clean", "mos_drop",
    "pred", "pred_name", "pred_prob", "clean_pred", "clean_pred_prob", "confidence_drop", "flipped",
    "correct_top1", "correct_top5",
    "sim_cc", "sim_sim", "sim_kld", "sim_spearman", "sim_cc_local", "sim_cc_qattr", "attr_stability_cc",
    "quality_stability_cc", "change_cc", "change_spearman", "sim_cc_clean",
    "attr_ris", "attr_ros",  # relative input/output stability of the attribution (evaluation.stability)
    # faithfulness.steps > 0 (evaluation.faithfulness; blank otherwise)
    "deletion_auc_clean", "deletion_auc", "insertion_auc_clean", "insertion_auc", "maps",
    "quality_weights", "classifier_weights",  # the weights each model ran with ("untrained"; models.resolution)
    "quality_map_kind",  # the quality map's source: the model's own output ("model:...") or "attribution:<method>"
]
SKIPPED_COLUMNS = ["index", "image", "reason"]
PER_IMAGE = "per_image.csv"
SKIPPED = "skipped.csv"
SUMMARY = "summary.json"
INCOMPLETE = "INCOMPLETE"  # JSON status of a run that has not finished (running, interrupted, failed)


NAME_BYTES = 160  # of an id in a file name; with the index, suffix and a temporary name's extras well below 255


def safe_name(image_id: str) -> str:
    """A file-name-safe form of an image id, at most NAME_BYTES + 11 bytes: a longer one is cut and a digest of the
    whole id appended (the file system's 255-byte limit also has to hold the temporary name of an atomic write)."""
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in image_id)
    if len(name.encode()) > NAME_BYTES:
        digest = hashlib.sha1(image_id.encode("utf-8", "backslashreplace")).hexdigest()[:10]
        name = f"{name.encode()[:NAME_BYTES].decode(errors='ignore')}-{digest}"
    return name
