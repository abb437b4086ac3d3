"""Every relative link in README.md and docs/*.md points to a file that exists and, with #anchor, to a heading of
that file (anchors as GitHub makes them from headings)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^\s*(```|~~~)")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
INLINE_CODE = re.compile(r"`[^`]*`")


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation other than '-' and '_' dropped, spaces to '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading anchors by its text
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The anchors of a page's headings, repeats numbered -1, -2, ... as GitHub numbers them."""
    found: set[str] = set()
    for line in prose_lines(page.read_text(encoding="utf-8")):
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            slug = base = github_slug(heading.group(1))
            n = 0
            while slug in found:
                n += 1
                slug = f"{base}-{n}"
            found.add(slug)
    return found


def relative_links(page: Path) -> list[str]:
    """The link targets of a page that are neither absolute URLs nor inside code."""
    prose = INLINE_CODE.sub("", "\n".join(prose_lines(page.read_text(encoding="utf-8"))))  # links may wrap lines
    return [target for target in LINK.findall(prose) if not re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I)]


def test_a_link_that_wraps_a_line_is_found(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("See [the\nrun folder](../README.md#where) and `[not](code.md)`.\n```\n[nor](fenced.md)\n```\n")
    assert relative_links(page) == ["../README.md#where"]


def test_github_slug_follows_githubs_rules():
    assert github_slug("Do the two maps change alike?") == "do-the-two-maps-change-alike"
    assert github_slug("Checking a reproduction: `iqa-study verify`") == "checking-a-reproduction-iqa-study-verify"
    assert github_slug("Corruption backends, map stores and decoding") == "corruption-backends-map-stores-and-decoding"
    assert github_slug("per_image.csv columns") == "per_imagecsv-columns"


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_relative_links_resolve(page):
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target} (no file {file.relative_to(ROOT) if file.is_relative_to(ROOT) else file})")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target} (no heading #{anchor} in {file.name})")
    assert not broken, f"{page.relative_to(ROOT)}: broken links: {broken}"
