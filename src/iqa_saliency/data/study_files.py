"""Study data files a person may have opened and saved in a spreadsheet (the original study's mos.csv): read what
spreadsheets write (a UTF-8 byte-order mark, CRLF line ends, quoted fields, `;` or tab as the separator with a
decimal comma), and refuse a row that cannot be read right in one line that names the row and why. Torch-free, so
the file is checked before any model loads."""

from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, DatasetError

MOS_CSV_COLUMNS = ("image_path", "global_score", "normalized_global_score", "category")
CATEGORIES = ("Bad", "Poor", "Fair", "Good", "Excellent")  # models.paq2piq.CATEGORIES (a test keeps them equal)
FORMULA_START = ("=", "+", "-", "@")


@dataclass(frozen=True)
class Table:
    """A CSV file's header and rows (each row with its line number in the file, for messages)."""

    path: Path
    columns: list[str]
    rows: list[tuple[int, dict[str, str]]]
    separator: str


def read_table(path: str | os.PathLike, key: str) -> Table:
    """A CSV file as spreadsheets save it: UTF-8 with or without BOM, any line ends, `,` `;` or tab separated.

    `key` is the configuration key that named the file (for messages)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"{key}='{path}' does not exist. Set {key} to the file's path.")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise DatasetError(f"{path} line {line} is not UTF-8 text (byte {data[exc.start]:#x}). Save it as "
                           f"'CSV UTF-8' in the spreadsheet and point {key} at that file.") from None
    first = text.split("\n", 1)[0]
    separator = max((",", ";", "\t"), key=first.count) if first else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=separator)
    try:
        header = next(reader, [])
        columns = [c.strip() for c in header]
        rows = []
        for fields in reader:
            if not any(f.strip() for f in fields):
                continue  # a blank line (spreadsheets add them at the end)
            rows.append((reader.line_num, dict(zip(columns, (f.strip() for f in fields), strict=False))))
    except csv.Error as exc:
        raise DatasetError(f"{path} line {reader.line_num} is not valid CSV ({exc}). Re-save the file as CSV "
                           "from the spreadsheet.") from None
    return Table(path, columns, rows, separator)


def parse_number(text: str, separator: str = ",") -> float:
    """A finite number from a cell; ValueError with the reason (a formula, text, NaN, infinity)."""
    if text.startswith(FORMULA_START[0]) or (text[:1] in FORMULA_START and not _numeric(text)):
        raise ValueError(f"'{text}' is a formula or text, not a number (save the values, not the formulas)")
    if separator != "," and "," in text and "." not in text:
        text = text.replace(",", ".")  # a decimal comma, as spreadsheets in many locales write it
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"'{text}' is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"'{text}' is not a finite number")
    return value


def _numeric(text: str) -> bool:
    try:
        float(text.replace(",", "."))
    except ValueError:
        return False
    return True


def category_name(text: str) -> str:
    """A quality category as the project spells it (any case, surrounding spaces ignored); ValueError otherwise."""
    lookup = {c.lower(): c for c in CATEGORIES}
    name = lookup.get(text.strip().lower())
    if name is None:
        raise ValueError(f"category '{text}' is not one of {', '.join(CATEGORIES)}")
    return name


@dataclass(frozen=True)
class MosRow:
    """One image's scores from mos.csv."""

    global_score: float
    normalized_global_score: float
    category: str


def mos_key(path: str) -> str:
    """`<class>/<file>`: the last two components of a path with either separator (mos.csv rows, image ids)."""
    parts = [p for p in str(path).replace("\\", "/").split("/") if p]
    return "/".join(parts[-2:])


def read_mos_csv(path: str | os.PathLike, key: str = "dataset.quality_scores") -> dict[str, MosRow]:
    """The original study's mos.csv (image_path, global_score, normalized_global_score, category) keyed by
    `<class>/<file>` (its image paths are relative to the study's working folder, possibly Windows-style); every
    row checked, the first wrong one refused with its line number and why."""
    table = read_table(path, key)
    missing = [c for c in MOS_CSV_COLUMNS if c not in table.columns]
    if missing:
        raise ConfigError(f"'{table.path}' lacks the column(s) {missing} of the study's mos.csv "
                          f"({', '.join(MOS_CSV_COLUMNS)}; found {table.columns}). Set {key} to a file in that format.")
    out: dict[str, MosRow] = {}
    first_line: dict[str, int] = {}
    for line, row in table.rows:
        image = row.get("image_path") or ""
        try:
            if not image:
                raise ValueError("image_path is empty")
            parsed = MosRow(parse_number(row.get("global_score") or "", table.separator),
                            parse_number(row.get("normalized_global_score") or "", table.separator),
                            category_name(row.get("category") or ""))
        except ValueError as exc:
            raise DatasetError(f"{table.path} line {line} ({image or 'no image_path'}): {exc}. Correct that row, "
                               f"or set {key} to the mos.csv written for this dataset.") from None
        name = mos_key(image)
        if name in out and out[name] != parsed:
            raise DatasetError(f"{table.path} lines {first_line[name]} and {line} both give {name}, with different "
                               "scores. Keep one row per image.")
        out.setdefault(name, parsed)
        first_line.setdefault(name, line)
    return out
