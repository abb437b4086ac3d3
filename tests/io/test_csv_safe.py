"""CSV cells a spreadsheet opens as data (issue 22, OWASP CSV injection), generated from the rule: no cell the
project writes begins with = + - @ tab or CR unless it is a number, and every value is read back as it was."""

from __future__ import annotations

import csv
import io
import random
import string

import pandas as pd
import pytest

from iqa_saliency.io.csv_safe import neutralise, neutralise_frame, restore, restore_frame
from iqa_saliency.io.run_writer import RunWriter
from iqa_saliency.io.schema import PER_IMAGE, SKIPPED

STARTS = ["=", "+", "-", "@", "\t", "\r", "'", "''", "=-", " =", "a", "0", "é", ""]
NUMBERS = ["-0.5", "+1", "1e-3", "-1E+5", "-inf", "inf", "nan", "-.5", "3."]


def names(seed: int, n: int = 60) -> list[str]:
    rng = random.Random(seed)
    alphabet = string.ascii_letters + string.digits + "=+-@'\"\t,;|!()[] éß"
    return [rng.choice(STARTS) + "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 12))) + ".png"
            for _ in range(n)]


def is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return cell.strip() == cell


def runs_as_formula(cell: str) -> bool:
    """What a spreadsheet would evaluate: a cell beginning with a formula character that is not a number."""
    return cell[:1] in ("=", "+", "-", "@", "\t", "\r") and not is_number(cell)


@pytest.mark.parametrize("seed", range(5))
def test_neutralise_is_safe_and_exactly_undone(seed):
    for name in names(seed) + STARTS + NUMBERS:
        written = neutralise(name)
        assert not runs_as_formula(written), repr(written)
        assert restore(written) == name
    for number in NUMBERS:
        assert neutralise(number) == number  # numbers stay numbers (sim_cc, mos_drop can be negative)


@pytest.mark.parametrize("seed", range(3))
def test_run_files_hold_no_formula_and_resume_reads_the_names_back(tmp_path, seed):
    images = names(seed, 20)
    writer = RunWriter(tmp_path)
    writer.append_rows([{"index": i, "image": name, "label_name": name, "sim_cc": -0.25} for i, name in
                        enumerate(images[:10])])
    writer.append_skipped([{"index": i, "image": name, "reason": "=cmd|' /C calc'!A0"} for i, name in
                           enumerate(images[10:], start=10)])
    assert writer.done_rows() == dict(enumerate(images))  # resume matches rows to images by their real names
    writer.merge()
    for name in (PER_IMAGE, SKIPPED):
        for row in csv.reader(io.StringIO((tmp_path / name).read_text(), newline="")):
            assert not any(runs_as_formula(cell) for cell in row), row
    rows = restore_frame(pd.read_csv(tmp_path / PER_IMAGE, keep_default_na=False))
    assert list(rows["image"]) == images[:10] and list(rows["sim_cc"]) == [-0.25] * 10


def test_frames_round_trip(tmp_path):
    variants = [n.replace("\r", "") for n in names(7, 8)]  # configuration values: no line breaks
    frame = pd.DataFrame({"variant": variants, "acc": [-0.5, 0.1] * 4})
    neutralise_frame(frame).to_csv(tmp_path / "t.csv", index=False)
    back = restore_frame(pd.read_csv(tmp_path / "t.csv", keep_default_na=False))
    assert list(back["variant"]) == list(frame["variant"]) and list(back["acc"]) == list(frame["acc"])
    text = (tmp_path / "t.csv").read_text()
    assert not any(runs_as_formula(c) for row in csv.reader(io.StringIO(text, newline="")) for c in row)


def test_split_csv_is_safe(tmp_path):
    from iqa_saliency.data.sources import ImageRecord, ImageSource
    from iqa_saliency.data.splits import write_split_csv

    class Names(ImageSource):
        class_names = ["=cls", "ok"]

        def __init__(self, ids):
            self.records = [ImageRecord(i, n % 2) for n, i in enumerate(ids)]

    ids = names(3, 10)
    write_split_csv(tmp_path / "split.csv", {"train": Names(ids)})
    rows = list(csv.reader(io.StringIO((tmp_path / "split.csv").read_text(), newline="")))
    assert not any(runs_as_formula(c) for row in rows for c in row)
    assert [restore(r[0]) for r in rows[1:]] == ids
