"""Same numbers however the run is laid out: 2 DDP processes = 1 process; same seed = same bytes."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from helpers.cli import run_cli
from torch.utils.data import DataLoader

from iqa_saliency.data.loading import ShardSampler
from iqa_saliency.data.pairs import CorruptedPairs
from iqa_saliency.data.protocol import Cell, Inputs
from iqa_saliency.data.sources import SampleImages

FAST = ["pretrained=false", "logger=none", "trainer.enable_progress_bar=false"]
# corruptions that draw random numbers, by ImageNet-C group
RANDOM = ["gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise",  # noise
          "glass_blur", "motion_blur",  # blur
          "snow", "frost", "fog", "spatter",  # weather / extra
          "elastic_transform"]  # digital


def test_shards_cover_each_image_once_and_an_empty_rank_still_meets_the_others():
    shards = [list(ShardSampler([2, 3, 5, 7, 11], rank, 2)) for rank in range(2)]
    assert shards == [[2, 5, 11], [3, 7]]
    empty = ShardSampler([4], rank=1, world_size=2)
    assert list(empty) == [] and len(empty) == 1  # Lightning needs a non-zero length on every rank


@pytest.mark.parametrize("corruption", RANDOM)
def test_random_corruption_is_the_same_in_any_worker(corruption):
    ds = CorruptedPairs(SampleImages(["chelsea", "coffee"]), Cell(corruption, 3, 7), Inputs(resize=None, crop=64))
    in_main = [ds[i]["corrupted"].numpy() for i in range(len(ds))]
    # two worker processes, images in the other order: each image is still seeded by (seed, image, cell)
    loader = DataLoader(ds, batch_size=1, num_workers=2, sampler=[1, 0], collate_fn=lambda b: b[0])
    in_workers = {it["index"]: it["corrupted"].numpy() for it in loader}
    for i, array in enumerate(in_main):
        np.testing.assert_array_equal(in_workers[i], array)
    assert not np.array_equal(in_main[0], ds[0]["clean"].numpy())
    other_seed = CorruptedPairs(ds.source, Cell(corruption, 3, 8), Inputs(resize=None, crop=64))[0]["corrupted"].numpy()
    assert not np.array_equal(other_seed, in_main[0])  # the seed really drives the randomness


@pytest.mark.slow
def test_random_corruption_sweep_reruns_are_byte_identical(tmp_path):
    sweep = ["-m", f"corruption={','.join(RANDOM[3:])}", "severity=3", *FAST, "dataset.source.names=[rocket,clock]",
             "dataset.resize=null", "dataset.crop=64", "dataset.num_workers=2", "figures=0", "seed=3"]
    for name in ("a", "b"):
        proc = run_cli("evaluate.py", *sweep, f"hydra.sweep.dir={tmp_path / name}")
        assert proc.returncode == 0, proc.stderr[-3000:]
    runs_a = sorted((tmp_path / "a").glob("*/per_image.csv"))
    assert len(runs_a) == len(RANDOM) - 3
    for csv_a in runs_a:
        csv_b = tmp_path / "b" / csv_a.relative_to(tmp_path / "a")
        assert csv_a.read_bytes() == csv_b.read_bytes(), csv_a.parent.name


@pytest.mark.slow
def test_two_process_ddp_equals_one_process(tmp_path, monkeypatch):
    # Float sums depend on the thread count and DDP on CPU gives each process cores/2 threads: pin it to 1 in
    # both runs. batch_size=1 so each image meets the same kernels whichever process computes it.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    args = ["corruption=gaussian_noise", "severity=3", *FAST, "dataset.batch_size=1", "dataset.num_workers=0",
            "dataset.source.names=[chelsea,coffee,clock,rocket,astronaut]", "figures=3"]  # 5 images: odd
    one, two = tmp_path / "one", tmp_path / "two"
    proc = run_cli("evaluate.py", *args, f"hydra.run.dir={one}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    proc = run_cli("evaluate.py", *args, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
                   f"hydra.run.dir={two}", cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in proc.stdout + proc.stderr
    with open(two / "per_image.csv", newline="") as fh:
        indices = [int(r["index"]) for r in csv.DictReader(fh)]
    assert indices == [0, 1, 2, 3, 4]  # each image exactly once, no padding repeats
    assert (two / "per_image.csv").read_bytes() == (one / "per_image.csv").read_bytes()
    a, b = (json.loads((r / "summary.json").read_text()) for r in (one, two))
    assert b["world_size"] == 2 and a["world_size"] == 1
    assert a["metrics"] == b["metrics"] and a["n_images"] == b["n_images"] == 5
    # rank 1 worked in rank 0's folder: its log is there, no second Hydra folder, one summary, parts merged
    assert (two / "train_ddp_process_1.log").exists()
    assert not (cwd / "outputs").exists()
    assert sorted(p.parent.name for p in tmp_path.rglob("summary.json")) == ["one", "two"]
    assert not list(two.glob(".*.part*")) and not (two / "INCOMPLETE").exists()
    assert sorted(p.name for p in (two / "figures").glob("*.png")) == sorted(
        p.name for p in (one / "figures").glob("*.png"))

    # an interrupted 2-process run with one image left: resumed by 2 processes (one has nothing to do)
    rows = (two / "per_image.csv").read_text().splitlines(keepends=True)
    (two / ".per_image.csv.part1").write_text("".join(rows[:4] + rows[5:]).replace("\n", "\r\n"))
    for name in ("summary.json", "per_image.csv"):
        (two / name).unlink()
    (two / "maps" / "000003_rocket.npz").unlink()
    proc = run_cli("evaluate.py", *args, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
                   "resume=true", f"hydra.run.dir={two}", cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "4 of 5 images already done" in proc.stdout + proc.stderr
    assert (two / "per_image.csv").read_bytes() == (one / "per_image.csv").read_bytes()
    assert json.loads((two / "summary.json").read_text())["metrics"] == a["metrics"]


@pytest.mark.slow
def test_random_attribution_reruns_are_byte_identical(tmp_path):
    """SmoothGrad and GradientSHAP draw noise: seeded, so a rerun writes the same bytes (rows and maps)."""
    sweep = ["-m", "attribution=smoothgrad,gradient_shap", "corruption=gaussian_noise", "severity=2", *FAST,
             "dataset.source.names=[chelsea,clock]", "dataset.resize=null", "dataset.crop=64", "figures=0",
             "dataset.num_workers=0"]
    for name in ("a", "b"):
        proc = run_cli("evaluate.py", *sweep, f"hydra.sweep.dir={tmp_path / name}")
        assert proc.returncode == 0, proc.stderr[-3000:]
    runs = sorted((tmp_path / "a").glob("*/per_image.csv"))
    assert len(runs) == 2
    for csv_a in runs:
        other = tmp_path / "b" / csv_a.relative_to(tmp_path / "a")
        assert csv_a.read_bytes() == other.read_bytes(), csv_a.parent.name
        for npz in (csv_a.parent / "maps").glob("*.npz"):
            a, b = np.load(npz), np.load(other.parent / "maps" / npz.name)
            assert all(np.array_equal(a[k], b[k]) for k in a.files)
