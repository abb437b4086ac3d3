"""DataLoader workers kept across a sweep's cells (data.loading.WorkerPool): the same batches as each cell's own
workers, from the same worker processes, which are gone after close (and after an error in a cell)."""

from __future__ import annotations

import multiprocessing
import os
import threading

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from iqa_saliency.data.loading import BatchShards, WorkerPool, fixed_batches


class Drawn(Dataset):
    """Items drawn from a generator seeded per (cell seed, index), as the corruption seeds per image."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed = n, seed

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, index])
        return {"index": index, "pid": os.getpid(), "x": torch.from_numpy(rng.integers(0, 256, (3, 4, 4)))}


def stack(items: list[dict]) -> dict:
    return {"index": [it["index"] for it in items], "pid": {it["pid"] for it in items},
            "x": torch.stack([it["x"] for it in items])}


def _expected(dataset: Drawn, batches: list[list[int]]) -> list[torch.Tensor]:
    """The batches restated: each item computed here, in this process."""
    return [torch.stack([dataset[i]["x"] for i in batch]) for batch in batches]


def _worker_pids() -> set[int]:
    return {p.pid for p in multiprocessing.active_children()}


def test_kept_workers_serve_each_cell_its_own_batches_from_the_same_processes():
    pool = WorkerPool()
    before = _worker_pids()
    try:
        seen_pids = []
        for seed, n, batch in ((0, 7, 3), (1, 5, 2), (2, 7, 3)):  # three cells, one of another size and batch
            dataset = Drawn(n, seed)
            batches = fixed_batches(n, batch)[1:]  # a resumed cell: not every batch
            kept = pool.loader(dataset, BatchShards(batches), 2, stack)
            assert kept.batch_sampler.batches == batches  # what the progress lines count, as for a DataLoader
            got = list(kept)
            assert [b["index"] for b in got] == batches
            for b, want in zip(got, _expected(dataset, batches), strict=True):
                assert torch.equal(b["x"], want)
            pids = set().union(*(b["pid"] for b in got))
            assert os.getpid() not in pids
            seen_pids.append(pids)
        assert seen_pids[0] | seen_pids[1] | seen_pids[2] <= _worker_pids() - before
        assert len(_worker_pids() - before) == 2  # two workers, started once for the three cells
    finally:
        pool.close()
    assert _worker_pids() - before == set()


def test_other_settings_replace_the_workers_and_unservable_cells_get_none():
    pool = WorkerPool()
    before = _worker_pids()
    try:
        list(pool.loader(Drawn(4, 0), BatchShards(fixed_batches(4, 2)), 1, stack))
        first = _worker_pids() - before
        assert len(first) == 1
        got = list(pool.loader(Drawn(4, 0), BatchShards(fixed_batches(4, 2)), 2, stack))
        assert len(_worker_pids() - before) == 2 and not first & _worker_pids()  # the old worker is gone
        assert [b["index"] for b in got] == [[0, 1], [2, 3]]
        assert pool.loader(Drawn(4, 0), BatchShards(fixed_batches(4, 2)), 0, stack) is None  # no workers asked
        local = Drawn(4, 0)
        local.transform = lambda x: x  # does not pickle: the cell starts workers of its own
        assert pool.loader(local, BatchShards(fixed_batches(4, 2)), 2, stack) is None
    finally:
        pool.close()
    assert _worker_pids() - before == set()


def test_a_kept_epoch_leaves_torchs_generator_as_a_new_loader_does():
    """A new DataLoader's iterator draws its workers' base seed from torch's global generator; a reused one does
    not, so the kept loader draws it itself: the models after it see the same random numbers."""
    pool = WorkerPool()
    try:
        dataset, batches = Drawn(4, 0), fixed_batches(4, 2)
        for _ in range(2):  # the first epoch starts the workers, the second reuses them
            torch.manual_seed(5)
            list(pool.loader(dataset, BatchShards(batches), 2, stack))
            kept = torch.rand(3)
            torch.manual_seed(5)
            list(DataLoader(dataset, batch_sampler=BatchShards(batches), num_workers=2, collate_fn=stack))
            assert torch.equal(kept, torch.rand(3))
    finally:
        pool.close()


def test_checking_that_it_is_iterable_starts_no_epoch():
    """Lightning calls iter() once on a loader that is not a DataLoader only to check it is iterable."""
    pool = WorkerPool()
    try:
        kept = pool.loader(Drawn(4, 0), BatchShards(fixed_batches(4, 2)), 1, stack)
        before = _worker_pids()
        iter(kept)
        assert pool._loader._iterator is None and _worker_pids() == before  # no workers started, nothing sent
        assert len(kept) == 2 and len(list(kept)) == 2
    finally:
        pool.close()


CELLS = (("contrast", 0), ("contrast", 2), ("motion_blur", 1))


def _cells(folder, workers: WorkerPool | None, cells=CELLS) -> dict[str, tuple]:
    """Cells of a sweep in this process (random weights, two workers), with `workers` kept or not."""
    import pytorch_lightning as pl

    from iqa_saliency.data.protocol import Cell, Inputs
    from iqa_saliency.data.sources import SampleImages
    from iqa_saliency.evaluation.cell import run_evaluation
    from iqa_saliency.evaluation.settings import EvaluationModels, Explanation, Outputs, Speed
    from iqa_saliency.models.classifier import load_classifier
    from iqa_saliency.models.paq2piq import load_paq2piq

    torch.manual_seed(0)
    quality, quality_weights = load_paq2piq(pretrained=False)
    models = EvaluationModels(quality, quality_weights, load_classifier(pretrained=False))
    results = {}
    for corruption, severity in cells:
        name = f"{corruption}-{severity}"
        trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, inference_mode=False,
                             use_distributed_sampler=False, enable_checkpointing=False, enable_model_summary=False,
                             enable_progress_bar=False)
        source = SampleImages(["chelsea", "coffee", "rocket", "clock", "camera"])
        summary = run_evaluation(
            source, models, trainer, Cell(corruption, severity, seed=0),
            Inputs(resize=80, crop=64, batch_size=2, num_workers=2), Explanation("gradcam"),
            Outputs(folder / name, figures=0, clean_cache_dir=folder / ".clean_cache"),
            Speed(fold_batchnorm=False, workers=workers)).summary
        results[name] = (pd.read_csv(folder / name / "per_image.csv"), summary)
    assert [t.name for t in threading.enumerate() if t.name.startswith("run-writer")] == []
    return results


@pytest.mark.slow
def test_a_sweep_with_kept_workers_writes_what_it_writes_without(tmp_path):
    """The same cells, clean cache shared, with each cell's own workers and with kept ones: identical rows and
    summaries (timings and the time-stamped provenance aside), and no worker left after close."""
    before = _worker_pids()
    plain = _cells(tmp_path / "plain", None)
    pool = WorkerPool()
    try:
        kept = _cells(tmp_path / "kept", pool)
        assert len(_worker_pids() - before) == 2
    finally:
        pool.close()
    assert _worker_pids() - before == set()
    assert plain.keys() == kept.keys()
    varying = {"seconds", "model_seconds", "corruption_seconds", "provenance", "clean_cache"}
    for name, (rows, summary) in plain.items():
        got_rows, got_summary = kept[name]
        pd.testing.assert_frame_equal(got_rows.drop(columns="maps"), rows.drop(columns="maps"), check_exact=True)
        assert {k: v for k, v in got_summary.items() if k not in varying} == \
            {k: v for k, v in summary.items() if k not in varying}
        assert (got_summary["clean_cache"]["hits"], got_summary["clean_cache"]["misses"]) == \
            (summary["clean_cache"]["hits"], summary["clean_cache"]["misses"])


@pytest.mark.slow
def test_an_error_in_a_cell_shuts_the_kept_workers_down(tmp_path, monkeypatch):
    from iqa_saliency.evaluation.module import EvaluationModule

    before = _worker_pids()
    pool = WorkerPool()
    _cells(tmp_path / "ok", pool, CELLS[:1])
    assert len(_worker_pids() - before) == 2

    def fail(self, batch, batch_idx):
        if batch_idx == 1:
            raise RuntimeError("broken step")
        return step(self, batch, batch_idx)

    step = EvaluationModule.test_step
    monkeypatch.setattr(EvaluationModule, "test_step", fail)
    with pytest.raises(RuntimeError, match="broken step"):  # stopped mid-epoch, batches still in the workers
        _cells(tmp_path / "failed", pool, CELLS[1:2])
    assert pool._loader is None and _worker_pids() - before == set()
