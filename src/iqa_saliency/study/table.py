"""The verification table: one row per published value, study vs here, the difference and a verdict."""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ..io.atomic import atomic_write_text
from ..io.csv_safe import SafeDictWriter

PASS = "pass"
FAIL = "FAIL"
EXPLAINED = "explained"  # differs for a reason stated in the note (the study's randomness or a known bug)
NOT_RUN = "not run"  # needs an input that was not given (the note names it)


@dataclass(frozen=True)
class Row:
    """One comparison: what the study published, what this project gives, and whether they agree."""

    check: str
    item: str
    study: str
    here: str
    difference: str
    verdict: str
    source: str
    note: str = ""


def fmt(value: float, digits: int = 6) -> str:
    """A number as the table prints it."""
    return f"{value:.{digits}g}"


def write_table(rows: list[Row], out_dir: Path) -> tuple[Path, Path]:
    """verify.csv and verify.md in `out_dir`; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    names = [f.name for f in fields(Row)]
    buf = io.StringIO()
    writer = SafeDictWriter(buf, names, lineterminator="\n")  # no cell a spreadsheet runs (io.csv_safe)
    writer.writeheader()
    writer.writerows(asdict(r) for r in rows)
    csv_path, md_path = out_dir / "verify.csv", out_dir / "verify.md"
    atomic_write_text(csv_path, buf.getvalue())
    atomic_write_text(md_path, markdown(rows))
    return csv_path, md_path


def markdown(rows: list[Row]) -> str:
    """The table as markdown, with a count of verdicts first."""
    counts = {v: sum(r.verdict == v for r in rows) for v in (PASS, FAIL, EXPLAINED, NOT_RUN)}
    head = ", ".join(f"{n} {v}" for v, n in counts.items() if n)
    lines = [f"{len(rows)} rows: {head}.", "", "| check | item | study | here | difference | verdict | source | note |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cells = [r.check, r.item, r.study, r.here, r.difference, f"**{r.verdict}**" if r.verdict == FAIL else r.verdict,
                 r.source, r.note]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"
