"""A cell's run (evaluation/cell.py) on a tiny class folder with models whose answers are known by construction
(helpers/tiny_cell.py): which labels reach the rows, what summary.json says and where each of its values comes
from, what an interrupted, failed or resumed run leaves, and the exact messages of label mapping. The values are
restated with PIL, numpy and imagecorruptions (helpers/plumbing_reference.py). Fast: a few in-process cells of
five 32 px images."""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from helpers import plumbing_reference as pr
from helpers import tiny_cell
from helpers.plumbing_models import CLASS_NAMES

from iqa_saliency import profiling
from iqa_saliency.data.protocol import Cell, Inputs
from iqa_saliency.data.sources import NO_LABEL, ImageFolder, ImageRecord, ImageSource
from iqa_saliency.errors import ConfigError, DatasetError, InputError, OutputError, RunFolderError
from iqa_saliency.evaluation import cell as cell_mod
from iqa_saliency.evaluation.settings import Explanation, Outputs, Speed
from iqa_saliency.models.classifier import Classifier
from iqa_saliency.models.weights import WeightsIdentity

CELL = Cell("gaussian_noise", 5, 7)
INPUTS = Inputs(resize=None, crop=32, batch_size=2, num_workers=0)
# gaussian_noise's torch port is slower on a CPU: asked for, it falls back to numpy (a summary field says why)
TORCH_ASKED = Inputs(resize=None, crop=32, batch_size=2, num_workers=0, corruption_backend="torch")
CONFIG = {"run": "tiny", "n": 1}
START, END = 1000.0, 1012.3456789  # the cell's wall clock (time.time) at its start and at its summary
MODEL_SECONDS, CORRUPTION_SECONDS = 0.12345678, 0.98765432


class Recording(ImageFolder):
    """The class folder, recording which images were loaded; raises SystemExit (a stop) at `stop_at`."""

    def __init__(self, root: Path, stop_at: str | None = None) -> None:
        super().__init__(root)
        self.loaded: list[str] = []
        self.stop_at = stop_at

    def load_reduced(self, record: ImageRecord, min_side: int | None):  # noqa: ANN201
        self.loaded.append(record.image_id)
        if record.image_id == self.stop_at:
            raise SystemExit("stop")
        return super().load_reduced(record, min_side)


class Pool:
    """Stands in for a sweep's kept DataLoader workers: it lends none (the cell starts its own) and records
    what it was asked for and whether it was closed."""

    def __init__(self) -> None:
        self.asked: list[tuple] = []
        self.closed = False

    def loader(self, dataset, batch_sampler, num_workers, collate, pin_memory):  # noqa: ANN001, ANN201
        self.asked.append((list(batch_sampler), num_workers, pin_memory))

    def close(self) -> None:
        self.closed = True


class LogRecords(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[tuple[int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append((record.levelno, record.getMessage()))


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tiny_cell.make_folder(tmp_path_factory.mktemp("tiny") / "data")


@pytest.fixture(scope="module")
def expected(folder) -> dict[str, dict]:
    return tiny_cell.expected_images(folder, CELL.corruption, CELL.severity, CELL.seed, INPUTS.crop)


def _identity(batch_size: int = 2) -> dict:
    """What the run folder's INCOMPLETE marker records as the numbers' identity (compared on resume)."""
    return {"weights": {"quality": {"name": "region-quality", "source": "tests/helpers/plumbing_models.py",
                                    "sha256": "1" * 64},
                        "classifier": {"name": "region-rules", "source": "tests/helpers/plumbing_models.py",
                                       "sha256": "0" * 64}},
            "device": "cpu", "precision": "32-true", "channels_last": False, "fold_batchnorm": True,
            "batch_size": batch_size}


def _complete_cell(folder: Path, tmp: Path) -> SimpleNamespace:
    """One complete cell with its clock, the module's timers, the data module's arguments, Lightning's seeding,
    the profile and the log recorded."""
    got = SimpleNamespace(modules=[], data=[], seeds=[], log=LogRecords(), profile=None)
    clock = iter([START])

    class Module(cell_mod.EvaluationModule):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            got.modules.append((self, kwargs))

        def on_test_end(self) -> None:
            self.model_seconds, self.corruption_seconds = MODEL_SECONDS, CORRUPTION_SECONDS

    class Data(cell_mod.PairData):
        def __init__(self, dataset, **kwargs) -> None:  # noqa: ANN001
            super().__init__(dataset, **kwargs)
            got.data.append(kwargs)

    seed_everything = pl.seed_everything
    profile = profiling._Profile()
    profile.path = str(tmp / "profile.json")  # on, never dumped (no atexit)
    logger = logging.getLogger(cell_mod.__name__)
    logger.addHandler(got.log)
    level = logger.level
    logger.setLevel(logging.DEBUG)
    run_dir = tmp / "run"
    cache_dir = run_dir.parent / "clean_cache"
    got.pool = Pool()
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(cell_mod, "EvaluationModule", Module)
            mp.setattr(cell_mod, "PairData", Data)
            mp.setattr(cell_mod, "time", SimpleNamespace(time=lambda: next(clock, END),
                                                         perf_counter=cell_mod.time.perf_counter))
            mp.setattr(pl, "seed_everything", lambda *a, **k: (got.seeds.append((a, k)), seed_everything(*a, **k)))
            mp.setattr(profiling, "_profile", profile)
            got.result = cell_mod.run_evaluation(
                Recording(folder), tiny_cell.models(), tiny_cell.trainer(), CELL, TORCH_ASKED, Explanation("saliency"),
                Outputs(run_dir, figures=1, save_maps=False, config=CONFIG, clean_cache_dir=cache_dir),
                Speed(workers=got.pool))
    finally:
        logger.removeHandler(got.log)
        logger.setLevel(level)
    got.profile = {k: dict(v) for k, v in profile.seconds.items()}
    got.threads = [t.name for t in threading.enumerate() if t.name.startswith("run-writer")]
    got.run_dir, got.cache_dir = run_dir, cache_dir
    got.rows = pr.read_csv(run_dir / "per_image.csv")
    return got


def _mean(values) -> float:  # noqa: ANN001
    return sum(values) / len(values)


def _rows_hold_the_mapped_labels_and_the_models_answers(done, expected):
    assert [(int(r["index"]), r["image"]) for r in done.rows] == [(e["index"], i) for i, e in expected.items()]
    assert pr.read_csv(done.run_dir / "skipped.csv")[0]["image"] == tiny_cell.BROKEN
    for r in done.rows:
        e = expected[r["image"]]
        probs = pr.softmax(pr.region_logits(pr.as_unit(e["corrupted"])))
        assert pr.number(r["label"]) == e["label"], r["image"]
        assert int(r["pred"]) == int(probs.argmax()), r["image"]
        assert pr.close(pr.number(r["mos"]), pr.region_quality(pr.as_unit(e["corrupted"]))[0], rel=1e-5)
    labels = [e["label"] for e in expected.values()]
    assert None in labels and len({lbl for lbl in labels if lbl is not None}) == 2  # the case is not trivial


def _summary_says_what_ran(done, expected):
    s = dict(done.result.summary)
    assert json.loads((done.run_dir / "summary.json").read_text()) == s
    metrics, provenance = s.pop("metrics"), s.pop("provenance")
    assert isinstance(provenance, dict) and provenance  # recorded (what it holds: tests/io)
    clean_cache = s.pop("clean_cache")
    assert (clean_cache["hits"], clean_cache["misses"]) == (0, len(expected))
    assert Path(clean_cache["dir"]).parent == done.cache_dir
    backend = s.pop("corruption_backend")
    assert backend == {"requested": "torch", "used": "numpy",
                       "reason": "gaussian_noise's torch port is slower than numpy on a CPU device",
                       "imagecorruptions": backend["imagecorruptions"]}
    assert s == {
        "corruption": "gaussian_noise", "severity": 5, "seed": 7, "attribution": "saliency",
        "attribution_target": "pred", "quality_saliency": "local", "quality_map": "raw",
        "n_images": len(expected), "n_skipped": 1, "label_source": "class names",
        "weights": {
            "quality": {"name": "region-quality", "source": "tests/helpers/plumbing_models.py", "sha256": "1" * 64,
                        "requested": "region-quality", "untrained": False, "fallback": None},
            "classifier": {"name": "region-rules", "source": "tests/helpers/plumbing_models.py", "sha256": "0" * 64,
                           "requested": "region-rules", "untrained": False, "fallback": None},
            "untrained": False, "fell_back": []},
        "explained_layer": {"classifier": None, "quality": None},
        "classifier": {"arch": "region", "num_classes": len(CLASS_NAMES)},
        "score_normalizer": {"peak": 72.0, "std_left": pytest.approx(7.798274017370107),
                             "std_right": pytest.approx(4.118047289170692), "n_std": 3.5, "clip_max": 99.9,
                             "name": "study_defaults"},
        "quality_map_kind": "model:paq2piq_local_scores", "quality_lower_better": False,
        "world_size": 1, "resumed": False, "device": "cpu",
        "seconds": round(END - START, 3), "model_seconds": round(MODEL_SECONDS, 3),
        "corruption_seconds": round(CORRUPTION_SECONDS, 3), "config": CONFIG,
    }
    # the metrics of the merged rows: blank (NaN) ones as null, the others as numbers
    rows = [e for e in expected.values()]
    correct = [float(pr.softmax(pr.region_logits(pr.as_unit(e["corrupted"]))).argmax() == e["label"])
               for e in rows if e["label"] is not None]
    mos = [pr.region_quality(pr.as_unit(e["corrupted"]))[0] for e in rows]
    assert pr.close(metrics["acc/top1"], _mean(correct), rel=1e-9)
    assert pr.close(metrics["quality/mos_mean"], _mean(mos), rel=1e-5)
    assert (metrics["n_images"], metrics["n_labeled"]) == (len(rows), len(correct))
    assert metrics["similarity/cc_local"] is None and metrics["change/cc"] is None
    assert all(v is None or (isinstance(v, float) and not math.isnan(v)) for v in metrics.values())


def _the_run_hands_its_settings_on(done):
    (module, kwargs), = done.modules
    assert kwargs["clean_cache"] is not None and kwargs["clean_cache"].dir.parent == done.cache_dir
    assert kwargs["infer"] is None and module.cell == CELL and module.inputs == TORCH_ASKED
    assert module.explain == Explanation("saliency") and module.speed == Speed()
    (data,) = done.data
    assert data == {"batch_size": 2, "num_workers": 0, "pin_memory": False, "batches": [[0, 1], [2, 3], [4, 5]],
                    "workers": done.pool}
    # the kept workers are asked first (here they lend none) and stay open for the next cell
    assert done.pool.asked == [([[0, 1], [2, 3], [4, 5]], 0, False)] and not done.pool.closed
    assert done.seeds == [((7,), {"workers": True, "verbose": False})]
    # the previews of the first `figures` images; the writer's threads end with the run
    assert [p.row["image"] for p in done.result.previews] == ["Green/a.png"]
    assert done.threads == []
    # the merged files only: no part files, no dataset record, no marker (the lock file stays, released)
    assert sorted(p.name for p in done.run_dir.iterdir() if p.is_file()) == [
        ".lock", "per_image.csv", "skipped.csv", "summary.json"]


def _the_log_and_the_profile(done):
    assert (logging.WARNING, f"Skipped {tiny_cell.BROKEN}: "
            + pr.read_csv(done.run_dir / "skipped.csv")[0]["reason"]) in done.log.messages
    stages = done.profile[profiling.OUTSIDE]
    assert set(stages) == {"run start: labels, run folder, caches, module", "Lightning test loop",
                           "waiting for background writes", "merge rows + summary",
                           "model compute (quality, classifier, attribution)", "corruption in the step (torch backend)",
                           "waiting for data (workers: decode, corrupt)", "step",
                           "writing: rows, maps queued (main process)", "figures"}
    assert 0 < stages["run start: labels, run folder, caches, module"] < 60
    assert stages["model compute (quality, classifier, attribution)"] == MODEL_SECONDS


def _a_complete_run_is_read_back_not_computed(done, folder, caplog):  # noqa: ANN001, ANN202
    source = Recording(folder)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=cell_mod.__name__):
        again = cell_mod.run_evaluation(source, tiny_cell.models(), tiny_cell.trainer(), CELL, TORCH_ASKED,
                                        Explanation("saliency"), Outputs(done.run_dir, resume=True, config=CONFIG))
    assert again.summary == done.result.summary and source.loaded == []
    assert [r.getMessage() for r in caplog.records if r.name == cell_mod.__name__] == [
        f"{done.run_dir} already holds a complete run; nothing to do."]
    with pytest.raises(RunFolderError, match="already holds a complete run"):  # without resume: refused
        cell_mod.run_evaluation(source, tiny_cell.models(), tiny_cell.trainer(), CELL, INPUTS,
                                Explanation("saliency"), Outputs(done.run_dir, config=CONFIG))


def test_a_complete_cell(folder, expected, tmp_path, caplog, capsys):
    """One test for the whole run (a mutation campaign credits a function to the tests that call it)."""
    done = _complete_cell(folder, tmp_path)
    assert capsys.readouterr().out == ""  # no results table of Lightning's on the console
    _rows_hold_the_mapped_labels_and_the_models_answers(done, expected)
    _summary_says_what_ran(done, expected)
    _the_run_hands_its_settings_on(done)
    _the_log_and_the_profile(done)
    _a_complete_run_is_read_back_not_computed(done, folder, caplog)


def _run(source, run_dir, **outputs):  # noqa: ANN001, ANN202
    return cell_mod.run_evaluation(source, tiny_cell.models(), tiny_cell.trainer(), CELL, INPUTS,
                                   Explanation("saliency"),
                                   Outputs(run_dir, figures=0, save_maps=False, config=CONFIG, **outputs))


def test_an_interrupted_run_keeps_its_rows_and_a_resume_computes_only_the_batches_left(folder, tmp_path, caplog):
    run_dir = tmp_path / "run"
    stopping = Recording(folder, stop_at="red/a.png")  # index 3: the second batch [2, 3]
    with caplog.at_level(logging.ERROR, logger=cell_mod.__name__), pytest.raises(SystemExit):
        _run(stopping, run_dir, resume_command="python evaluate.py resume=true")
    assert stopping.loaded == ["Green/a.png", "Green/b.png", "purple/a.png", "red/a.png"]
    marker = json.loads((run_dir / "INCOMPLETE").read_text())
    assert marker == {"status": "interrupted", "reason": "SystemExit: stop", "rows_on_disk": 2, "config": CONFIG,
                      "identity": _identity()}
    assert caplog.messages == [f"Run interrupted: partial results are kept in {run_dir}. Finish it with: "
                               "python evaluate.py resume=true"]
    _, listed = pr.list_class_folders(folder)
    manifest = json.loads((run_dir / ".dataset.json").read_text())["images"]
    assert manifest == [[i.image_id, f"{os.stat(i.path).st_size}:{os.stat(i.path).st_mtime_ns}"] for i in listed]

    with pytest.raises(RunFolderError, match=r"different configuration \(differs in: run\)"):
        cell_mod.run_evaluation(Recording(folder), tiny_cell.models(), tiny_cell.trainer(), CELL, INPUTS,
                                Explanation("saliency"), Outputs(run_dir, resume=True, config={**CONFIG, "run": "x"}))
    resuming = Recording(folder)
    summary = _run(resuming, run_dir, resume=True).summary
    assert resuming.loaded == ["purple/a.png", "red/a.png", "red/b.png", tiny_cell.BROKEN]
    assert (summary["resumed"], summary["n_images"], summary["n_skipped"]) == (True, 5, 1)
    assert [int(r["index"]) for r in pr.read_csv(run_dir / "per_image.csv")] == [0, 1, 2, 3, 4]


def test_a_stop_while_waiting_for_the_writes_is_an_interruption(folder, tmp_path, monkeypatch):
    wait = cell_mod.RunWriter.wait
    calls = []

    def stop_once(writer):  # noqa: ANN001, ANN202
        calls.append(len(calls))
        if len(calls) == 1:  # Ctrl-C while waiting
            raise KeyboardInterrupt
        wait(writer)
        if len(calls) == 2:  # the wait for the rows already written fails too: the stop is what is reported
            raise RuntimeError("a write failed")

    monkeypatch.setattr(cell_mod.RunWriter, "wait", stop_once)
    run_dir = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        _run(Recording(folder), run_dir)
    marker = json.loads((run_dir / "INCOMPLETE").read_text())
    assert (marker["status"], marker["reason"], marker["rows_on_disk"]) == ("interrupted", "KeyboardInterrupt: ", 5)


def test_a_resume_with_every_row_on_disk_only_writes_the_summary(folder, tmp_path):
    run_dir = tmp_path / "run"
    first = _run(Recording(folder), run_dir).summary
    (run_dir / "summary.json").unlink()

    class Rank1(pl.Trainer):  # a process other than the first: it writes no summary and returns none
        @property
        def is_global_zero(self) -> bool:
            return False

    trainer = Rank1(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                    enable_model_summary=False, enable_progress_bar=False)
    other = cell_mod.run_evaluation(Recording(folder), tiny_cell.models(), trainer, CELL, INPUTS,
                                    Explanation("saliency"), Outputs(run_dir, resume=True, config=CONFIG))
    assert (other.summary, other.previews) == ({}, []) and not (run_dir / "summary.json").exists()
    source = Recording(folder)
    summary = _run(source, run_dir, resume=True).summary
    assert source.loaded == [] and summary["resumed"] is True
    assert summary["metrics"] == first["metrics"]


def test_a_failed_step_marks_the_run_failed_and_a_full_disk_names_the_fix(folder, tmp_path, caplog):
    def fails(x, labels):  # noqa: ANN001, ANN202
        raise RuntimeError("boom")

    run_dir = tmp_path / "failed"
    pool = Pool()
    with caplog.at_level(logging.ERROR, logger=cell_mod.__name__), pytest.raises(RuntimeError, match="^boom$"):
        cell_mod.run_evaluation(Recording(folder), tiny_cell.models(), tiny_cell.trainer(), CELL, INPUTS,
                                Explanation("saliency"), Outputs(run_dir, figures=0, config=CONFIG),
                                Speed(workers=pool), infer=fails)
    assert pool.closed  # stopped mid-epoch: the kept workers are not reused
    marker = json.loads((run_dir / "INCOMPLETE").read_text())
    assert {k: marker[k] for k in ("status", "reason", "rows_on_disk", "config")} == {
        "status": "failed", "reason": "RuntimeError: boom", "rows_on_disk": 0, "config": CONFIG}
    assert caplog.messages == [f"Run failed: partial results are kept in {run_dir}. Finish it with: "
                               f"resume=true hydra.run.dir={run_dir}"]

    def full(x, labels):  # noqa: ANN001, ANN202
        raise OSError(errno.ENOSPC, "No space left on device")  # no file named: the run folder is

    run_dir = tmp_path / "full"
    status = cell_mod.RunWriter.write_status

    def no_space(writer, state, **info):  # noqa: ANN001, ANN202 - the marker cannot be written either
        if state != "running":
            raise OSError(errno.ENOSPC, "No space left on device", str(writer.run_dir / "INCOMPLETE"))
        status(writer, state, **info)

    with pytest.MonkeyPatch.context() as mp, pytest.raises(OutputError) as err:
        mp.setattr(cell_mod.RunWriter, "write_status", no_space)
        cell_mod.run_evaluation(Recording(folder), tiny_cell.models(), tiny_cell.trainer(), CELL, INPUTS,
                                Explanation("saliency"), Outputs(run_dir, figures=0, resume_command="again"),
                                infer=full)
    assert str(err.value) == (f"Cannot write {run_dir} (No space left on device); the rows computed so far "
                              "are kept. Free space, then finish with: again")


def test_no_usable_image_is_a_dataset_error(tmp_path):
    root = tmp_path / "data"
    (root / "a").mkdir(parents=True)
    (root / "a" / "x.png").write_bytes(b"not a png")
    (root / "a" / "y.png").write_bytes(b"not a png either")
    run_dir = tmp_path / "run"
    with pytest.raises(DatasetError) as err:
        _run(ImageFolder(root), run_dir)
    assert str(err.value) == (f"No image of the 2 in the dataset could be used (see {run_dir}/skipped.csv). "
                              "Check the dataset's files.")
    marker = json.loads((run_dir / "INCOMPLETE").read_text())
    assert {k: marker[k] for k in ("status", "reason", "config")} == {
        "status": "failed", "reason": "no usable image", "config": CONFIG}


def test_explaining_the_label_needs_every_image_labelled(folder, tmp_path):
    with pytest.raises(ConfigError, match="needs a label for every image"):
        cell_mod.run_evaluation(Recording(folder), tiny_cell.models(), tiny_cell.trainer(), CELL, INPUTS,
                                Explanation("saliency", target="label"), Outputs(tmp_path / "run"))


def test_a_labelled_torch_cell_keys_its_caches_and_a_second_run_is_served_by_them(tmp_path, monkeypatch):
    """The true class explained, the corruption in the step (torch), decoded as torchvision's ImageFolder does:
    the clean cache's key holds the labels, the decoding and the numerics; the corruption cache is looked up with
    the trainer's device type; the second run of the cell finds every clean output in the cache."""
    from iqa_saliency.corruption.backends import backend_version

    root = tiny_cell.make_folder(tmp_path / "data")
    for path in [*(root / "purple").iterdir(), root / tiny_cell.BROKEN]:
        path.unlink()
    (root / "purple").rmdir()
    datasets = []

    class Data(cell_mod.PairData):
        def __init__(self, dataset, **kwargs) -> None:  # noqa: ANN001
            super().__init__(dataset, **kwargs)
            datasets.append(dataset)

    monkeypatch.setattr(cell_mod, "PairData", Data)
    cell = Cell("contrast", 2, 3)
    inputs = Inputs(resize=None, crop=32, batch_size=3, num_workers=0, corruption_backend="torch")
    clean_cache, corruption_cache = tmp_path / "clean", tmp_path / "corrupted"
    models = tiny_cell.models()  # a quality model whose lower scores are better, with a map kind of its own
    models.quality.lower_better, models.quality.map_kind = True, "model:region_means"
    summaries = [cell_mod.run_evaluation(
        ImageFolder(root, decode="imagefolder"), models, tiny_cell.trainer(), cell, inputs,
        Explanation("saliency", target="label"),
        Outputs(tmp_path / name, figures=0, save_maps=False, clean_cache_dir=clean_cache,
                corruption_cache_dir=corruption_cache)).summary for name in ("first", "second")]
    assert [(s["clean_cache"]["hits"], s["clean_cache"]["misses"]) for s in summaries] == [(0, 4), (4, 0)]
    assert summaries[0]["corruption_backend"]["used"] == "torch"
    assert (summaries[0]["quality_lower_better"], summaries[0]["quality_map_kind"]) == (True, "model:region_means")
    (key_file,) = clean_cache.glob("*/key.json")
    key = json.loads(key_file.read_text())
    assert (key["labels"], key["decode"]) == ([1, 1, 0, 0], "imagefolder")
    assert {k: key[k] for k in ("device", "precision", "channels_last", "fold_batchnorm", "batch_size")} == {
        "device": "cpu", "precision": "32-true", "channels_last": False, "fold_batchnorm": True, "batch_size": 3}
    lookup = datasets[0].corrupt_lookup.__self__
    assert (lookup.root, lookup.backend) == (corruption_cache, f"torch=={torch.__version__}|cpu|{backend_version()}")


# ---------------------------------------------------------------------------------- label mapping, by hand


class Source(ImageSource):
    def __init__(self, labels: list[int], class_names: list[str] | None = None, imagenet: bool = False) -> None:
        self.records = [ImageRecord(f"img{i}", lbl) for i, lbl in enumerate(labels)]
        self.class_names = class_names
        self.imagenet_labels = imagenet


def _classifier(names: list[str], imagenet: bool = False, extra: dict | None = None) -> Classifier:
    return Classifier(torch.nn.Identity(), "arch", list(names), WeightsIdentity("w"), extra=dict(extra or {}),
                      imagenet_classes=imagenet)


def test_imagenet_labels_outside_the_classifier_are_refused_with_their_values():
    clf = _classifier([f"c{i}" for i in range(10)], imagenet=True)
    assert cell_mod.map_labels(Source([0, 9, NO_LABEL], imagenet=True), clf) == ([0, 9, NO_LABEL], "imagenet")
    for bad in (10, -2):
        with pytest.raises(InputError) as err:
            cell_mod.map_labels(Source([0, bad], imagenet=True), clf)
        assert str(err.value) == (f"Labels [{bad}] are not classes of the classifier (0-9). Pass its class indices, "
                                  "or -1 for no label.")
    with pytest.raises(InputError) as err:  # the first five, sorted
        cell_mod.map_labels(Source([15, 14, 13, 12, 11, 10, 10, 3], imagenet=True), clf)
    assert str(err.value).startswith("Labels [10, 11, 12, 13, 14] are not")


def test_imagenet_labels_for_another_classifier_are_dropped_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger=cell_mod.__name__):
        assert cell_mod.map_labels(Source([1], imagenet=True), _classifier(["a", "b"])) == ([NO_LABEL], "none")
    assert caplog.messages == ["The sample labels are ImageNet classes but the classifier is not; accuracy is left "
                               "blank."]


def test_class_mismatch_messages():
    folders = _classifier(["0", "1", "2"], extra={"label_order": "folders"})
    with pytest.raises(DatasetError) as err:
        cell_mod.map_labels(Source([0], ["a", "b"]), folders)
    assert str(err.value) == ("The classifier has 3 classes but the dataset has 2 class folders. Evaluate the "
                              "checkpoint on the dataset it was trained on.")
    trained = [f"k{i}" for i in range(8)]
    named = _classifier(trained, extra={"class_names": trained})
    with pytest.raises(DatasetError) as err:
        cell_mod.map_labels(Source([0], [f"x{i}" for i in range(7)] + ["k0"]), named)
    assert str(err.value) == (
        "The dataset's classes do not match the checkpoint's (8 vs 8; missing ['k1', 'k2', 'k3', 'k4', 'k5'], "
        "unexpected ['x0', 'x1', 'x2', 'x3', 'x4']). Evaluate the checkpoint on a dataset with the classes it was "
        "trained on.")
    with pytest.raises(DatasetError) as err:
        cell_mod.map_labels(Source([0], ["a", "b", "c"]), _classifier(["a", "b"]))
    assert str(err.value) == ("The classifier has 2 classes but the dataset has 3 class folders. Evaluate the "
                              "checkpoint on a dataset with the classes it was trained on.")


def test_unmatched_folders_are_named_in_a_warning(caplog):
    clf = _classifier(["Alpha", "beta"], imagenet=True)
    folders = ["alpha", *[f"z{i}" for i in range(11)], "beta"]
    with caplog.at_level(logging.WARNING, logger=cell_mod.__name__):
        assert cell_mod.map_labels(Source([0, 1, 12], folders), clf) == ([0, NO_LABEL, 1], "class names")
    assert caplog.messages == [
        f"Folder classes {[f'z{i}' for i in range(10)]} are not classifier classes; their images are evaluated "
        "without labels."]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=cell_mod.__name__):
        cell_mod.map_labels(Source([0, 1], ["BETA", "alpha"]), clf)
    assert caplog.messages == []  # every folder matched: no warning


def test_check_target_messages():
    with pytest.raises(ConfigError) as err:
        cell_mod.check_target("label", [0, NO_LABEL])
    assert str(err.value) == ("attribution.target=label needs a label for every image, and some have none. "
                              "Use attribution.target=pred, or a dataset with class folders.")


def test_the_nearest_decode_setting_wins():
    base = SimpleNamespace(decode="oriented")
    wrapper = SimpleNamespace(base=base, decode="torchvision")
    assert cell_mod._decode(wrapper) == "torchvision"
    assert cell_mod._decode(SimpleNamespace(base=SimpleNamespace(base=base))) == "oriented"


def test_pairs_corrupt_in_the_workers_or_leave_it_to_the_step(folder, tmp_path):
    from iqa_saliency.caches.corruption import CachedCorruption
    from iqa_saliency.corruption import apply_corruption
    from iqa_saliency.corruption.backends import BackendChoice, backend_version

    source, labels = ImageFolder(folder), [5, 4, 3, 2, 1, 0]
    inputs = Inputs(resize=None, crop=32, corrupt_at="full_size")

    def cached(image_id: str, content: str):  # noqa: ANN202
        return None

    plain = cell_mod._pairs(source, CELL, inputs, labels, Outputs(tmp_path / "run"), BackendChoice("numpy", "numpy"),
                            "cuda", cached)
    assert (plain.corrupt_fn, plain.corrupt_lookup, plain.cached_clean) == (apply_corruption, None, cached)
    assert (plain.labels, plain.corrupt_at, plain.crop, plain.seed) == (labels, "full_size", 32, 7)
    assert plain.source is source
    cache = tmp_path / "corruption_cache"
    numpy_cached = cell_mod._pairs(source, CELL, inputs, labels, Outputs(tmp_path / "run", corruption_cache_dir=cache),
                                   BackendChoice("numpy", "numpy"), "cuda", None)
    fn = numpy_cached.corrupt_fn
    assert isinstance(fn, CachedCorruption) and (fn.root, fn.backend) == (cache, backend_version())
    assert numpy_cached.labels == labels and numpy_cached.corrupt_at == "full_size"
    torch_cached = cell_mod._pairs(source, CELL, inputs, labels, Outputs(tmp_path / "run", corruption_cache_dir=cache),
                                   BackendChoice("torch", "torch"), "cuda", cached)
    assert torch_cached.corrupt_fn is None and torch_cached.cached_clean is cached
    lookup = torch_cached.corrupt_lookup.__self__
    assert (lookup.root, lookup.backend) == (cache, f"torch=={torch.__version__}|cuda|{backend_version()}")
    assert (torch_cached.labels, torch_cached.corrupt_at, torch_cached.seed) == (labels, "full_size", 7)
    torch_plain = cell_mod._pairs(source, CELL, inputs, labels, Outputs(tmp_path / "run"),
                                  BackendChoice("torch", "torch"), "cpu", None)
    assert (torch_plain.corrupt_fn, torch_plain.corrupt_lookup) == (None, None)
    assert np.asarray(torch_plain[0]["clean"]).shape == (3, 32, 32)


def test_zarr_maps_need_the_crop_before_anything_is_computed(folder, tmp_path):
    inputs = Inputs(resize=None, crop=None, batch_size=2, num_workers=0)
    source = Recording(folder)
    with pytest.raises(ConfigError, match="maps_format=zarr stores maps of one size: set dataset.crop"):
        cell_mod.run_evaluation(source, tiny_cell.models(), tiny_cell.trainer(), CELL, inputs,
                                Explanation("saliency"), Outputs(tmp_path / "run", maps_format="zarr"))
    assert source.loaded == []
