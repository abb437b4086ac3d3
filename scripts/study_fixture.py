"""Build the stand-in for the original study that tests/study/test_verify.py checks `iqa-study verify` on.

A small MIT-Indoor-like dataset, PaQ-2-PiQ weights and a study checkpoint with seeded random values, and a folder
laid out like the study's repository with test_images/ and mos.csv written by the study's code restated in
tests/helpers/study_reference.py. For the example table in docs/reproducing-the-study.md:

    python scripts/study_fixture.py /tmp/study-fixture
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from helpers.study_reference import build_study_fixture  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="an empty folder to build it in")
    args = parser.parse_args(argv)
    for name, path in build_study_fixture(args.folder).items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
