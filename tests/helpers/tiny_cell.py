"""A tiny class folder and a cell run on it in process (`run_evaluation`, no Hydra), with the models of
helpers/plumbing_models.py: fast enough (about a second) for the cell and module mutation campaigns. The expected
values come from helpers/plumbing_reference.py (PIL, numpy, imagecorruptions), never from the project's code."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from helpers import plumbing_reference as pr
from helpers.plumbing_models import CLASS_NAMES

# per image: class folder, file, (width, height), quadrant colours (top-left, top-right, bottom-left, bottom-right)
R, G, B, W, K, C, Y = (225, 25, 25), (25, 205, 45), (30, 40, 225), (205, 205, 205), (15, 15, 15), (40, 190, 200), \
    (210, 200, 30)
IMAGES = [
    ("Green", "a.png", (44, 36), (K, K, G, G)),
    ("Green", "b.png", (40, 40), (G, Y, G, B)),
    ("purple", "a.png", (36, 40), (R, B, B, R)),  # no class of the classifier: no label
    ("red", "a.png", (40, 34), (R, R, G, B)),
    ("red", "b.png", (34, 44), (G, R, K, K)),
]
BROKEN = "red/zz_broken.png"  # listed last (index 5), unreadable: skipped


def make_folder(root: Path) -> Path:
    """The class folder: noisy four-colour images (seeded) and one broken file."""
    for seed, (folder, name, (w, h), quads) in enumerate(IMAGES):
        a = np.zeros((h, w, 3))
        a[: h // 2, : w // 2], a[: h // 2, w // 2:], a[h // 2:, : w // 2], a[h // 2:, w // 2:] = quads
        a += np.random.default_rng(seed).normal(0, 14, a.shape)
        (root / folder).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(root / folder / name)
    (root / BROKEN).write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return root


def label_of(image_id: str) -> int | None:
    """The classifier's index of the image's class folder, matched by name; None when it has no such class."""
    folder = pr.canonical(image_id.split("/")[0])
    return next((i for i, n in enumerate(CLASS_NAMES) if pr.canonical(n) == folder), None)


def expected_images(root: Path, corruption: str, severity: int, seed: int, crop: int) -> dict[str, dict]:
    """Per readable image (in listing order): index, label, clean and corrupted inputs (crop order, no resize)."""
    _, listed = pr.list_class_folders(root)
    out = {}
    for index, item in enumerate(listed):
        try:
            clean = pr.prepare(pr.decode(item.path), None, crop)
        except Exception:  # noqa: BLE001 - the broken file
            continue
        corrupted = pr.corrupt(clean, corruption, severity, seed, item.image_id)
        out[item.image_id] = {"index": index, "label": label_of(item.image_id), "clean": clean,
                              "corrupted": corrupted}
    return out


def trainer():  # noqa: ANN201
    import pytorch_lightning as pl

    return pl.Trainer(accelerator="cpu", devices=1, logger=False, inference_mode=False,
                      use_distributed_sampler=False, enable_checkpointing=False, enable_model_summary=False,
                      enable_progress_bar=False)


def models():  # noqa: ANN201
    from helpers.plumbing_models import load_classifier, load_quality
    from iqa_saliency.evaluation.settings import EvaluationModels

    quality, weights = load_quality()
    return EvaluationModels(quality, weights, load_classifier())


def expected_row(index: int, image_id: str, label: int | None, clean: np.ndarray, corrupted: np.ndarray,
                 target: str = "pred", quality_map: str = "raw") -> dict:
    """Every per_image.csv value of one image, from the models' definitions (helpers/plumbing_models.py)."""
    from helpers import reference as ref

    xc, xk = pr.as_unit(clean), pr.as_unit(corrupted)
    p_clean, p_corr = pr.softmax(pr.region_logits(xc)), pr.softmax(pr.region_logits(xk))
    pred, clean_pred = int(p_corr.argmax()), int(p_clean.argmax())
    mos, qmap = pr.region_quality(xk)
    mos_clean, qmap_clean = pr.region_quality(xc)
    h, w = xk.shape[:2]
    attr = pr.region_saliency(h, w, label if target == "label" else pred)
    attr_clean = pr.region_saliency(h, w, label if target == "label" else clean_pred)
    select = {"raw": lambda q, qc: q, "inverted": lambda q, qc: 100.0 - q, "drop": lambda q, qc: qc - q}[quality_map]
    top5 = set(np.argsort(-p_corr)[:5].tolist())
    norm, norm_clean = ref.paq_normalise(mos), ref.paq_normalise(mos_clean)
    stem = f"{index:06d}_{''.join(ch if ch.isalnum() or ch in '-_.' else '_' for ch in image_id)}"
    return {
        "index": index, "image": image_id, "label": label, "label_name": None if label is None else CLASS_NAMES[label],
        "mos": mos, "mos_clean": mos_clean, "mos_drop": mos_clean - mos, "mos_normalized": norm,
        "mos_normalized_clean": norm_clean, "quality_category": ref.paq_category(norm),
        "quality_category_clean": ref.paq_category(norm_clean),
        "pred": pred, "pred_name": CLASS_NAMES[pred], "pred_prob": p_corr[pred], "clean_pred": clean_pred,
        "clean_pred_prob": p_corr[clean_pred], "confidence_drop": p_clean[clean_pred] - p_corr[clean_pred],
        "flipped": float(pred != clean_pred),
        "correct_top1": None if label is None else float(pred == label),
        "correct_top5": None if label is None else float(label in top5),
        **ref.similarities(select(qmap, qmap_clean), attr),
        "attr_stability_cc": ref.mit_cc(attr_clean, attr), "quality_stability_cc": ref.mit_cc(qmap_clean, qmap),
        **ref.change_similarity(qmap_clean, qmap, attr_clean, attr),
        "sim_cc_clean": ref.mit_cc(select(qmap_clean, qmap_clean), ref.adaptive_avg_pool(attr_clean, *qmap.shape)),
        "stem": stem, "_qmap": qmap, "_qmap_clean": qmap_clean, "_attr": attr, "_attr_clean": attr_clean,
        "_corrupted": corrupted,
    }
