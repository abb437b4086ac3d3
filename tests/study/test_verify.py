"""`iqa-study verify` end to end on a fixture built like the study's repository: a small MIT-Indoor-like dataset,
and test_images/ with its mos.csv written by the study's own code restated in tests/helpers/study_reference.py
(estimate_quality.py: validation position 5, the corrupted images re-made from the saved clean crop, PaQ-2-PiQ and
the classifier with its dropout left on), from weights the test makes."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import study_reference as ref
from PIL import Image

from iqa_saliency.study.curves import TOLERANCE, curve_rows
from iqa_saliency.study.published import IMAGE_SETS, packaged_curves, packaged_images
from iqa_saliency.study.table import EXPLAINED, FAIL, PASS

pytest.importorskip("sklearn", reason="the study's split is sklearn's train_test_split")

N_CLASSES = 3


def verify_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "iqa_saliency.study", "verify", *args], capture_output=True,
                          text=True, timeout=900)


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> dict[str, Path]:
    """The fixture: dataset, weights, checkpoint and the study-like repository folder with its test_images/."""
    return ref.build_study_fixture(tmp_path_factory.mktemp("study"), N_CLASSES)


def _edit_mos_csv(src: Path, dst: Path, match: str, column: str, value: str) -> None:
    """Copy the fixture's repository folder with one value of its mos.csv changed."""
    import shutil

    shutil.copytree(src, dst)
    path = dst / "test_images" / "mos.csv"
    rows = list(csv.DictReader(open(path, newline="")))
    hit = [r for r in rows if match in r["image_path"]]
    assert len(hit) == 1
    hit[0][column] = value
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


@pytest.mark.slow
def test_verify_passes_on_the_study_fixture_and_names_a_changed_row(study, tmp_path):
    out = tmp_path / "out"
    run = verify_cli("--study", str(study["repo"]), "--paq2piq", str(study["paq"]), "--checkpoint",
                     str(study["ckpt"]), "--mit-indoor", str(study["root"]), "--out", str(out),
                     "--dropout-passes", "2000")
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-3000:]
    table = pd.read_csv(out / "verify.csv", keep_default_na=False)
    assert (out / "verify.md").read_text().count("\n") == len(table) + 4
    assert FAIL not in set(table["verdict"])
    by = {(r.check, r.item): r for r in table.itertuples()}
    clean = [r for r in table.itertuples() if r.check == "dataset" and r.item.startswith("val position 5 =")]
    assert len(clean) == 1 and clean[0].verdict == PASS
    # 21 corrupted images + severity 0: every deterministic one identical; motion_blur explained (never seeded)
    images = table[table["check"] == "image"]
    assert len(images) == 22
    assert set(images[images["item"].str.contains("motion_blur")]["verdict"]) <= {EXPLAINED, PASS}
    assert set(images[~images["item"].str.contains("motion_blur")]["verdict"]) == {PASS}
    assert set(table[table["check"].isin(["MOS", "category", "probability"])]["verdict"]) == {PASS}
    assert len(table[table["check"] == "MOS"]) == 23 and len(table[table["check"] == "probability"]) == 22
    labels = table[table["check"] == "predicted label"]
    assert set(labels[labels["item"].str.endswith("severity 0")]["verdict"]) <= {PASS, EXPLAINED}
    assert ("curve", "all") in by and by[("curve", "all")].verdict == "not run"

    # one published value changed: the run fails and names that row
    changed = tmp_path / "changed"
    _edit_mos_csv(study["repo"], changed, "severity=2/defocus_blur/", "global_score", "12.5")
    run = verify_cli("--study", str(changed), "--paq2piq", str(study["paq"]), "--out", str(tmp_path / "out2"))
    assert run.returncode == 1
    failed = run.stderr.strip().splitlines()[-1]
    assert failed.startswith("FAILED: 1 row(s): MOS ") and failed.endswith(" defocus_blur s2"), failed
    table = pd.read_csv(tmp_path / "out2" / "verify.csv", keep_default_na=False)
    row = table[table["verdict"] == FAIL]
    assert len(row) == 1 and row.iloc[0]["check"] == "MOS" and row.iloc[0]["study"] == "12.5"


@pytest.mark.slow
def test_verify_names_a_changed_pixel_and_a_changed_probability(study, tmp_path):
    import shutil

    changed = tmp_path / "changed"
    shutil.copytree(study["repo"], changed)
    png = next((changed / "test_images" / "severity=1" / "contrast").glob("*.png"))
    pixels = np.array(Image.open(png))
    pixels[100, 100, 0] ^= 1
    Image.fromarray(pixels).save(png)
    rows = list(csv.DictReader(open(changed / "test_images" / "mos.csv", newline="")))
    hit = [r for r in rows if "severity=3/zoom_blur/" in r["image_path"]][0]
    hit["probability"] = "1.5"  # no dropout pass gives it
    with open(changed / "test_images" / "mos.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    run = verify_cli("--study", str(changed), "--paq2piq", str(study["paq"]), "--checkpoint", str(study["ckpt"]),
                     "--out", str(tmp_path / "out"), "--mit-indoor", str(study["root"]), "--dropout-passes", "200")
    assert run.returncode == 1
    table = pd.read_csv(tmp_path / "out" / "verify.csv", keep_default_na=False)
    failed = table[table["verdict"] == FAIL]
    assert sorted(zip(failed["check"], failed["item"].str.split(" ", n=1).str[1], strict=True)) == [
        ("image", "contrast s1"), ("probability", "zoom_blur s3")]
    assert "1 of 50176 pixels differ, max 1" in failed.iloc[0]["difference"]
    # the changed contrast image also scores differently, but within the MOS tolerance or not: only its own rows
    assert all("contrast s1" in i or "zoom_blur s3" in i for i in failed["item"])


def _exit_code(capsys, *args: str) -> tuple[int, str]:
    from iqa_saliency.study.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["verify", *args])
    return exc.value.code, capsys.readouterr().err


def test_user_errors_are_one_line_exit_2(tmp_path, capsys):
    code, err = _exit_code(capsys, "--study", str(tmp_path / "nowhere"), "--paq2piq", str(tmp_path / "x.pth"),
                           "--out", str(tmp_path / "out"))
    assert code == 2 and err.count("\n") == 1 and "--study" in err and "Set it to" in err
    (tmp_path / "repo" / "test_images").mkdir(parents=True)
    (tmp_path / "w.pth").write_bytes(b"")
    args = ("--study", str(tmp_path / "repo"), "--paq2piq", str(tmp_path / "w.pth"), "--out", str(tmp_path / "out"))
    code, err = _exit_code(capsys, *args)
    assert code == 2 and "test_images/mos.csv' does not exist" in err and err.count("\n") == 1
    (tmp_path / "repo" / "test_images" / "mos.csv").write_text("a,b\n1,2\n")
    code, err = _exit_code(capsys, *args, "--sweep", str(tmp_path))
    assert code == 2 and "has no summary.csv" in err
    code, err = _exit_code(capsys, *args, "--dropout-passes", "5")
    assert code == 2 and "Use 100 or more" in err
    code, err = _exit_code(capsys, *args)
    assert code == 2 and "not the study's" in err and err.count("\n") == 1
    code, err = _exit_code(capsys, "--study", str(tmp_path / "repo"), "--paq2piq", str(tmp_path / "nothing.pth"),
                           "--out", str(tmp_path / "out"))
    assert code == 2 and "--paq2piq" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_without_weights_only_the_images_are_compared(study, tmp_path):
    from iqa_saliency.study.cli import main

    assert main(["verify", "--study", str(study["repo"]), "--out", str(tmp_path)]) == 0
    table = pd.read_csv(tmp_path / "verify.csv", keep_default_na=False)
    assert set(table["check"]) == {"published file", "image", "MOS"}
    assert list(table[table["check"] == "MOS"]["verdict"]) == ["not run"]


def test_packaged_values_are_the_published_ones():
    """Spot values of the study's two mos.csv files (hand-copied from them) and of its plots."""
    kitchen = {p.item: p for p in packaged_images(IMAGE_SETS[0])}
    assert len(kitchen) == 23
    assert kitchen["kitchen severity 0"].global_score == 76.61452
    assert kitchen["kitchen defocus_blur s2"].global_score == 49.470436
    assert kitchen["kitchen defocus_blur s2"].category == "Bad"
    assert kitchen["kitchen zoom_blur s3"].probability == 0.9072133302688599
    buffet = {p.item: p for p in packaged_images(IMAGE_SETS[1])}
    assert len(buffet) == 10 and buffet["buffet contrast s1"].global_score == 72.18806
    curves = packaged_curves()
    assert len(curves) == 7 * 4 * 3 + 4 * 3 * 3
    plots = {(c.corruption, c.severity, c.metric): c.value for c in curves if c.source.startswith("plots/")}
    report = {(c.corruption, c.severity, c.metric): c.value for c in curves if c.source.startswith("Report/")}
    # read by eye off the figures: the plots' contrast top-1 at severity 0 ~0.645, the Report's ~0.598
    assert plots[("contrast", 0, "top1")] == pytest.approx(0.645, abs=0.003)
    assert report[("contrast", 0, "top1")] == pytest.approx(0.598, abs=0.002)
    assert plots[("defocus_blur", 3, "top1")] == pytest.approx(0.276, abs=0.003)
    # mean MOS is deterministic: severity 0 is the same in every figure
    clean = [c.value for c in curves if c.metric == "mean_mos" and c.severity == 0]
    assert max(clean) - min(clean) < 0.1


def _summary(path: Path, shift: dict | None = None) -> Path:
    rows = {}
    for c in packaged_curves():
        if c.source.startswith("plots/"):
            rows.setdefault((c.corruption, c.severity), {})[c.metric] = c.value
    records = []
    for (corruption, severity), values in rows.items():
        rec = {"corruption": corruption, "severity": severity, "acc_top1": values["top1"],
               "acc_top5": values["top5"], "mos_mean": values["mean_mos"]}
        for (c, s, col), delta in (shift or {}).items():
            if (c, s) == (corruption, severity):
                rec[col] += delta
        records.append(rec)
    pd.DataFrame(records).to_csv(path / "summary.csv", index=False)
    return path / "summary.csv"


def test_curves_next_to_a_sweep(tmp_path):
    rows = curve_rows(_summary(tmp_path))
    plots = [r for r in rows if r.source.startswith("plots/")]
    assert len(plots) == 84 and {r.verdict for r in plots} == {PASS}
    # the Report's accuracies (an earlier run) are shown, explained, never failing
    report = [r for r in rows if r.source.startswith("Report/")]
    assert {r.verdict for r in report} <= {PASS, EXPLAINED}
    assert [r.verdict for r in report if r.item == "contrast s0 top1"] == [EXPLAINED]
    assert [r.verdict for r in report if r.item == "contrast s1 mean_mos"] == [PASS]
    shifted = curve_rows(_summary(tmp_path, {("zoom_blur", 2, "acc_top1"): TOLERANCE["top1"] + 0.01,
                                             ("saturate", 3, "mos_mean"): -0.4}))
    failed = [(r.item, r.source) for r in shifted if r.verdict == FAIL]
    assert failed == [("zoom_blur s2 top1", "plots/zoom_blur.png")]


def test_console_script_is_declared():
    tomllib = pytest.importorskip("tomllib")
    from iqa_saliency.study import cli

    project = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["iqa-study"] == "iqa_saliency.study.cli:run"
    assert callable(cli.run)
    assert "iqa_saliency.study" in project["tool"]["setuptools"]["packages"]
    assert project["tool"]["setuptools"]["package-data"]["iqa_saliency.study"] == ["*.csv"]
