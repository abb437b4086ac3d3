"""A configuration error found once a run has started (issue 22) leaves no run to resume behind: the corrected
command runs in the same folder without resume=true; a folder with computed rows keeps them and its marker."""

from __future__ import annotations

import pytest

from iqa_saliency.errors import ConfigError

pytestmark = pytest.mark.slow


def _run(run_dir, **outputs):
    import pytorch_lightning as pl

    from iqa_saliency.data.protocol import Cell, Inputs
    from iqa_saliency.data.sources import SampleImages
    from iqa_saliency.evaluation.cell import run_evaluation
    from iqa_saliency.evaluation.settings import EvaluationModels, Explanation, Outputs
    from iqa_saliency.models.classifier import load_classifier
    from iqa_saliency.models.paq2piq import load_paq2piq

    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, inference_mode=False,
                         use_distributed_sampler=False, enable_checkpointing=False, enable_model_summary=False,
                         enable_progress_bar=False)
    quality, weights = load_paq2piq(pretrained=False)
    models = EvaluationModels(quality, weights, load_classifier(pretrained=False))
    return run_evaluation(SampleImages(["chelsea", "coffee"]), models, trainer, Cell("contrast", 1, seed=0),
                          Inputs(resize=None, crop=None, batch_size=2, num_workers=0), Explanation("gradcam"),
                          Outputs(run_dir, figures=0, **outputs))


def test_a_late_configuration_error_leaves_no_run(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(ConfigError):
        _run(run, maps_format="zarr")  # zarr needs dataset.crop: found after the run folder was started
    assert not (run / "INCOMPLETE").exists() and not list(run.glob(".*.part*"))
    summary = _run(run).summary  # the corrected command, same folder, no resume=true
    assert summary["n_images"] == 2 and not (run / "INCOMPLETE").exists()
