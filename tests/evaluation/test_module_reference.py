"""The per-batch work of evaluation/module.py: which value lands in which column of per_image.csv, which map in
which file, for which image, on a tiny class folder (helpers/tiny_cell.py) with models whose answers are known by
construction (helpers/plumbing_models.py). Every value is restated with PIL, numpy and imagecorruptions
(helpers/plumbing_reference.py, helpers/reference.py). Fast: four in-process cells of a few 32 px images.

* noise: gaussian_noise 5, the predicted class explained, raw quality map, npz maps, saved inputs, 2 figures.
* label: the true class explained, the quality model's global score explained too (saliency), the drop map.
* clean: contrast at severity 0, the inverted map, zarr maps, channels_last, BatchNorm left unfolded.
* torch: the corruption left to the step (corruption_backend=torch), a stand-in corruption that inverts the
  pixels, corrupted at full size and cropped, into a corruption cache.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers import plumbing_reference as pr
from helpers import reference as ref
from helpers import tiny_cell
from PIL import Image

from iqa_saliency import profiling
from iqa_saliency.data.protocol import Cell, Inputs
from iqa_saliency.data.sources import ImageFolder
from iqa_saliency.evaluation import module as module_mod
from iqa_saliency.evaluation.cell import run_evaluation
from iqa_saliency.evaluation.faithfulness import Faithfulness
from iqa_saliency.evaluation.settings import Explanation, Outputs, Speed
from iqa_saliency.io.maps import read_maps, store_name
from iqa_saliency.models.weights import WeightsIdentity

FLOAT_COLUMNS = ["mos", "mos_clean", "mos_drop", "mos_normalized", "pred_prob", "clean_pred_prob",
                 "confidence_drop", "flipped", "correct_top1", "correct_top5", "sim_cc", "sim_sim", "sim_kld",
                 "sim_spearman", "attr_stability_cc", "quality_stability_cc", "change_cc", "change_spearman",
                 "sim_cc_clean"]


class Invert:
    """Stands in for the torch corruption: 255 - pixels; records each call's (shape, name, severity, seeds)."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def __call__(self, images: torch.Tensor, name: str, severity: int, seeds: list[int]) -> torch.Tensor:
        self.calls.append((tuple(images.shape), name, severity, list(seeds)))
        return 255 - images


def _cell(tmp: Path, folder: Path, cell: Cell, inputs: Inputs, explain: Explanation, speed: Speed | None = None,
          models=None, **outputs) -> SimpleNamespace:  # noqa: ANN001
    """Run the cell with the figures recorded (not drawn); the rows, maps and recorded figures."""
    figures = []
    run_dir = tmp / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(module_mod, "save_comparison_figure", lambda *args: figures.append(args))
        trainer = tiny_cell.trainer()
        result = run_evaluation(ImageFolder(folder), models or tiny_cell.models(), trainer, cell, inputs,
                                explain, Outputs(run_dir, **{"figures": 0, **outputs}), speed or Speed())
    rows = pr.read_csv(run_dir / "per_image.csv")
    return SimpleNamespace(run_dir=run_dir, rows=rows, figures=figures, result=result, trainer=trainer,
                           maps={r["image"]: read_maps(run_dir, r["maps"]) for r in rows if r["maps"]})


def _expected(folder: Path, cell: Cell, crop: int, **kwargs) -> dict[str, dict]:
    images = tiny_cell.expected_images(folder, cell.corruption, cell.severity, cell.seed, crop)
    return {i: tiny_cell.expected_row(e["index"], i, e["label"], e["clean"], e["corrupted"], **kwargs)
            for i, e in images.items()}


def _check_rows(run: SimpleNamespace, expected: dict[str, dict], cell: Cell, classifier: str = "region-rules",
                map_kind: str = "model:paq2piq_local_scores") -> None:
    assert [r["image"] for r in run.rows] == list(expected)
    for r in run.rows:
        e = expected[r["image"]]
        assert (int(r["index"]), pr.number(r["label"]), r["label_name"] or None) == (
            e["index"], e["label"], e["label_name"]), r["image"]
        assert (r["corruption"], int(r["severity"])) == (cell.corruption, cell.severity)
        assert (int(r["pred"]), r["pred_name"], int(r["clean_pred"])) == (e["pred"], e["pred_name"], e["clean_pred"])
        assert r["flipped"] == str(int(e["flipped"]))  # a bool column, written 0/1
        assert (r["quality_category"], r["quality_category_clean"]) == (e["quality_category"],
                                                                        e["quality_category_clean"]), r["image"]
        for col in FLOAT_COLUMNS:
            # Spearman's ranks of a nearly flat quality map move with float32 rounding: a looser bound
            tol = 5e-3 if col.endswith("spearman") else 1e-5
            assert pr.close(pr.number(r[col]), e[col], rel=1e-4, abs_=tol), (r["image"], col, r[col], e[col])
        assert (r["quality_weights"], r["classifier_weights"], r["quality_map_kind"]) == (
            "region-quality", classifier, map_kind)


def _check_targets(mp: pytest.MonkeyPatch) -> list:
    """Records the classes each group's attribution checks explain (None: the predictions)."""
    seen: list = []
    columns = module_mod.AttributionChecks.columns

    def recording(self, x_clean, clean, x, corrupted, labels):  # noqa: ANN001, ANN202
        seen.append(None if labels is None else labels.tolist())
        return columns(self, x_clean, clean, x, corrupted, labels)

    mp.setattr(module_mod.AttributionChecks, "columns", recording)
    return seen


def _input_layouts(model: torch.nn.Module) -> list[bool]:
    """Records, per forward call of the model, whether its input came channels_last."""
    seen: list[bool] = []
    model.register_forward_pre_hook(lambda m, args: seen.append(args[0].is_contiguous(
        memory_format=torch.channels_last)))
    return seen


# --------------------------------------------------------------------------------------------------- noise

NOISE = Cell("gaussian_noise", 5, 1)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tiny_cell.make_folder(tmp_path_factory.mktemp("tiny") / "data")


def test_noise(folder, tmp_path):
    """One test for the whole run (a mutation campaign credits a function to the tests that call it)."""
    inputs = Inputs(resize=None, crop=32, batch_size=2, num_workers=0, save_images=True)
    profile = profiling._Profile()
    profile.path = str(tmp_path / "profile.json")  # on, never dumped (no atexit)
    models = tiny_cell.models()
    layouts = _input_layouts(models.quality)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(profiling, "_profile", profile)
        targets = _check_targets(mp)
        noise = _cell(tmp_path, folder, NOISE, inputs, Explanation("saliency"), models=models, figures=2)
    assert layouts and not any(layouts)  # channels_last off: the images as they are
    assert targets == [None, None, None]  # target=pred: the checks explain each image's prediction
    # the test loop's wall time split by stage: each part of it, none negative
    stages = profile.seconds[profiling.OUTSIDE]
    loop = stages["Lightning test loop"]
    for name in ("model compute (quality, classifier, attribution)", "waiting for data (workers: decode, corrupt)",
                 "step", "writing: rows, maps queued (main process)", "figures"):
        assert 0 < stages[name] <= loop, name  # each stage named as the profile's table reads it
    assert stages["corruption in the step (torch backend)"] == 0
    # what Lightning's loggers (wandb's dashboard) receive: the summary's metrics, NaN-free
    logged = {k: float(v) for k, v in noise.trainer.callback_metrics.items()}
    metrics = noise.result.summary["metrics"]
    assert {"acc/top1", "acc/top5", "similarity/cc", "quality/mos_mean", "n_images"} <= set(logged)
    for key, value in logged.items():
        assert not math.isnan(value) and value == pytest.approx(metrics[key], rel=1e-6, abs=1e-7), key
    _noise_columns(noise, folder)
    (skipped,) = pr.read_csv(noise.run_dir / "skipped.csv")  # the broken file, with its index and the decoder's word
    assert (skipped["index"], skipped["image"]) == ("5", tiny_cell.BROKEN)
    assert "cannot identify image" in skipped["reason"]
    _noise_figures_and_previews(noise, folder)
    _noise_summary_means_of_the_new_columns(noise, folder)


def _noise_columns(noise, folder):  # noqa: ANN001, ANN202
    expected = _expected(folder, NOISE, 32)
    _check_rows(noise, expected, NOISE)
    flips = [e["flipped"] for e in expected.values()]
    assert 0 < sum(flips) < len(flips)  # the case tells the clean and the corrupted prediction apart
    for r in noise.rows:
        e = expected[r["image"]]
        assert r["maps"] == f"maps/{e['stem']}.npz"
        maps = noise.maps[r["image"]]
        assert set(maps) == {"quality_map", "attribution", "quality_map_clean", "attribution_clean"}
        np.testing.assert_allclose(maps["quality_map"], e["_qmap"], atol=1e-4)
        np.testing.assert_allclose(maps["quality_map_clean"], e["_qmap_clean"], atol=1e-4)
        np.testing.assert_allclose(maps["attribution"], e["_attr"], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(maps["attribution_clean"], e["_attr_clean"], rtol=1e-5, atol=1e-7)
        saved = np.asarray(Image.open(noise.run_dir / "images" / f"{e['stem']}.png"))
        np.testing.assert_array_equal(saved, e["_corrupted"])
        assert r["sim_cc_local"] == "" and r["sim_cc_qattr"] == ""


def _noise_figures_and_previews(noise, folder):  # noqa: ANN001, ANN202
    expected = _expected(folder, NOISE, 32)
    first = [e for e in expected.values() if e["index"] < 2]
    assert [Path(args[0]) for args in noise.figures] == [noise.run_dir / "figures" / f"{e['stem']}.png"
                                                         for e in first]
    for args, e, preview in zip(noise.figures, first, noise.result.previews, strict=True):
        _, image, qmap, attr, titles, mark = args
        np.testing.assert_array_equal(image, e["_corrupted"])
        np.testing.assert_allclose(qmap, e["_qmap"], atol=1e-4)
        np.testing.assert_allclose(attr, e["_attr"], rtol=1e-5, atol=1e-7)
        assert mark is None
        assert titles == (
            f"{e['image']} · gaussian_noise s5",
            f"MOS {e['mos']:.1f} ({e['quality_category']}) · clean {e['mos_clean']:.1f}",
            f"saliency: {e['pred_name']} {e['pred_prob']:.2f} · CC {e['sim_cc']:.2f}")
        assert preview.row["image"] == e["image"] and preview.row["mos"] == pytest.approx(e["mos"], rel=1e-5)
        np.testing.assert_array_equal(preview.image, e["_corrupted"])
        np.testing.assert_allclose(preview.quality_map, e["_qmap"], atol=1e-4)
        np.testing.assert_allclose(preview.attribution, e["_attr"], rtol=1e-5, atol=1e-7)
    assert len(noise.result.previews) == 2


def _noise_summary_means_of_the_new_columns(noise, folder):  # noqa: ANN001, ANN202
    expected = list(_expected(folder, NOISE, 32).values())
    metrics = noise.result.summary["metrics"]
    for key, col in {"robustness/confidence_drop": "confidence_drop", "quality/stability_cc": "quality_stability_cc",
                     "similarity/cc_clean": "sim_cc_clean", "change/cc": "change_cc"}.items():
        values = [e[col] for e in expected if not math.isnan(e[col])]
        want = sum(values) / len(values) if values else None
        assert pr.close(metrics[key], want, rel=1e-4, abs_=1e-5), key


# --------------------------------------------------------------------------------------------------- label

LABEL = Cell("gaussian_noise", 3, 1)


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> Path:
    root = tiny_cell.make_folder(tmp_path_factory.mktemp("labelled") / "data")
    for path in (root / "purple").iterdir():
        path.unlink()
    (root / "purple").rmdir()
    (root / tiny_cell.BROKEN).unlink()
    return root


def _quality_saliency(h: int, w: int) -> np.ndarray:
    """|∂ score / ∂x| summed over channels of the quality model's score 40 + 50 · mean green of the top half."""
    out = np.zeros((h, w))
    out[: h // 2] = 50.0 / ((h // 2) * w)
    return out


def test_label_target_and_quality_attribution(labelled, tmp_path):
    inputs = Inputs(resize=None, crop=32, batch_size=3, num_workers=0)
    explain = Explanation("saliency", target="label", quality_saliency="saliency", quality_map="drop",
                          faithfulness=Faithfulness(steps=2))
    models = tiny_cell.models()  # a quality model whose lower scores are better, with a map kind of its own
    models.quality.lower_better, models.quality.map_kind = True, "model:region_means"
    with pytest.MonkeyPatch.context() as mp:
        targets = _check_targets(mp)
        run = _cell(tmp_path, labelled, LABEL, inputs, explain, models=models)
    expected = _expected(labelled, LABEL, 32, target="label", quality_map="drop")
    # the faithfulness curves' classes: each group's true classes (batches of 3)
    assert [label for group in targets for label in group] == [e["label"] for e in expected.values()]
    for e in expected.values():
        e["mos_drop"] = -e["mos_drop"]  # the loss of quality: the score's rise
    _check_rows(run, expected, LABEL, map_kind="model:region_means")
    assert all(pr.number(r["deletion_auc"]) is not None and r["insertion_auc"] == "" for r in run.rows)
    assert any(e["pred"] != e["label"] for e in expected.values())  # the label, not the prediction, is explained
    qattr = _quality_saliency(32, 32)
    for r in run.rows:
        e = expected[r["image"]]
        maps = run.maps[r["image"]]
        np.testing.assert_allclose(maps["quality_attribution"], qattr, rtol=1e-5, atol=1e-9)
        assert pr.close(pr.number(r["sim_cc_local"]), e["sim_cc"], rel=1e-4, abs_=1e-6)
        want = ref.mit_cc(ref.adaptive_avg_pool(qattr, 20), ref.adaptive_avg_pool(e["_attr"], 20))
        assert pr.close(pr.number(r["sim_cc_qattr"]), want, rel=1e-4, abs_=1e-6)
    assert run.result.summary["explained_layer"] == {"classifier": None, "quality": None}
    metrics = run.result.summary["metrics"]  # the means of the like-with-like and check columns too
    for key, col in {"similarity/cc_local": "sim_cc_local", "similarity/cc_qattr": "sim_cc_qattr",
                     "attribution/ris": "attr_ris", "faithfulness/deletion_auc": "deletion_auc"}.items():
        values = [pr.number(r[col]) for r in run.rows if r[col] != ""]
        assert values and pr.close(metrics[key], sum(values) / len(values), rel=1e-9, abs_=1e-12), key


# --------------------------------------------------------------------------------------------------- clean

CLEAN = Cell("contrast", 0, 3)  # severity 0: clean, whatever the corruption's name


def test_a_clean_cell_compares_each_image_with_itself(folder, tmp_path):
    inputs = Inputs(resize=None, crop=32, batch_size=3, num_workers=0)
    models = tiny_cell.models()  # the classifier's weights named "untrained": the figures carry the mark
    models.classifier.weights = WeightsIdentity("untrained", None, None)
    layouts = _input_layouts(models.quality)
    run = _cell(tmp_path, folder, CLEAN, inputs, Explanation("saliency", quality_map="inverted"),
                Speed(channels_last=True, fold_batchnorm=False), models, maps_format="zarr", figures=1)
    assert layouts and all(layouts)  # channels_last=true reaches the models' inputs
    expected = _expected(folder, CLEAN, 32, quality_map="inverted")
    (figure,) = run.figures
    assert figure[5] == "UNTRAINED weights (classifier): the maps show no learned behaviour"
    e = expected["Green/a.png"]
    assert figure[4] == ("Green/a.png · clean",
                         f"MOS {e['mos']:.1f} ({e['quality_category']}) · clean {e['mos_clean']:.1f}",
                         f"saliency: {e['pred_name']} {e['pred_prob']:.2f} · CC (inverted) {e['sim_cc']:.2f}")
    for e in expected.values():  # exactly 1: the same maps, not their rounding noise
        e["attr_stability_cc"] = e["quality_stability_cc"] = 1.0
    _check_rows(run, expected, CLEAN, classifier="untrained")
    assert run.result.summary["corruption_backend"]["used"] == "none"
    for r in run.rows:
        e = expected[r["image"]]
        assert r["maps"] == f"{store_name(0)}#{e['index']}"
        assert float(r["attr_stability_cc"]) == 1.0 and float(r["quality_stability_cc"]) == 1.0
        assert float(r["flipped"]) == 0.0 and float(r["mos_drop"]) == 0.0
        np.testing.assert_allclose(run.maps[r["image"]]["quality_map"], e["_qmap"], atol=1e-4)
        np.testing.assert_allclose(run.maps[r["image"]]["attribution"], e["_attr"], rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------------------------------- torch

TORCH = Cell("contrast", 2, 5)


def test_the_step_corrupts_full_size_images_per_size_then_crops(folder, tmp_path):
    invert = Invert()
    inputs = Inputs(resize=None, crop=32, batch_size=2, num_workers=0, corrupt_at="full_size",
                    corruption_backend="torch")
    cache = tmp_path / "corruption_cache"
    profile = profiling._Profile()
    profile.path = str(tmp_path / "profile.json")  # on, never dumped (no atexit)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(module_mod, "corrupt_batch", invert)
        mp.setattr(profiling, "_profile", profile)
        run = _cell(tmp_path, folder, TORCH, inputs, Explanation("saliency"), corruption_cache_dir=cache)
    assert run.result.summary["corruption_backend"]["used"] == "torch"
    stages = profile.seconds[profiling.OUTSIDE]  # the step's corruption, in the profile's row of its own
    assert 0 < stages["corruption in the step (torch backend)"] <= stages["Lightning test loop"]
    _, listed = pr.list_class_folders(folder)
    by_id = {i.image_id: i for i in listed}
    expected = {}
    for image_id, e in tiny_cell.expected_images(folder, "none", 0, 0, 32).items():
        full = np.asarray(pr.decode(by_id[image_id].path))
        corrupted = pr.prepare(Image.fromarray(255 - full), None, 32)
        expected[image_id] = tiny_cell.expected_row(e["index"], image_id, e["label"], e["clean"], corrupted)
    _check_rows(run, expected, TORCH)
    # one call per image size of each batch, with each image's seed
    want = []
    for batch in ([0, 1], [2, 3], [4]):
        items = [i for i in listed if listed.index(i) in batch]
        sizes: dict[tuple, list] = {}
        for item in items:
            h, w = np.asarray(pr.decode(item.path)).shape[:2]
            sizes.setdefault((h, w), []).append(item)
        for (h, w), group in sizes.items():
            want.append(((len(group), 3, h, w), "contrast", 2,
                         [ref.corruption_seed(5, i.image_id, "contrast", 2) for i in group]))
    assert invert.calls == want
    entries = [p for p in cache.rglob("*") if p.is_file() and p.suffix != ".tmp"]
    assert len(entries) == len(expected)
    assert run.result.summary["corruption_seconds"] > 0


def test_a_cached_corruption_is_served_without_corrupting_again(folder, tmp_path):
    invert = Invert()
    inputs = Inputs(resize=None, crop=32, batch_size=2, num_workers=0, corruption_backend="torch")
    cache = tmp_path / "corruption_cache"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(module_mod, "corrupt_batch", invert)
        _cell(tmp_path / "first", folder, TORCH, inputs, Explanation("saliency"), corruption_cache_dir=cache)
        calls = len(invert.calls)
        again = _cell(tmp_path / "again", folder, TORCH, inputs, Explanation("saliency"), corruption_cache_dir=cache)
    assert calls == 3 and len(invert.calls) == calls  # crop order: one size per batch; then all from the cache
    # all entries but one removed: batches that mix a cached image with images corrupted in the step
    entries = sorted(cache.rglob("*.npz"))
    for entry in entries[1:]:
        entry.unlink()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(module_mod, "corrupt_batch", invert)
        mixed = _cell(tmp_path / "mixed", folder, TORCH, inputs, Explanation("saliency"), corruption_cache_dir=cache)
    assert sum(shape[0] for shape, *_ in invert.calls[calls:]) == len(entries) - 1
    for run in (again, mixed):
        assert len(run.rows) == len(entries)
        for r in run.rows:
            e = tiny_cell.expected_images(folder, "none", 0, 0, 32)[r["image"]]
            saved = tiny_cell.expected_row(e["index"], r["image"], e["label"], e["clean"], 255 - e["clean"])
            assert pr.close(pr.number(r["mos"]), saved["mos"], rel=1e-5)
            assert pr.close(pr.number(r["sim_cc"]), saved["sim_cc"], rel=1e-4, abs_=1e-5)


def test_without_a_corruption_cache_the_step_times_each_groups_corruption_and_writing(folder, tmp_path):
    """The module's clock stood in by a counter (each reading one tick later): a group's corruption and its writing
    each read two consecutive ticks, so the run's totals count the groups (three batches of one size each)."""
    inputs = Inputs(resize=None, crop=32, batch_size=2, num_workers=0, corruption_backend="torch")
    profile = profiling._Profile()
    profile.path = str(tmp_path / "profile.json")  # on, never dumped (no atexit)
    ticks = itertools.count()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(module_mod, "corrupt_batch", Invert())
        mp.setattr(module_mod, "time", SimpleNamespace(perf_counter=lambda: float(next(ticks))))
        mp.setattr(profiling, "_profile", profile)
        run = _cell(tmp_path, folder, TORCH, inputs, Explanation("saliency"))
    assert len(run.rows) == 5 and not (tmp_path / "run" / "corruption_cache").exists()
    assert run.result.summary["corruption_seconds"] == 3
    assert profile.seconds[profiling.OUTSIDE]["writing: rows, maps queued (main process)"] == 3


def test_the_none_corruption_is_clean_at_any_severity(folder, tmp_path):
    cell = Cell("none", 2, 3)
    inputs = Inputs(resize=None, crop=32, batch_size=3, num_workers=0)
    run = _cell(tmp_path, folder, cell, inputs, Explanation("saliency"), figures=1)
    expected = _expected(folder, Cell("contrast", 0, 3), 32)
    for e in expected.values():  # the same images and maps: exactly 1
        e["attr_stability_cc"] = e["quality_stability_cc"] = 1.0
    _check_rows(run, expected, cell)
    assert run.figures[0][4][0] == "Green/a.png · clean"
    assert all(float(r["attr_stability_cc"]) == 1.0 for r in run.rows)


def test_a_second_run_is_served_by_the_clean_cache_with_the_same_rows_and_maps(folder, tmp_path):
    """The first run puts every clean output and clean image into the clean cache, the second reads them all back
    (no clean pass): both give the construction's rows and clean maps."""
    inputs = Inputs(resize=None, crop=32, batch_size=2, num_workers=0)
    cache = tmp_path / "clean_cache"
    expected = _expected(folder, NOISE, 32)
    runs = [_cell(tmp_path / name, folder, NOISE, inputs, Explanation("saliency"), clean_cache_dir=cache)
            for name in ("first", "second")]
    stats = [(run.result.summary["clean_cache"]["hits"], run.result.summary["clean_cache"]["misses"]) for run in runs]
    assert stats == [(0, len(expected)), (len(expected), 0)]
    for run in runs:
        _check_rows(run, expected, NOISE)
        for r in run.rows:
            e, maps = expected[r["image"]], run.maps[r["image"]]
            np.testing.assert_allclose(maps["quality_map_clean"], e["_qmap_clean"], atol=1e-4)
            np.testing.assert_allclose(maps["attribution_clean"], e["_attr_clean"], rtol=1e-5, atol=1e-7)


def test_two_cells_served_by_kept_workers_give_the_construction_rows(folder, tmp_path):
    """A sweep's kept DataLoader workers (Speed.workers) serve both cells: every batch comes from the pool, and the
    rows are the construction's, as with a loader of the cell's own."""
    from iqa_saliency.data.loading import WorkerPool

    pool, served = WorkerPool(), []
    loader = pool.loader

    def recording_loader(dataset, batch_sampler, num_workers, collate_fn, pin_memory=False):  # noqa: ANN001, ANN202
        kept = loader(dataset, batch_sampler, num_workers, collate_fn, pin_memory)
        served.append((len(dataset), [list(b) for b in batch_sampler], num_workers, kept is not None))
        return kept

    pool.loader = recording_loader
    def own_loader(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("the cell built a DataLoader of its own although the kept workers served it")

    inputs = Inputs(resize=None, crop=32, batch_size=2, num_workers=1)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(module_mod, "DataLoader", own_loader)
            runs = {cell: _cell(tmp_path / cell.corruption, folder, cell, inputs, Explanation("saliency"),
                                Speed(workers=pool)) for cell in (NOISE, TORCH)}
    finally:
        pool.close()
    assert served == [(6, [[0, 1], [2, 3], [4, 5]], 1, True)] * 2  # six files listed, the broken one included
    for cell, run in runs.items():
        _check_rows(run, _expected(folder, cell, 32), cell)


# ---------------------------------------------------------------------------------------------- data module


def test_pair_data_serves_fixed_batches_sharded_by_rank_on_the_host():
    from iqa_saliency.data.pairs import collate_pairs

    data = module_mod.PairData(list(range(19)))
    assert (data.batches, data.num_workers, data.pin_memory) == ([list(range(i, min(i + 8, 19)))
                                                                  for i in (0, 8, 16)], 2, False)
    loader = data.test_dataloader()  # no trainer: one process
    assert list(loader.batch_sampler) == data.batches
    assert (loader.num_workers, loader.pin_memory, loader.persistent_workers) == (2, False, False)
    assert loader.collate_fn is collate_pairs
    given = module_mod.PairData(list(range(10)), batch_size=3, num_workers=0, pin_memory=True,
                                batches=[[3, 4, 5], [6, 7, 8], [9]])
    given.trainer = SimpleNamespace(global_rank=1, world_size=2)
    loader = given.test_dataloader()
    assert list(loader.batch_sampler) == [[6, 7, 8]] and (loader.num_workers, loader.pin_memory) == (0, True)
    batch = {"groups": [], "skipped": []}
    assert given.transfer_batch_to_device(batch, torch.device("meta"), 0) is batch
