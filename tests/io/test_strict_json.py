"""Every JSON file a run writes is strict JSON (RFC 8259): an undefined number is written as null, never NaN."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from helpers.cli import read_strict_json, run_cli

from iqa_saliency.io.atomic import strict_json


def test_undefined_numbers_become_null():
    text = strict_json({"a": math.nan, "b": [np.float32("inf"), -math.inf, 1.5], "c": np.int64(3)})
    assert text == '{"a": null, "b": [null, null, 1.5], "c": 3}'


def test_the_strict_reader_refuses_nan(tmp_path):
    (tmp_path / "x.json").write_text(json.dumps({"a": math.nan}))  # Python's default: the bare NaN token
    with pytest.raises(ValueError, match="NaN"):
        read_strict_json(tmp_path)


@pytest.mark.slow
def test_a_run_logged_to_wandb_writes_only_strict_json(tmp_path):
    """One image: the correlation across images is undefined (NaN) and must reach summary.json as null."""
    run = tmp_path / "run"
    proc = run_cli("evaluate.py", "pretrained=false", "logger=wandb", "trainer.enable_progress_bar=false",
                   "dataset.source.names=[chelsea]", "figures=1", f"hydra.run.dir={run}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = read_strict_json(run)
    summary = files[run / "summary.json"]
    assert summary["metrics"]["correlation/mos_vs_clean_pred_prob_spearman"] is None
    assert any(p.name.endswith(".table.json") for p in files)  # the wandb run's own files were read too
