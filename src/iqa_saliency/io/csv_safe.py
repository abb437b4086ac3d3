"""CSV cells a spreadsheet opens as data, never as a formula (OWASP "CSV injection"): a text cell that begins with
`=`, `+`, `-`, `@`, a tab or a carriage return is written with a `'` in front; so is one that begins with `'`, so
the rule is exact both ways: `restore` drops one leading `'` and gives the value back. Numbers (`-0.5`, `1e-3`)
are left as they are. Every CSV the project writes goes through `neutralise`; every one it reads back through
`restore`."""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Mapping
from typing import Any

DANGEROUS = ("=", "+", "-", "@", "\t", "\r", "'")
NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[+-]?(inf|nan)")


def neutralise(value: Any) -> Any:
    """A text cell as a spreadsheet will not run it (other values unchanged)."""
    if isinstance(value, str) and value.startswith(DANGEROUS) and not NUMBER.fullmatch(value):
        return "'" + value
    return value


def restore(value: Any) -> Any:
    """The value `neutralise` was given."""
    if isinstance(value, str) and value.startswith("'"):
        return value[1:]
    return value


def _breaks_line(cells: Iterable[Any]) -> bool:
    return any(isinstance(v, str) and ("\r" in v or "\n" in v) for v in cells)


class SafeWriter:
    """csv.writer whose rows are neutralised cell by cell; a row with a line break inside a cell is written fully
    quoted (the csv module quotes only the characters of its own line terminator, so a lone CR would end the row)."""

    def __init__(self, fh: Any, **options: Any) -> None:
        self.writer = csv.writer(fh, **options)
        self.quoted = csv.writer(fh, **{**options, "quoting": csv.QUOTE_ALL})

    def writerow(self, row: Iterable[Any]) -> Any:
        cells = [neutralise(v) for v in row]
        return (self.quoted if _breaks_line(cells) else self.writer).writerow(cells)

    def writerows(self, rows: Iterable[Iterable[Any]]) -> None:
        for row in rows:
            self.writerow(row)


class SafeDictWriter(SafeWriter):
    """csv.DictWriter's interface (header and dict rows) over SafeWriter."""

    def __init__(self, fh: Any, fieldnames: list[str], **options: Any) -> None:
        super().__init__(fh, **options)
        self.fieldnames = list(fieldnames)

    def writeheader(self) -> Any:
        return super().writerow(self.fieldnames)

    def writerow(self, rowdict: Mapping[str, Any]) -> Any:  # type: ignore[override]
        return super().writerow([rowdict.get(k, "") for k in self.fieldnames])

    def writerows(self, rowdicts: Iterable[Mapping[str, Any]]) -> None:  # type: ignore[override]
        for row in rowdicts:
            self.writerow(row)


def restore_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row read back from one of the project's CSV files, every cell restored."""
    return {k: restore(v) for k, v in row.items()}


def _text(column: Any) -> bool:
    return column.dtype == object or str(column.dtype) in ("str", "string")


def neutralise_frame(frame: Any) -> Any:
    """A pandas DataFrame's text cells neutralised (a copy), for DataFrame.to_csv (the sweep tables, whose text is
    configuration values, never file names)."""
    return frame.apply(lambda column: column.map(neutralise) if _text(column) else column)


def restore_frame(frame: Any) -> Any:
    """A pandas DataFrame read from one of the project's CSV files, its text cells restored (a copy)."""
    return frame.apply(lambda column: column.map(restore) if _text(column) else column)
