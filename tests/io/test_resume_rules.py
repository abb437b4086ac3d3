"""What a resume accepts: rows tied to images by identity, a changed dataset or anything that changes numbers
refused in one line, temporary files cleaned, rows committed only with all their files, one process per folder."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading

import pytest

from iqa_saliency.errors import RunFolderError
from iqa_saliency.io.lock import RunLock
from iqa_saliency.io.resume import DATASET_FILE, start_run
from iqa_saliency.io.run_writer import RunWriter
from iqa_saliency.io.schema import INCOMPLETE, PER_IMAGE

IDS = ["a.png", "b.png", "c.png", "d.png"]
STAMPS = ["1:1", "2:2", "3:3", "4:4"]
CFG = {"corruption": "contrast", "severity": 1, "dataset": {"num_workers": 2, "batch_size": 2},
       "trainer": {"precision": "32-true", "accelerator": "cpu", "enable_progress_bar": True}}
IDENTITY = {"weights": {"quality": {"sha256": "aa"}}, "device": "cpu", "precision": "32-true"}


def row(index: int, image: str) -> dict:
    return {"index": index, "image": image, "mos": 50.0 + index, "maps": ""}


@pytest.fixture
def interrupted(tmp_path):
    """A run of IDS with images 0 and 2 finished."""
    w = RunWriter(tmp_path)
    assert start_run(w, IDS, False, CFG, stamps=STAMPS, identity=IDENTITY) == [0, 1, 2, 3]
    w.append_rows([row(0, "a.png"), row(2, "c.png")])
    return tmp_path


def resume(run, ids=IDS, stamps=STAMPS, cfg=CFG, identity=IDENTITY) -> list[int]:
    return start_run(RunWriter(run), ids, True, {**cfg, "resume": True}, stamps=stamps, identity=identity)


def test_resume_skips_the_finished_images_by_identity(interrupted):
    assert json.loads((interrupted / DATASET_FILE).read_text())["images"][1] == ["b.png", "2:2"]
    assert resume(interrupted) == [1, 3]
    free = {**CFG, "dataset": {**CFG["dataset"], "num_workers": 0},
            "trainer": {**CFG["trainer"], "enable_progress_bar": False}, "logger": {"_target_": "x"}}
    assert resume(interrupted, cfg=free) == [1, 3]  # workers, progress bar and logger change no number


@pytest.mark.parametrize(("ids", "stamps", "needle"), [
    ([*IDS, "e.png"], [*STAMPS, "5:5"], "1 added (e.png)"),
    (["a.png", "c.png", "d.png"], ["1:1", "3:3", "4:4"], "1 removed (b.png)"),
    (IDS, ["1:1", "9:9", "3:3", "4:4"], "1 changed (b.png)"),
    (["b.png", "a.png", "c.png", "d.png"], ["2:2", "1:1", "3:3", "4:4"], "new order"),
])
def test_a_changed_dataset_is_refused_in_one_line(interrupted, ids, stamps, needle):
    with pytest.raises(RunFolderError) as info:
        resume(interrupted, ids, stamps)
    message = str(info.value)
    assert needle in message and "\n" not in message and "hydra.run.dir" in message


def test_without_a_dataset_record_rows_still_name_their_images(interrupted):
    (interrupted / DATASET_FILE).unlink()  # a folder written before the record existed
    with pytest.raises(RunFolderError, match="1 changed"):
        resume(interrupted, ["a.png", "x.png", "y.png", "d.png"], STAMPS)
    assert resume(interrupted) == [1, 3]


@pytest.mark.parametrize(("key", "value"), [("precision", "bf16-mixed"), ("accelerator", "gpu"), ("devices", 2)])
def test_trainer_keys_that_change_numbers_are_refused(interrupted, key, value):
    cfg = {**CFG, "trainer": {**CFG["trainer"], key: value}}
    with pytest.raises(RunFolderError, match=f"differs in: trainer.{key}"):
        resume(interrupted, cfg=cfg)


@pytest.mark.parametrize("change", [{"device": "cuda"}, {"precision": "bf16-mixed"},
                                    {"weights": {"quality": {"sha256": "bb"}}}])
def test_weights_device_and_precision_actually_used_are_compared(interrupted, change):
    with pytest.raises(RunFolderError, match="was started with other"):
        resume(interrupted, identity={**IDENTITY, **change})


def test_identity_survives_the_interrupted_marker(interrupted):
    w = RunWriter(interrupted)
    w.identity = IDENTITY
    w.write_status("interrupted", reason="KeyboardInterrupt", config=CFG)
    assert json.loads((interrupted / INCOMPLETE).read_text())["identity"] == IDENTITY
    with pytest.raises(RunFolderError):
        resume(interrupted, identity={**IDENTITY, "device": "cuda"})


def test_temporary_files_of_killed_writes_are_removed_on_resume(interrupted):
    leftovers = [interrupted / "maps" / ".000001_b.npz.k3j2.tmp", interrupted / "images" / ".000001_b.png.x.tmp",
                 interrupted / "figures" / ".000001_b.png.tmp.png", interrupted / "checkpoints" / ".last.ckpt.q.tmp",
                 interrupted / f".{INCOMPLETE}.abc.tmp"]
    for path in leftovers:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"half")
    keep = interrupted / "maps" / "000000_a.npz"
    keep.write_bytes(b"a map")
    resume(interrupted)
    assert not any(p.exists() for p in leftovers) and keep.exists()


def test_rows_are_committed_only_after_their_files(tmp_path):
    gate = threading.Event()
    w = RunWriter(tmp_path, background_writes=2)
    w.submit(gate.wait)
    w.commit_rows([row(0, "a.png")])
    assert not w.part_path(PER_IMAGE).exists()  # its file is not written yet: the row is not on disk
    gate.set()
    w.submit(lambda: None)
    w.commit_rows([row(1, "b.png")])
    w.wait()
    assert sorted(w.read_rows(PER_IMAGE)) == [0, 1]

    def full() -> None:
        raise OSError(28, "No space left on device")

    w.submit(full)
    w.commit_rows([row(2, "c.png")])
    w.submit(lambda: None)
    w.commit_rows([row(3, "d.png")])
    with pytest.raises(OSError, match="No space"):
        w.wait()
    assert sorted(w.read_rows(PER_IMAGE)) == [0, 1, 3]  # the row whose file failed is redone on resume


@pytest.mark.slow  # a fresh Python process per run (imports torch): end to end
def test_a_second_process_on_the_folder_is_refused_naming_the_holder(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(RunFolderError, match=f"in use by process {os.getpid()} on {socket.gethostname()}"):
            RunLock(tmp_path).acquire()
        code = ("import sys; from iqa_saliency.io.lock import RunLock\n"
                "try:\n    RunLock(sys.argv[1]).acquire()\nexcept Exception as e:\n    print(e); sys.exit(2)")
        proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
        assert proc.returncode == 2 and f"process {os.getpid()}" in proc.stdout
    RunLock(tmp_path).acquire().release()  # released: free again


def test_an_interrupt_whose_exception_chain_loops_is_not_taken_for_a_full_disk(tmp_path):
    """Lightning can leave an interrupt in its own context chain; reading the chain must end (it hung a run)."""
    import errno

    from iqa_saliency.evaluation.cell import _output_error

    interrupt, exit_ = KeyboardInterrupt("signal SIGTERM"), SystemExit(1)
    interrupt.__context__, exit_.__context__ = exit_, interrupt
    assert _output_error(exit_, tmp_path) is None
    full = OSError(errno.ENOSPC, "No space left on device", "maps/x.npz")
    wrapped = RuntimeError("writer")
    wrapped.__cause__, full.__context__ = full, wrapped
    assert "No space left on device" in str(_output_error(wrapped, tmp_path))
