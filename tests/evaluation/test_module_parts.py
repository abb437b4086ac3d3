"""The parts of evaluation/module.py that a cell's per_image.csv does not show: which copy of each model runs
(BatchNorm folded or not), the layers named as explained, each process's part files, the models' memory layout, the
profile's timers, the heap trims, and the rows `_write` commits for a batch a killed run had partly finished.

Modules are built directly on small convolution + BatchNorm networks (helpers/plumbing_models.py's stand-ins with a
stem); the expected answers are read off the construction (which modules exist, which layer, which file)."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers import plumbing_reference as pr
from helpers import tiny_cell
from helpers.plumbing_models import CLASS_NAMES, RegionQuality
from torch import nn

from iqa_saliency.attribution.registry import build_attribution
from iqa_saliency.data.protocol import Cell, Inputs
from iqa_saliency.evaluation import module as module_mod
from iqa_saliency.evaluation.module import EvaluationModule, _with_explainer
from iqa_saliency.evaluation.settings import Explanation, Outputs, Speed
from iqa_saliency.io.run_writer import RunWriter


def _conv_bn_net(classes: int = len(CLASS_NAMES)) -> nn.Sequential:
    """conv → BatchNorm (non-trivial running statistics) → ReLU → pooled logits: folding changes its modules."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(4, classes))
    net[1].running_mean.uniform_(-0.5, 0.5)
    net[1].running_var.uniform_(0.5, 2.0)
    return net.eval()


class StemQuality(RegionQuality):
    """The region quality model behind a conv + BatchNorm stem that keeps its input (a 3x3 identity kernel: a
    weight whose channels_last layout differs from the contiguous one, unlike a 1x1 kernel's)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU())
        with torch.no_grad():
            self.stem[0].weight.zero_()
            self.stem[0].weight[:, :, 1, 1] = torch.eye(3)
            self.stem[0].bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(self.stem(x))


def _has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def _module(tmp_path, explain: Explanation | None = None, speed: Speed | None = None, **outputs) -> EvaluationModule:  # noqa: ANN001
    models = dataclasses.replace(tiny_cell.models(), quality=StemQuality().eval())
    models.classifier.model = _conv_bn_net()
    writer = RunWriter(tmp_path / "run")
    return EvaluationModule(models, explain or Explanation("saliency"), Cell("gaussian_noise", 2, 0),
                            Inputs(resize=None, crop=32, batch_size=2, num_workers=0),
                            Outputs(tmp_path / "run", **{"figures": 0, **outputs}), speed or Speed(), writer)


def test_folding_runs_the_folded_copy_unless_the_explained_layer_is_a_folded_convolution():
    net = _conv_bn_net()
    x = torch.rand(2, 3, 16, 16)
    model, explainer = _with_explainer(net, lambda m: build_attribution("gradcam", m, layer="2"), True)
    assert model is not net and not _has_batchnorm(model) and explainer.model is model  # after the BatchNorm
    torch.testing.assert_close(model(x), net(x), rtol=1e-4, atol=1e-5)  # folding: float rounding only
    # the map of the convolution itself would take its BatchNorm in once folded: the model as given
    model, explainer = _with_explainer(net, lambda m: build_attribution("gradcam", m, layer="0"), True)
    assert model is net and explainer.model is net and _has_batchnorm(model)
    model, explainer = _with_explainer(net, lambda m: build_attribution("gradcam", m, layer="2"), False)
    assert model is net and explainer.model is net


@pytest.mark.parametrize("fold", [True, False])
def test_the_module_folds_both_models_only_when_asked(tmp_path, fold):
    module = _module(tmp_path, speed=Speed(fold_batchnorm=fold))
    assert _has_batchnorm(module.classifier) is not fold and _has_batchnorm(module.quality) is not fold


def test_explained_layers_name_the_layer_of_each_layer_method(tmp_path):
    explain = Explanation("gradcam", options={"layer": "2"}, quality_saliency="gradcam",
                          quality_options={"layer": "model.stem.2"})
    module = _module(tmp_path, explain)
    assert module.explained_layers() == {"classifier": "2", "quality": "model.stem.2"}
    assert _module(tmp_path, Explanation("gradcam", options={"layer": "2"})).explained_layers() == {
        "classifier": "2", "quality": None}  # the local quality scores: no layer


def test_test_start_names_the_process_part_files_and_lays_the_models_out_channels_last(tmp_path):
    module = _module(tmp_path, speed=Speed(channels_last=True))
    module._trainer = SimpleNamespace(global_rank=1)  # the second process of a DDP run
    module.on_test_start()
    assert module.writer.rank == 1
    assert module.writer.part_path("per_image.csv") == tmp_path / "run" / ".per_image.csv.part1"
    for model in (module.classifier, module.quality):
        weights = [p for p in model.parameters() if p.dim() == 4]
        assert weights and all(p.is_contiguous(memory_format=torch.channels_last) for p in weights)


class Clock:
    """Stands in for time.perf_counter: the given readings, one per call."""

    def __init__(self, *readings: float) -> None:
        self.readings = iter(readings)

    def perf_counter(self) -> float:
        return next(self.readings)


def test_the_loop_timers_add_up_over_batches(tmp_path, monkeypatch):
    module = _module(tmp_path)
    # epoch start 0; batch 1 waits 1 s and steps 2 s; batch 2 waits 4 s and steps 8 s
    monkeypatch.setattr(module_mod, "time", Clock(0.0, 1.0, 3.0, 7.0, 15.0))
    module.on_test_epoch_start()
    for _ in range(2):
        module.on_test_batch_start(None, 0)
        module.on_test_batch_end(None, None, 0)
    assert module.step_seconds["waiting for data (workers: decode, corrupt)"] == 5.0
    assert module.step_seconds["step"] == 10.0
    # each figure's time moves from the writing row (which _write's clock held) to the figures row
    module.step_seconds["writing: rows, maps queued (main process)"] = 10.0
    monkeypatch.setattr(module, "_draw_figure", lambda *args: None)
    monkeypatch.setattr(module_mod, "time", Clock(0.0, 1.0, 5.0, 7.0))
    for _ in range(2):
        module._figure("stem", None, None, None, {})
    assert module.step_seconds["figures"] == 3.0
    assert module.step_seconds["writing: rows, maps queued (main process)"] == 7.0


def test_the_heap_is_trimmed_every_32_batches(monkeypatch):
    trims = []
    monkeypatch.setattr(module_mod, "release_free_heap", lambda: trims.append(batch))
    stand_in = SimpleNamespace(writer=SimpleNamespace(append_skipped=list, finished=set()), _evaluate=None)
    for batch in range(70):
        EvaluationModule.test_step(stand_in, {"skipped": [], "groups": []}, batch)
    assert trims == [31, 63]


def _write_batch(module: EvaluationModule, finished: set[int]) -> list[dict]:
    """`_write` of a batch of three images (indices 4, 5, 6) with `finished` already on disk; the rows on disk."""
    n = 3
    # labels: a class, another, and one past the classifier's classes (a dataset numbered without class names)
    items = [{"index": 4 + i, "image_id": f"red/{i}.png", "label": label}
             for i, label in enumerate([0, 1, len(CLASS_NAMES)])]
    values = {"mos": torch.tensor([40.0, 50.0, 60.0], dtype=torch.float64),
              "mos_normalized": torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64),
              "mos_normalized_clean": torch.tensor([0.3, 0.5, 0.7], dtype=torch.float64),
              "flipped": torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)}
    pred, clean_pred = torch.tensor([1, 0, 0]), torch.tensor([0, 0, 1])
    maps = torch.rand(n, 20, 20)
    module.writer.finished = set(finished)
    module._write(items, torch.zeros(n, 3, 8, 8, dtype=torch.uint8), values, pred, clean_pred, maps,
                  torch.rand(n, 8, 8), {"quality_map_clean": maps})
    return pr.read_csv(module.writer.part_path("per_image.csv"))


def test_write_skips_only_the_finished_images_of_a_batch(tmp_path):
    module = _module(tmp_path)
    (tmp_path / "run").mkdir()
    rows = _write_batch(module, finished={4})  # a killed run had committed the first image's row only
    assert [(r["index"], r["image"]) for r in rows] == [("5", "red/1.png"), ("6", "red/2.png")]
    assert [r["maps"] for r in rows] == ["maps/000005_red_1.png.npz", "maps/000006_red_2.png.npz"]
    assert all((tmp_path / "run" / r["maps"]).is_file() for r in rows)
    assert [r["flipped"] for r in rows] == ["0", "1"]  # a bool column: 0/1, as the schema writes it
    assert [(r["label"], r["label_name"]) for r in rows] == [("1", CLASS_NAMES[1]), (str(len(CLASS_NAMES)), "")]
    assert [r["pred_name"] for r in rows] == [CLASS_NAMES[0], CLASS_NAMES[0]]


def test_without_saved_maps_the_maps_column_is_empty_and_no_file_is_written(tmp_path):
    module = _module(tmp_path, save_maps=False)
    (tmp_path / "run").mkdir()
    rows = _write_batch(module, finished=set())
    assert [r["index"] for r in rows] == ["4", "5", "6"]
    assert [r["maps"] for r in rows] == ["", "", ""] and not (tmp_path / "run" / "maps").exists()
    np.testing.assert_array_equal([pr.number(r["mos"]) for r in rows], [40.0, 50.0, 60.0])
