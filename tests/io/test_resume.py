"""No result lost: partial rows survive a kill, the folder is marked INCOMPLETE, resume=true finishes the rest."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers.cli import ROOT

from iqa_saliency.errors import RunFolderError
from iqa_saliency.io.resume import check_run_folder, start_run
from iqa_saliency.io.run_writer import RunWriter
from iqa_saliency.io.schema import INCOMPLETE, PER_IMAGE, PER_IMAGE_COLUMNS

FAST = ["pretrained=false", "logger=none", "trainer.enable_progress_bar=false"]
# slow enough to be killed half-way: a random corruption, one 448 px image per batch, no workers (glass_blur is
# compiled, so the models set the pace; at 224 px the last images could finish before the signal was handled)
SLOW_RUN = ["corruption=glass_blur", "severity=2", "dataset.batch_size=1", "dataset.num_workers=0", "figures=2",
            "dataset.resize=448", "dataset.crop=448",
            "dataset.source.names=[chelsea,coffee,clock,rocket,astronaut,camera,hubble,motorcycle]", *FAST]
N_SLOW = 8


def row(index: int, maps: str = "") -> dict:
    return {"index": index, "image": f"img{index}", "mos": 50.0 + index, "maps": maps}


def test_partial_last_line_is_ignored_and_repaired(tmp_path):
    w = RunWriter(tmp_path)
    w.append_rows([row(0), row(1)])
    part = w.part_path(PER_IMAGE)
    with open(part, "a") as fh:
        fh.write("2,img2,52.0")  # killed in the middle of a row
    assert sorted(w.read_rows(PER_IMAGE)) == [0, 1]
    w.repair_part()
    w.append_rows([row(2)])
    rows, _ = w.merge()
    assert [r["index"] for r in rows] == ["0", "1", "2"] and rows[2]["mos"] == "52.0"


def test_rows_without_their_maps_are_redone(tmp_path):
    w = RunWriter(tmp_path)
    w.save_maps("maps/a.npz", quality_map=np.zeros((2, 2)))
    w.append_rows([row(0, "maps/a.npz"), row(1, "maps/missing.npz")])
    w.append_skipped([{"index": 2, "image": "bad.jpg", "reason": "empty file"}])
    assert w.done_indices() == {0, 2}


@pytest.mark.parametrize("damage", ["flip_a_value", "truncate", "empty"])
def test_rows_whose_maps_are_damaged_are_redone(tmp_path, damage, caplog):
    """An .npz carries a CRC-32 per array: a file damaged after it was written counts as missing (and says so)."""
    w = RunWriter(tmp_path)
    for name in ("a", "b"):
        w.save_maps(f"maps/{name}.npz", quality_map=np.arange(400, dtype=np.float32).reshape(20, 20))
    w.append_rows([row(0, "maps/a.npz"), row(1, "maps/b.npz")])
    path = tmp_path / "maps" / "b.npz"
    data = bytearray(path.read_bytes())
    if damage == "flip_a_value":
        data[data.index(np.float32(200).tobytes())] ^= 0x01  # one bit of one value; the zip structure is intact
    path.write_bytes(bytes(data[: len(data) // 2]) if damage == "truncate" else b"" if damage == "empty" else data)
    with caplog.at_level("WARNING"):
        assert w.done_indices() == {0}
    assert "img1" in caplog.text and "damaged" in caplog.text


def test_parts_of_any_world_size_are_merged(tmp_path):
    # an interrupted 2-process run resumed by 1 process: rank 1's part must not be forgotten
    RunWriter(tmp_path, rank=1).append_rows([row(1), row(3)])
    RunWriter(tmp_path, rank=0).append_rows([row(0), row(2), row(1)])  # index 1 seen twice: counted once
    rows, _ = RunWriter(tmp_path).merge(world_size=1)
    assert [r["index"] for r in rows] == ["0", "1", "2", "3"]
    assert list(rows[0]) == PER_IMAGE_COLUMNS


def test_start_run_skips_done_images_and_marks_folder(tmp_path):
    cfg = {"corruption": "contrast", "severity": 1, "dataset": {"num_workers": 2}}
    w = RunWriter(tmp_path)
    assert start_run(w, 4, resume=False, config=cfg) == [0, 1, 2, 3]
    assert json.loads((tmp_path / INCOMPLETE).read_text())["status"] == "running"
    w.append_rows([row(0), row(2)])
    with pytest.raises(RunFolderError, match="unfinished run. Add resume=true"):
        start_run(RunWriter(tmp_path), 4, resume=False, config=cfg)
    other_workers = {**cfg, "dataset": {"num_workers": 0}, "resume": True}  # does not change results
    assert start_run(RunWriter(tmp_path), 4, resume=True, config=other_workers) == [1, 3]
    with pytest.raises(RunFolderError, match="different configuration.*severity"):
        start_run(RunWriter(tmp_path), 4, resume=True, config={**cfg, "severity": 2})


def test_complete_run_is_not_overwritten(tmp_path):
    w = RunWriter(tmp_path)
    w.write_status("running")
    w.write_summary({"config": {"severity": 1}})
    assert not (tmp_path / INCOMPLETE).exists()
    with pytest.raises(RunFolderError, match="already holds a complete run"):
        check_run_folder(tmp_path, resume=False)
    check_run_folder(tmp_path, resume=True, config={"severity": 1})  # nothing left to do: allowed
    with pytest.raises(RunFolderError, match="different configuration"):
        check_run_folder(tmp_path, resume=True, config={"severity": 3})


def _start(run: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "WANDB_SILENT": "true", "HYDRA_FULL_ERROR": "0", "PYTHONUNBUFFERED": "1"}
    # A shell without job control starts background commands with SIGINT ignored, and children inherit that
    # (Python then installs no Ctrl-C handler): the run under test gets the default disposition back.
    return subprocess.Popen([sys.executable, str(ROOT / "evaluate.py"), *SLOW_RUN, *extra, f"hydra.run.dir={run}"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _finish(proc: subprocess.Popen, timeout: int = 600) -> str:
    out, _ = proc.communicate(timeout=timeout)
    return out


def _data_rows(part: Path) -> int:
    return max(0, len(part.read_text().splitlines()) - 1) if part.exists() else 0


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("reference") / "run"
    proc = _start(run)
    out = _finish(proc)
    assert proc.returncode == 0, out[-3000:]
    return run


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_killed_run_keeps_rows_and_resume_equals_uninterrupted(tmp_path, reference, sig):
    run = tmp_path / "run"
    proc = _start(run)
    part = run / f".{PER_IMAGE}.part0"
    deadline = time.time() + 300
    while _data_rows(part) < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be interrupted"
    proc.send_signal(sig)
    out = _finish(proc)
    assert proc.returncode != 0
    assert not (run / "summary.json").exists() and not (run / PER_IMAGE).exists()
    status = json.loads((run / INCOMPLETE).read_text())
    assert status["status"] == "interrupted" and status["rows_on_disk"] >= 2, status
    assert "resume=true" in out
    done_before = _data_rows(part)
    assert 2 <= done_before < N_SLOW
    # the maps of the images whose rows were on disk; an image interrupted between its map and its row (the row is
    # committed last) is computed again, its map rewritten
    with part.open(newline="") as f:
        committed = [row["maps"] for row in csv.DictReader(f)]
    assert len(committed) == done_before and all(committed)
    maps_before = {Path(m).name: (run / m).stat().st_mtime_ns for m in committed}

    again = _start(run)  # without resume=true: refused, nothing touched
    out = _finish(again)
    assert again.returncode == 2 and "resume=true" in out.strip().splitlines()[-1]

    resumed = _start(run, "resume=true", "dataset.num_workers=1")
    out = _finish(resumed)
    assert resumed.returncode == 0, out[-3000:]
    assert f"{done_before} of {N_SLOW} images already done" in out
    assert (run / PER_IMAGE).read_bytes() == (reference / PER_IMAGE).read_bytes()
    for name, mtime in maps_before.items():  # finished images were not computed again
        assert (run / "maps" / name).stat().st_mtime_ns == mtime
    for npz in (reference / "maps").glob("*.npz"):
        a, b = np.load(npz), np.load(run / "maps" / npz.name)
        assert all(np.array_equal(a[k], b[k]) for k in a.files)
    got, want = (json.loads((r / "summary.json").read_text()) for r in (run, reference))
    assert got["metrics"] == want["metrics"] and got["n_images"] == want["n_images"] == N_SLOW
    assert got["resumed"] is True and want["resumed"] is False
    assert not (run / INCOMPLETE).exists() and not list(run.glob(".*.part*"))


def test_background_writes_are_bounded_and_errors_surface(tmp_path):
    import threading

    from iqa_saliency.io.run_writer import MAX_QUEUED_WRITES

    gate = threading.Event()
    writer = RunWriter(tmp_path, background_writes=2)
    for _ in range(MAX_QUEUED_WRITES):
        writer.submit(gate.wait)
    assert len(writer._pending) == MAX_QUEUED_WRITES  # all blocked: queued, none dropped
    gate.set()
    writer.submit(lambda: None)  # over the bound: waits for the oldest instead of queueing more
    assert len(writer._pending) <= MAX_QUEUED_WRITES
    writer.wait()
    assert not writer._pending

    def fail() -> None:
        raise OSError("disk full")

    writer.submit(fail)
    with pytest.raises(OSError, match="disk full"):
        writer.wait()
