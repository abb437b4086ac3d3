"""Sweeps through hydra/launcher=slurm on a real single-node Slurm cluster (scripts/slurm_cluster.sh).

The module brings a private cluster up (munge, MariaDB, slurmdbd, slurmctld, slurmd, all under a temporary
folder), runs evaluate.py as a user would, and always brings it down. Where the cluster cannot start (not root,
packages not installable, daemons refusing to run) every test here is skipped with the reason.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "slurm_cluster.sh"
IMAGES = ["chelsea", "coffee", "rocket"]
CELLS = {"contrast": (1, 2), "motion_blur": (1, 2)}

# The command, plus figures=0; array_parallelism=2 makes the clean-cache hits deterministic on any node
# size: the last two cells start only after one of the first two (which share the clean entries, computing and
# writing them at the same moment) has finished.
SWEEP = [
    "-m", "corruption=contrast,motion_blur", "severity=1,2",
    "hydra/launcher=slurm", "hydra.launcher.partition=debug", "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=4", "hydra.launcher.array_parallelism=2",
    "trainer=cpu", "pretrained=false", "logger=csv", "save_maps=false", "figures=0",
    f"dataset.source.names=[{','.join(IMAGES)}]",
]


# One thread in the jobs (sbatch passes the environment on) and in the local comparison run: float sums, hence
# the last digits of the results, depend on the thread count.
ENV = {"WANDB_SILENT": "true", "HYDRA_FULL_ERROR": "1", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def run_evaluate(*overrides: str, env: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {}), **ENV}
    return subprocess.run([sys.executable, str(ROOT / "evaluate.py"), *overrides], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def explain(result: subprocess.CompletedProcess) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-6000:]}"


class Cluster:
    def __init__(self, folder: Path):
        self.folder = folder
        self.env = {"SLURM_CONF": str(folder / "etc" / "slurm.conf")}

    def run(self, *argv: str, timeout: float = 60) -> str:
        result = subprocess.run(list(argv), env={**os.environ, **self.env}, capture_output=True, text=True,
                                timeout=timeout, check=True)
        return result.stdout

    def sacct(self, job: str) -> list[dict]:
        """Accounting records (allocations, not steps) of a job or array: JobID, JobName, State, ExitCode."""
        out = self.run("sacct", "-X", "-n", "-P", "-j", job, "-o", "JobID,JobName,State,ExitCode")
        return [dict(zip(["JobID", "JobName", "State", "ExitCode"], line.split("|"), strict=True))
                for line in out.splitlines() if line.strip()]

    def evaluate(self, *overrides: str, timeout: float = 900) -> subprocess.CompletedProcess:
        return run_evaluate(*overrides, env=self.env, timeout=timeout)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Cluster:
    """A running cluster for this module; brought down (and its database removed) whatever the tests do."""
    if sys.platform != "linux":
        pytest.skip("the local Slurm cluster needs Linux")
    given = os.environ.get("IQA_SLURM_DIR")
    if given:  # .ci/run (or the user: make slurm-up) started it and stops it
        status = subprocess.run(["bash", str(SCRIPT), "status", given], capture_output=True, text=True, timeout=60)
        if status.returncode != 0:
            pytest.skip(f"the Slurm cluster in IQA_SLURM_DIR={given} is not up ({SCRIPT.name} status)")
        yield Cluster(Path(given))
        return
    folder = tmp_path_factory.mktemp("slurm")
    try:
        try:
            up = subprocess.run(["bash", str(SCRIPT), "up", str(folder)], capture_output=True, text=True,
                                timeout=900)
        except subprocess.TimeoutExpired:
            pytest.skip(f"the local Slurm cluster did not start within 900 s ({SCRIPT.name} up, logs: {folder})")
        if up.returncode != 0:
            reason = (up.stderr.strip().splitlines() or [f"exit {up.returncode}"])[-1]
            pytest.skip(f"the local Slurm cluster could not start ({SCRIPT.name} up): {reason}")
        yield Cluster(folder)
    finally:
        subprocess.run(["bash", str(SCRIPT), "down", str(folder)], capture_output=True, text=True, timeout=300)
        shutil.rmtree(folder / "mysql", ignore_errors=True)  # ~200 MB; logs and configs stay for a look


def cell_dirs(sweep: Path) -> dict[tuple[str, int], Path]:
    """(corruption, severity) -> the cell's run folder, read from the folder's .hydra/config.yaml."""
    import yaml

    cells = {}
    for config in sorted(sweep.glob("*/.hydra/config.yaml")):
        cfg = yaml.safe_load(config.read_text())
        cells[(cfg["corruption"], int(cfg["severity"]))] = config.parent.parent
    return cells


def job_id(cell: Path) -> str:
    """The Slurm job id the launcher recorded for the cell (hydra.job.id, e.g. 12_3 for array 12, task 3)."""
    import yaml

    return str(yaml.safe_load((cell / ".hydra" / "hydra.yaml").read_text())["hydra"]["job"]["id"])


def read_rows(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def assert_same_results(a: Path, b: Path) -> None:
    """Two runs of one cell (folders a, b) with the same configuration, seed and thread count give the same
    per_image.csv: byte for byte when both computed their clean passes alike (both from the clean cache, or
    both not); otherwise float values may differ in the last digits (the models then see batches of another
    composition, and float sums depend on it) and Spearman over near-tied blocks a little more."""
    hits = [json.loads((x / "summary.json").read_text())["clean_cache"]["hits"] for x in (a, b)]
    if hits[0] == hits[1]:
        assert (a / "per_image.csv").read_bytes() == (b / "per_image.csv").read_bytes(), (a, b)
        return
    rows_a, rows_b = read_rows(a / "per_image.csv"), read_rows(b / "per_image.csv")
    assert len(rows_a) == len(rows_b) > 0, (a, b)
    for ra, rb in zip(rows_a, rows_b, strict=True):
        assert ra.keys() == rb.keys()
        for key, va in ra.items():
            vb = rb[key]
            if va != vb:
                try:
                    fa, fb = float(va), float(vb)
                except ValueError:
                    pytest.fail(f"{a.name} {ra['image']} {key}: {va!r} != {vb!r}")
                assert fa == pytest.approx(fb, rel=1e-4, abs=1e-4), (a.name, ra["image"], key, va, vb)


def sweep_overrides(folder: Path) -> list[str]:
    """SWEEP into `folder`, the cells also sharing a corruption cache next to it."""
    return [*SWEEP, f"hydra.sweep.dir={folder}", f"corruption_cache={folder.parent / 'corruption_cache'}"]


@pytest.fixture(scope="module")
def sweep(cluster, tmp_path_factory) -> Path:
    """The issue's 2x2 sweep on the cluster, run once for the module."""
    folder = tmp_path_factory.mktemp("slurm_sweep") / "sweep"
    start = time.monotonic()
    result = cluster.evaluate(*sweep_overrides(folder))
    assert result.returncode == 0, explain(result)
    print(f"slurm sweep: {time.monotonic() - start:.0f} s")
    return folder


def test_every_cell_ran_as_a_slurm_job(cluster, sweep):
    cells = cell_dirs(sweep)
    assert set(cells) == {(c, s) for c, sev in CELLS.items() for s in sev}
    ids = {job_id(cell) for cell in cells.values()}
    arrays = {i.split("_")[0] for i in ids}
    assert len(ids) == 4 and len(arrays) == 1, ids  # one array job, one task per cell
    records = {r["JobID"]: r for r in cluster.sacct(arrays.pop())}
    assert set(records) == ids, records
    for record in records.values():
        assert record["State"] == "COMPLETED" and record["ExitCode"] == "0:0", record
        assert record["JobName"] == "evaluate"
    for cell in cells.values():  # submitit's own log of the job that ran the cell
        assert (sweep / ".submitit" / job_id(cell) / f"{job_id(cell)}_0_log.out").is_file()
        assert (cell / "summary.json").is_file() and not (cell / "INCOMPLETE").exists()


def test_sweep_report_written_after_remote_jobs(sweep):
    assert (sweep / "report.md").is_file()
    with (sweep / "summary.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4, rows
    assert {(r["corruption"], int(r["severity"])) for r in rows} == set(cell_dirs(sweep))


def test_cells_share_the_clean_cache(sweep):
    summaries = {key: json.loads((cell / "summary.json").read_text()) for key, cell in cell_dirs(sweep).items()}
    for summary in summaries.values():
        cache = summary["clean_cache"]
        assert Path(cache["dir"]).parent == sweep / ".clean_cache"
        assert cache["hits"] + cache["misses"] == len(IMAGES), cache
        assert summary["n_images"] == len(IMAGES) and summary["n_skipped"] == 0
    # At most two cells run at once, so at least two find every clean entry another cell wrote.
    assert sorted(s["clean_cache"]["hits"] for s in summaries.values())[-2:] == [len(IMAGES)] * 2, summaries
    corrupted = sweep.parent / "corruption_cache"
    for corruption, severity in summaries:
        entries = [p for p in (corrupted / corruption / str(severity)).rglob("*") if p.is_file()]
        assert len(entries) >= len(IMAGES), (corruption, severity, entries)  # one per image (and any index)


def test_results_equal_a_local_sweep(sweep, tmp_path):
    local = tmp_path / "local"
    overrides = [o for o in SWEEP if not o.startswith("hydra.launcher.")]
    overrides[overrides.index("hydra/launcher=slurm")] = "hydra/launcher=basic"
    result = run_evaluate(*overrides, f"hydra.sweep.dir={local}")
    assert result.returncode == 0, explain(result)
    remote_cells, local_cells = cell_dirs(sweep), cell_dirs(local)
    assert set(remote_cells) == set(local_cells)
    for key, cell in remote_cells.items():
        assert cell.name == local_cells[key].name  # the launcher is not part of a cell's folder name
        assert_same_results(cell, local_cells[key])


def test_resume_redoes_only_the_deleted_cell(cluster, sweep, tmp_path):
    cells = cell_dirs(sweep)
    redo = cells[("motion_blur", 1)]
    kept = {key: (cell / "summary.json").read_bytes() for key, cell in cells.items() if cell != redo}
    before = shutil.copytree(redo, tmp_path / "before")
    old_id = job_id(redo)
    shutil.rmtree(redo)

    result = cluster.evaluate(*sweep_overrides(sweep), "resume=true")
    assert result.returncode == 0, explain(result)
    cells = cell_dirs(sweep)
    assert set(cells) == set(kept) | {("motion_blur", 1)}
    for key, summary in kept.items():  # the complete cells were left as they were
        assert (cells[key] / "summary.json").read_bytes() == summary, key
    redone = cells[("motion_blur", 1)]
    assert json.loads((redone / "summary.json").read_text())["n_images"] == len(IMAGES)
    assert_same_results(redone, before)
    new_id = job_id(redone)
    assert new_id.split("_")[0] != old_id.split("_")[0]  # by a job of the new submission
    assert cluster.sacct(new_id)[0]["State"] == "COMPLETED"
    with (sweep / "summary.csv").open(newline="") as f:
        assert len(list(csv.DictReader(f))) == 4


def test_cancelled_job_fails_the_sweep_then_resumes(cluster, tmp_path):
    """scancel mid-run: the launcher reports the failure (submitit reads CANCELLED from sacct) instead of
    waiting forever; resume=true then finishes the cell from the rows already written."""
    folder = tmp_path / "sweep"
    # One cell, long enough to be caught mid-run: all 8 bundled images, one per batch.
    overrides = [o for o in SWEEP if not o.startswith(("corruption=", "severity=", "dataset.source.names="))]
    overrides += ["corruption=contrast", "severity=3", "dataset.batch_size=1", f"hydra.sweep.dir={folder}"]
    env = {**os.environ, **cluster.env, **ENV}
    log = tmp_path / "launcher.log"  # a file, not a pipe: nobody reads a pipe while the test polls
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, str(ROOT / "evaluate.py"), *overrides], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        rows = []
        while time.monotonic() < deadline and proc.poll() is None:
            rows = list(folder.glob("*/.per_image.csv.part*"))
            if rows and any(p.stat().st_size > 0 for p in rows):
                break
            time.sleep(0.5)
        assert proc.poll() is None, f"the sweep ended before it could be cancelled:\n{log.read_text()}"
        assert rows, "no per-image rows appeared within 300 s"
        (cell,) = cell_dirs(folder).values()
        jid = job_id(cell)
        cluster.run("scancel", jid)
        try:
            proc.wait(timeout=240)
        except subprocess.TimeoutExpired:
            pytest.fail("the launcher still waits 240 s after its job was cancelled")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    output = log.read_text()
    assert proc.returncode != 0, output
    # submitit names the state (no result file) or the job's own error: the run stops on SIGTERM and says so, or,
    # when scancel's SIGTERM reaches a DataLoader worker first, the loader reports its worker terminated
    assert any(s in output for s in ("CANCELLED", "SIGTERM", "killed by signal: Terminated")), output[-4000:]
    assert cluster.sacct(jid)[0]["State"].startswith("CANCELLED")
    assert not (cell / "summary.json").exists()
    assert (cell / "INCOMPLETE").exists()

    result = cluster.evaluate(*overrides, "resume=true")
    assert result.returncode == 0, explain(result)
    summary = json.loads((cell / "summary.json").read_text())
    assert summary["n_images"] == 8 and summary["resumed"] is True, summary
    assert len(read_rows(cell / "per_image.csv")) == 8
    assert not (cell / "INCOMPLETE").exists()
    assert (folder / "report.md").is_file()
