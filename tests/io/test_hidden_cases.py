"""Adversarial runs (issue 17): kill -9 at random points, leftovers of half-written files, a dataset changed
between interrupt and resume, concurrent resumes, a full disk, damaged cache entries. Each ends with a folder
equal to an uninterrupted run's (per_image.csv, skipped.csv and images byte for byte, every map array) or with a
one-line refusal."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers.cli import ROOT
from helpers.images import make_image

pytestmark = pytest.mark.slow

N_IMAGES = 10
ARGS = ["corruption=gaussian_noise", "severity=2", "pretrained=false", "logger=none",
        "trainer.enable_progress_bar=false", "dataset=folder", "dataset.resize=64", "dataset.crop=64",
        "dataset.batch_size=3", "dataset.num_workers=0", "dataset.save_images=true", "figures=0"]


def make_dataset(root: Path) -> Path:
    for i in range(N_IMAGES):
        make_image(root / f"im{i:02d}.png", size=(72, 64), seed=i)
    (root / "broken.png").write_bytes(b"not a png")  # one skipped image, so skipped.csv is compared too
    return root


def start(run: Path, data: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "WANDB_SILENT": "true", "HYDRA_FULL_ERROR": "0", "PYTHONUNBUFFERED": "1",
           "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(ROOT / "evaluate.py"), *ARGS, f"dataset.root={data}", *extra,
                             f"hydra.run.dir={run}"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=600)
    return proc.returncode, out, err


def run(run_dir: Path, data: Path, *extra: str) -> tuple[int, str, str]:
    return finish(start(run_dir, data, *extra))


def assert_same_folder(got: Path, want: Path) -> None:
    assert (got / "summary.json").is_file() and not (got / "INCOMPLETE").exists()
    for name in ("per_image.csv", "skipped.csv"):
        assert (got / name).read_bytes() == (want / name).read_bytes(), name
    for sub, suffix in (("maps", "*.npz"), ("images", "*.png")):
        names = sorted(p.name for p in (want / sub).glob(suffix))
        assert sorted(p.name for p in (got / sub).glob(suffix)) == names and names, sub
    for name in sorted(p.name for p in (want / "images").glob("*.png")):
        assert (got / "images" / name).read_bytes() == (want / "images" / name).read_bytes(), name
    for npz in (want / "maps").glob("*.npz"):  # npz members carry a write time: the arrays are compared
        a, b = np.load(npz), np.load(got / "maps" / npz.name)
        assert a.files == b.files and all(np.array_equal(a[k], b[k]) for k in a.files), npz.name
    assert not [p for p in got.rglob("*") if ".tmp" in p.name or ".part" in p.name]


def assert_one_line_refusal(code: int, err: str, *needles: str) -> str:
    assert code == 2, err[-3000:]
    lines = [line for line in err.strip().splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def rows_on_disk(run_dir: Path) -> int:
    part = run_dir / ".per_image.csv.part0"
    return max(0, len(part.read_text().splitlines()) - 1) if part.exists() else 0


def kill_after_rows(run_dir: Path, data: Path, rows: int = 1) -> None:
    proc = start(run_dir, data)
    deadline = time.time() + 300
    while rows_on_disk(run_dir) < rows and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data") / "images")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data) -> tuple[Path, float]:
    folder = tmp_path_factory.mktemp("reference") / "run"
    started = time.time()
    code, _, err = run(folder, data)
    assert code == 0, err[-3000:]
    return folder, time.time() - started


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_kill_9_at_a_random_point_then_resume_equals_uninterrupted(tmp_path, data, reference, seed):
    want, seconds = reference
    folder = tmp_path / "run"
    proc = start(folder, data)
    time.sleep(random.Random(seed).uniform(0.3, seconds))  # anywhere: start-up, mid-batch, mid-write, the end
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    if folder.exists() and seed % 2:  # what a kill inside a write leaves behind, besides whatever it really left
        for sub in ("maps", "images"):
            (folder / sub).mkdir(exist_ok=True)
            (folder / sub / f".000004_im04.{sub}.x1y2.tmp").write_bytes(b"half a file")
        part = folder / ".per_image.csv.part0"
        if part.exists():
            with part.open("a") as fh:
                fh.write("9,im09.png,gaussian_noise,2,41.")  # half a row
    code, out, err = run(folder, data, "resume=true")
    assert code == 0, err[-3000:]
    assert_same_folder(folder, want)


def test_dataset_changed_between_interrupt_and_resume_is_refused_both_ways(tmp_path, reference):
    want, _ = reference
    data = make_dataset(tmp_path / "images")
    folder = tmp_path / "run"
    kill_after_rows(folder, data)
    make_image(data / "im99.png", seed=99)  # added
    code, _, err = run(folder, data, "resume=true")
    assert_one_line_refusal(code, err, "dataset changed", "1 added (im99.png)")
    (data / "im99.png").unlink()
    (data / "broken.png").unlink()  # removed: the file skipped.csv listed
    code, _, err = run(folder, data, "resume=true")
    assert_one_line_refusal(code, err, "dataset changed", "1 removed (broken.png)")
    (data / "broken.png").write_bytes(b"not a png")  # restored as it was (another mtime: a replaced file)
    code, _, err = run(folder, data, "resume=true")
    assert_one_line_refusal(code, err, "dataset changed", "1 changed (broken.png)")


def test_dataset_restored_resume_finishes_exactly(tmp_path, data, reference):
    want, _ = reference
    folder = tmp_path / "run"
    kill_after_rows(folder, data)
    (data / "im03.png").rename(data / "moved.tmp")
    code, _, err = run(folder, data, "resume=true")
    assert_one_line_refusal(code, err, "1 removed (im03.png)")
    (data / "moved.tmp").rename(data / "im03.png")  # the same file back (same size and mtime)
    code, _, err = run(folder, data, "resume=true")
    assert code == 0, err[-3000:]
    assert_same_folder(folder, want)


def test_a_map_file_damaged_before_the_resume_is_computed_again(tmp_path, data, reference):
    """One bit of a finished image's .npz flipped (its zip CRC-32 no longer matches): the resume redoes that image
    (its batch) and the folder ends equal to the uninterrupted run's."""
    want, _ = reference
    folder = tmp_path / "run"
    kill_after_rows(folder, data, rows=3)
    damaged = sorted((folder / "maps").glob("*.npz"))[0]
    payload = bytearray(damaged.read_bytes())
    payload[len(payload) // 2] ^= 0x10
    damaged.write_bytes(bytes(payload))
    code, out, err = run(folder, data, "resume=true")
    assert code == 0, err[-3000:]
    assert "damaged" in out + err and damaged.name in out + err
    assert_same_folder(folder, want)


def test_resume_with_other_numerics_is_refused(tmp_path, data):
    folder = tmp_path / "run"
    kill_after_rows(folder, data)
    code, _, err = run(folder, data, "resume=true", "trainer.precision=bf16-mixed")
    assert_one_line_refusal(code, err, "trainer.precision")
    code, _, err = run(folder, data, "resume=true", "dataset.batch_size=2")
    assert_one_line_refusal(code, err, "dataset.batch_size")


def test_two_concurrent_resumes(tmp_path, data, reference):
    want, _ = reference
    folder = tmp_path / "run"
    kill_after_rows(folder, data)
    procs = [start(folder, data, "resume=true") for _ in range(2)]
    results = [finish(p) for p in procs]
    for code, _, err in results:
        if code != 0:  # the one that found the folder locked
            assert_one_line_refusal(code, err, "is in use by process", "on ")
    assert any(code == 0 for code, _, _ in results)
    assert_same_folder(folder, want)


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip()})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.slow  # a fresh Python process per run (imports torch): end to end
def test_disk_full_mid_run_keeps_rows_says_one_line_and_resumes_exactly(small_disk, data, reference):
    want, _ = reference
    folder = small_disk / "run"
    code, _, err = run(folder, data)
    assert_one_line_refusal(code, err, "No space left on device", "resume=true")
    assert (folder / "INCOMPLETE").exists() and not (folder / "summary.json").exists()
    subprocess.run(["mount", "-o", "remount,size=16m", str(small_disk)], check=True)
    code, _, err = run(folder, data, "resume=true")
    assert code == 0, err[-3000:]
    assert_same_folder(folder, want)


def test_disk_already_full_is_one_line_before_hydra_writes(small_disk, data):
    filler = small_disk / "filler"
    with open(filler, "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 4096)
        except OSError:
            pass  # full
    folder = small_disk / "run"
    code, _, err = run(folder, data)
    assert_one_line_refusal(code, err, "Cannot write to the output folder", "No space left")
    assert not (folder / ".hydra" / "config.yaml").exists()


def test_damaged_entries_of_both_caches_are_recomputed_not_used(tmp_path, data, reference):
    want, _ = reference
    clean, corrupted = tmp_path / "clean", tmp_path / "corrupted"
    caches = [f"clean_cache={clean}", f"corruption_cache={corrupted}"]
    code, _, err = run(tmp_path / "fill", data, *caches)
    assert code == 0, err[-3000:]
    assert_same_folder(tmp_path / "fill", want)  # cached or not, the same numbers
    entries = sorted(clean.glob("*/*.npz")) + sorted(corrupted.rglob("*.npz"))
    assert len(entries) == 2 * N_IMAGES
    for k, entry in enumerate(entries[::3]):
        raw = entry.read_bytes()
        entry.write_bytes([b"", raw[: len(raw) // 2], raw[:200] + bytes(64) + raw[264:]][k % 3])
    code, out, err = run(tmp_path / "again", data, *caches)
    assert code == 0, err[-3000:]
    assert (out + err).count("Damaged") == len(entries[::3])
    assert_same_folder(tmp_path / "again", want)
    code, out, err = run(tmp_path / "third", data, *caches)  # the damaged entries were rewritten whole
    assert code == 0 and "Damaged" not in out + err
    assert_same_folder(tmp_path / "third", want)


@pytest.mark.slow  # a fresh Python process per run (imports torch): end to end
def test_read_only_default_output_folder_is_one_line(tmp_path, data):
    outputs = tmp_path / "cwd" / "outputs"
    outputs.parent.mkdir()
    outputs.write_text("a file where the output folder should be")  # root ignores permission bits
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    proc = subprocess.run([sys.executable, str(ROOT / "evaluate.py"), *ARGS, f"dataset.root={data}"],
                          cwd=outputs.parent, env=env, capture_output=True, text=True, timeout=600)
    assert_one_line_refusal(proc.returncode, proc.stderr, "Cannot write to the output folder 'outputs'")
    shutil.rmtree(outputs.parent)
