"""What a finished cell and sweep print, and progress counted in images (a log line every N s off a terminal)."""

from __future__ import annotations

import csv
import logging
import re
from types import SimpleNamespace

import pytest
from helpers.cli import run_cli

from iqa_saliency.report.console import cell_table, sweep_table


def _write_rows(folder, rows):
    with open(folder / "per_image.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_cell_table_means_and_intervals(tmp_path):
    rows = [{"mos": m, "mos_clean": c, "mos_drop": c - m, "flipped": f, "correct_top1": "", "sim_cc": s,
             "attr_stability_cc": 0.5} for m, c, f, s in [(40, 50, 1, 0.25), (60, 62, 0, ""), (50, 56, 0, 0.75)]]
    _write_rows(tmp_path, rows)
    text = cell_table(tmp_path, {"corruption": "fog", "severity": 3, "n_images": 3, "n_skipped": 1,
                                 "weights": {"untrained": True}})
    lines = {line.strip().split("  ")[0]: line for line in text.splitlines()}
    assert text.splitlines()[0] == "fog severity 3: 3 images, 1 skipped (UNTRAINED weights)"
    expected = {"MOS corrupted": 50.0, "MOS clean": 56.0, "MOS drop (clean - corrupted)": 6.0,
                "flip rate (prediction changed)": 1 / 3, "map similarity CC (quality vs attribution)": 0.5,
                "attribution stability CC (clean vs corrupted)": 0.5}  # blank values left out of the means
    for label, mean in expected.items():
        numbers = [float(x) for x in re.findall(r"-?\d+\.\d+", lines[label])]
        assert numbers[0] == pytest.approx(mean, abs=5e-4)
        assert numbers[1] <= numbers[0] + 5e-4 and numbers[0] <= numbers[2] + 5e-4  # the interval holds the mean
    assert "(no labels)" in lines["top-1 accuracy"]
    assert text.splitlines()[-1] == f"  folder: {tmp_path}"


def test_sweep_table_lists_every_cell(tmp_path):
    with open(tmp_path / "summary.csv", "w", newline="") as fh:
        fh.write("corruption,severity,variant,n,acc_top1,flip_rate,mos_mean,sim_cc_mean,run\n"
                 "fog,1,a,4,,0.25,51.23456,0.1,x\nfog,2,a,4,,0.5,48.0,,y\n")
    lines = sweep_table(tmp_path).splitlines()
    assert lines[0].split() == ["corruption", "severity", "n", "acc_top1", "flip_rate", "mos_mean", "sim_cc_mean"]
    assert lines[1].split() == ["fog", "1", "4", "-", "0.250", "51.235", "0.100"]
    assert lines[2].split() == ["fog", "2", "4", "-", "0.500", "48.000", "-"]
    assert lines[-1] == f"report: {tmp_path / 'report.md'}"


def test_progress_off_a_terminal_logs_every_interval(monkeypatch, caplog):
    from iqa_saliency.evaluation import progress_bar

    clock = iter([0.0, 10.0, 20.0, 31.0, 40.0, 62.0])
    monkeypatch.setattr(progress_bar.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(progress_bar.sys.stderr, "isatty", lambda: False, raising=False)
    batches = [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15], [16, 17]]
    loader = SimpleNamespace(batch_sampler=SimpleNamespace(batches=batches))
    trainer = SimpleNamespace(is_global_zero=True, world_size=1, test_dataloaders=[loader])
    bar = progress_bar.ImageProgressBar("fog s3", interval=30)
    with caplog.at_level(logging.INFO, logger="evaluate"):
        bar.on_test_start(trainer, None)
        for i in range(len(batches)):  # at 10, 20, 31, 40, 62 s
            bar.on_test_batch_end(trainer, None, None, None, i)
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == "fog s3: 18 images to compute; progress every 30 s"
    # lines at 31 s (12 images) and 62 s (18 images): counted in images, with the rate
    assert messages[1:] == ["fog s3: 12/18 images, 2.6 s/image, about 16 s left", "fog s3: 18/18 images, 3.4 s/image"]


@pytest.mark.slow
def test_a_sweep_prints_each_cells_table_its_own_and_one_weights_banner(tmp_path):
    """Offline and uncached, with allow_untrained_fallback: the banner once for the sweep, not once per cell."""
    sweep = tmp_path / "sweep"
    proc = run_cli("evaluate.py", "-m", "corruption=contrast", "severity=1,2", "allow_untrained_fallback=true",
                   "logger=csv", "dataset.source.names=[chelsea,coffee]", "figures=0", "progress_interval=0.01",
                   f"hydra.sweep.dir={sweep}", cwd=tmp_path)  # the default weights: unavailable offline (a named
    # checkpoint that cannot be had is refused, never replaced)
    assert proc.returncode == 0, proc.stderr[-3000:]
    console = proc.stdout + proc.stderr  # Hydra's log handler writes to stdout
    assert console.count("=" * 78) == 2  # one banner (a line of = above and below)
    for severity in (1, 2):
        assert f"contrast severity {severity}: 2 images, 0 skipped (UNTRAINED weights)" in proc.stdout
        assert re.search(rf"folder: .*severity={severity}$", proc.stdout, re.M)
        assert re.search(rf"contrast s{severity}: 2/2 images", console)  # progress off a terminal
    assert console.count("GPU available") == 1
    table = proc.stdout[proc.stdout.index("corruption  severity"):].splitlines()
    assert [line.split()[:3] for line in table[1:3]] == [["contrast", "1", "2"], ["contrast", "2", "2"]]
    assert table[3] == f"report: {sweep / 'report.md'}"
