"""The value types of the configuration schema (`Spec` and its constructors): what a key accepts and the words
that name it in a one-line refusal. Nothing heavy is imported here."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SEED_MAX = 2**32 - 1
CATEGORIES = ("Bad", "Poor", "Fair", "Good", "Excellent")  # models.paq2piq.CATEGORIES


@dataclass(frozen=True)
class Spec:
    """What a key takes: `accepts(value)` and the words that name it in a message (`want`)."""

    want: str
    accepts: Callable[[Any], bool]
    example: str = ""
    explain: Callable[[str, Any], str] | None = None  # a message of its own for a refused value

    def __or__(self, other: Spec) -> Spec:
        return Spec(f"{self.want}, or {other.want}", lambda v: self.accepts(v) or other.accepts(v),
                    self.example or other.example, self.explain or other.explain)


def is_whole(v: Any) -> bool:
    """A whole number (a bool is not one)."""
    return isinstance(v, int) and not isinstance(v, bool)


def _num(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def Int(lo: int | None = None, hi: int | None = None, example: str = "") -> Spec:  # noqa: N802
    """A whole number in [lo, hi]."""
    rng = (f" from {lo} to {hi}" if hi is not None else f" of at least {lo}") if lo is not None else ""
    return Spec(f"a whole number{rng}", lambda v: is_whole(v) and (lo is None or v >= lo) and (hi is None or v <= hi),
                example or str(lo if lo is not None else 0))


def Num(lo: float | None = None, hi: float | None = None, open_lo: bool = False, open_hi: bool = False,  # noqa: N802
        example: str = "") -> Spec:
    """A finite number between lo and hi (open bounds excluded)."""
    parts = []
    if lo is not None:
        parts.append(f"{'above' if open_lo else 'at least'} {lo:g}")
    if hi is not None:
        parts.append(f"{'below' if open_hi else 'at most'} {hi:g}")

    def ok(v: Any) -> bool:
        if not _num(v):
            return False
        if lo is not None and (v <= lo if open_lo else v < lo):
            return False
        return hi is None or (v < hi if open_hi else v <= hi)

    return Spec("a number" + (" " + " and ".join(parts) if parts else ""), ok, example)


def Choice(*values: Any) -> Spec:  # noqa: N802
    """One of `values` (compared exactly: a wrong case is a wrong value)."""
    want = ("one of: " if len(values) > 1 else "") + ", ".join(str(v) for v in values)
    return Spec(want, lambda v: isinstance(v, str | int) and not isinstance(v, bool) and v in values, str(values[0]))


def ListOf(item: Spec) -> Spec:  # noqa: N802
    """A list whose every element `item` accepts."""
    return Spec(f"a list of {item.want.removeprefix('one of: ')}",
                lambda v: isinstance(v, (list, tuple)) and all(item.accepts(x) for x in v), f"[{item.example}]")


BOOL = Spec("true or false", lambda v: isinstance(v, bool), "true")
TEXT = Spec("a text", lambda v: isinstance(v, str) and v.strip() != "", "name")
NULL = Spec("null", lambda v: v is None, "null")
ANY = Spec("anything", lambda v: True)
SEED = Int(0, SEED_MAX)
POSITIVE = Int(1)


def _folder_or_new(v: Any) -> bool:
    return isinstance(v, str) and v.strip() != "" and not (Path(v).exists() and not Path(v).is_dir())


def _existing_file(v: Any) -> bool:
    return isinstance(v, str) and Path(v).is_file()


def _existing_dir(v: Any) -> bool:
    return isinstance(v, str) and Path(v).is_dir()


FOLDER = Spec("a folder path (not an existing file)", _folder_or_new, "PATH")
EXISTING_FILE = Spec("an existing file", _existing_file, "PATH")
EXISTING_DIR = Spec("an existing folder", _existing_dir, "PATH")
FILE_PATH = Spec("a file path (not a folder)", lambda v: isinstance(v, str) and v.strip() != "" and not Path(
    v).is_dir(), "PATH")
HEX = Spec("a sha256 digest or a prefix of it (hex text, quoted if all digits)",
           lambda v: isinstance(v, str) and 1 <= len(v) <= 64 and all(c in "0123456789abcdefABCDEF" for c in v),
           "\"'0123abcd'\"",
           lambda key, v: f"{key}={v!r} was read as a number, not as hex text (Hydra parses digits-only values as "
           f"numbers). Quote it: {key}=\"'{v}'\" (or give more of the digest)." if is_whole(v) else "")
SIZE = Int(1, example="224") | NULL
CATEGORY = Spec("one of: " + ", ".join(CATEGORIES) + " (any case)",
                lambda v: isinstance(v, str) and v.lower() in {c.lower() for c in CATEGORIES}, "Good")
