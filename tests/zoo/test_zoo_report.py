"""A sweep over model pairs on random weights: its report keeps the four pairs apart (variants) and the two
classifiers apart (mCE by classifier), though every model is 'untrained'."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from iqa_saliency.report.sweep import Cell, summarize_cells


def _cell(tmp: Path, arch: str, metric: str) -> Cell:
    summary = {"corruption": "fog", "severity": 1, "attribution": "gradcam", "classifier": {"arch": arch},
               "n_images": 1, "metrics": {"acc/top1": 0.5},
               "weights": {"classifier": {"name": "untrained"}, "quality": {"name": "untrained"}},
               "config": {"quality": {"metric": metric}}}
    return Cell(tmp / f"{arch}-{metric}", summary, pd.DataFrame({"image": ["a"], "sim_cc": [0.5]}))


def test_untrained_pairs_are_kept_apart(tmp_path):
    pairs = [(a, m) for a in ("timm/resnet50", "timm/vit_base_patch16_224") for m in ("topiq_nr", "musiq")]
    cells = [_cell(tmp_path, a, m) for a, m in pairs]
    out = summarize_cells(cells, n_boot=10)
    assert sorted(out["variant"]) == sorted(f"gradcam · {a} (untrained) · {m}" for a, m in pairs)
    assert sorted(set(out["classifier"])) == ["timm/resnet50 (untrained)", "timm/vit_base_patch16_224 (untrained)"]


def test_a_paq2piq_cell_keeps_its_variant(tmp_path):
    cell = _cell(tmp_path, "resnet18", "x")
    del cell.summary["config"]
    cell.summary["weights"]["classifier"]["name"] = "resnet18:IMAGENET1K_V1"
    assert summarize_cells([cell], n_boot=10)["variant"].tolist() == ["gradcam · resnet18:IMAGENET1K_V1"]
