"""mos.csv as spreadsheets save it (issue 22): every combination of byte-order mark, line ends, quoting, separator
and category spelling reads as the same scores; every unreadable cell is one line naming its line and why."""

from __future__ import annotations

import csv
import io
import itertools

import pytest

from iqa_saliency.data.study_files import CATEGORIES, MosRow, read_mos_csv
from iqa_saliency.errors import ConfigError, DatasetError, UserError

ROWS = [  # image_path, global_score, normalized_global_score, category: the reference the files are written from
    ("images\\bedroom\\a.jpg", 71.25, 70.5, "Good"),
    ("./images/kitchen/b c.jpg", 60.0, 41.0, "Fair"),
    ("images/kitchen/=d.jpg", -1.5, 0.0, "Bad"),
    ("images/bar/é,f.jpg", 80.125, 95.0, "Excellent"),
]
WANT = {"bedroom/a.jpg": MosRow(71.25, 70.5, "Good"), "kitchen/b c.jpg": MosRow(60.0, 41.0, "Fair"),
        "kitchen/=d.jpg": MosRow(-1.5, 0.0, "Bad"), "bar/é,f.jpg": MosRow(80.125, 95.0, "Excellent")}


def write(path, rows, *, bom=False, newline="\n", separator=",", quoting=csv.QUOTE_MINIMAL, case=str,
          decimal="."):
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter=separator, quoting=quoting, lineterminator=newline)
    writer.writerow(["image_path", "global_score", "normalized_global_score", "category"])
    for image, score, normalized, category in rows:
        fmt = (lambda x: repr(x).replace(".", decimal)) if isinstance(score, float) else str
        writer.writerow([image, fmt(score), fmt(normalized) if isinstance(normalized, float) else normalized,
                         case(category)])
    path.write_bytes(("\ufeff" if bom else "").encode() + buf.getvalue().encode())
    return path


@pytest.mark.parametrize(("bom", "newline", "quoting", "case"), list(itertools.product(
    [False, True], ["\n", "\r\n"], [csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONNUMERIC],
    [str, str.lower, str.upper, lambda c: f" {c} "])))
def test_what_spreadsheets_write_reads_the_same(tmp_path, bom, newline, quoting, case):
    assert read_mos_csv(write(tmp_path / "mos.csv", ROWS, bom=bom, newline=newline, quoting=quoting,
                              case=case)) == WANT


@pytest.mark.parametrize("separator", [";", "\t"])
def test_other_separators_with_a_decimal_comma(tmp_path, separator):
    assert read_mos_csv(write(tmp_path / "mos.csv", ROWS, separator=separator, decimal=",", bom=True)) == WANT


def test_blank_lines_at_the_end_are_ignored(tmp_path):
    path = write(tmp_path / "mos.csv", ROWS, newline="\r\n")
    path.write_bytes(path.read_bytes() + b"\r\n,,,\r\n\r\n")
    assert read_mos_csv(path) == WANT


BAD_SCORES = ["=1+2", "=SUM(A1:A3)", "@A1", "+A1", "-A1+1", "abc", "", "nan", "NaN", "inf", "-inf", "1e999",
              "7 2", "72..5"]


@pytest.mark.parametrize("bad", BAD_SCORES)
@pytest.mark.parametrize("column", [1, 2])
@pytest.mark.parametrize("row", [0, 3])
def test_a_score_that_is_not_a_number_names_its_line(tmp_path, bad, column, row):
    rows = [list(r) for r in ROWS]
    rows[row][column] = bad
    with pytest.raises(DatasetError) as info:
        read_mos_csv(write(tmp_path / "mos.csv", [tuple(r) for r in rows]))
    message = str(info.value)
    assert f"line {row + 2} " in message and "\n" not in message, message


@pytest.mark.parametrize("bad", ["Great", "", "Goodish", "G00d", "Very good", "1"])
def test_an_unknown_category_is_refused_not_dropped(tmp_path, bad):
    rows = [*ROWS[:1], (*ROWS[1][:3], bad), *ROWS[2:]]
    with pytest.raises(DatasetError) as info:
        read_mos_csv(write(tmp_path / "mos.csv", rows))
    assert "line 3 " in str(info.value) and all(c in str(info.value) for c in CATEGORIES)


def test_file_level_problems_are_one_line(tmp_path):
    latin = tmp_path / "latin1.csv"
    latin.write_bytes("image_path,global_score,normalized_global_score,category\nx/é.jpg,1,2,Good\n".encode("latin-1"))
    other = tmp_path / "other.csv"
    other.write_text("path,score\nx/a.jpg,1\n")
    conflicting = write(tmp_path / "dup.csv", [ROWS[0], (ROWS[0][0], 1.0, 2.0, "Bad")])
    for path, kind, needle in ((latin, DatasetError, "UTF-8"), (other, ConfigError, "image_path"),
                               (tmp_path / "absent.csv", ConfigError, "does not exist"),
                               (conflicting, DatasetError, "lines 2 and 3")):
        with pytest.raises(kind) as info:
            read_mos_csv(path)
        assert needle in str(info.value) and "\n" not in str(info.value)
        assert isinstance(info.value, UserError)


def test_identical_duplicate_rows_are_one_image(tmp_path):
    assert read_mos_csv(write(tmp_path / "mos.csv", [*ROWS, ROWS[0]])) == WANT


def test_categories_are_the_models():
    from iqa_saliency.models.paq2piq import CATEGORIES as MODEL_CATEGORIES

    assert CATEGORIES == MODEL_CATEGORIES
