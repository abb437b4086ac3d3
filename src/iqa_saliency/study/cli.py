"""`iqa-study verify` (= python -m iqa_saliency.study verify): the verification table of a reproduction."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..errors import exit_on_user_error
from .published import IMAGE_SETS
from .table import FAIL, markdown, write_table
from .verify import VerifyOptions, verify


def parser() -> argparse.ArgumentParser:
    """The command line: one sub-command, verify."""
    p = argparse.ArgumentParser(prog="iqa-study", description="Compare this project with the original study's "
                                "published numbers.")
    sub = p.add_subparsers(dest="command", required=True)
    v = sub.add_parser("verify", help="re-make and re-score the study's published images; one table, study vs here",
                       description="Writes verify.csv and verify.md to --out; exits 1 when a row fails.")
    v.add_argument("--study", type=Path, required=True, help="a clone of the study's repository (its published files)")
    v.add_argument("--paq2piq", type=Path, help="PaQ-2-PiQ weights, RoIPoolModel-fit.10.bs.120.pth (without them "
                   "the MOS and category rows are not run)")
    v.add_argument("--out", type=Path, required=True, help="folder for verify.csv and verify.md")
    v.add_argument("--checkpoint", type=Path, help="the study's classifier checkpoint (best_model.ckpt)")
    v.add_argument("--mit-indoor", type=Path, help="MIT Indoor Scenes (<class>/*.jpg or Images/<class>/*.jpg)")
    v.add_argument("--sweep", type=Path, help="a finished +experiment=original_study sweep folder (its summary.csv)")
    v.add_argument("--clive", type=Path, help="CLIVE's Images/: re-fit the normalisation the study's categories used")
    v.add_argument("--images", default=IMAGE_SETS[0], choices=IMAGE_SETS, help="which published set (default: the "
                   "repository's, the kitchen image; the Report's is the buffet image)")
    v.add_argument("--mos-tolerance", type=float, default=0.01, help="largest raw MOS difference that passes")
    v.add_argument("--dropout-passes", type=int, default=2000, help="dropout-on passes the study's probabilities "
                   "are held against")
    v.add_argument("--seed", type=int, default=0, help="seed of the random corruptions and the dropout passes")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the command; 0 when no row fails, 1 when one does, 2 on a user error."""
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    options = VerifyOptions(study=args.study, paq2piq=args.paq2piq, out=args.out, mit_indoor=args.mit_indoor,
                            checkpoint=args.checkpoint, sweep=args.sweep, clive=args.clive, image_set=args.images,
                            mos_tolerance=args.mos_tolerance, dropout_passes=args.dropout_passes, seed=args.seed)
    with exit_on_user_error():
        rows = verify(options)
        csv_path, md_path = write_table(rows, args.out)
    print(markdown(rows), end="")
    failed = [r for r in rows if r.verdict == FAIL]
    print(f"\nWritten {csv_path} and {md_path}.")
    if failed:
        print(f"FAILED: {len(failed)} row(s): " + "; ".join(f"{r.check} {r.item}" for r in failed), file=sys.stderr)
        return 1
    return 0


def run() -> None:
    """Console script entry point."""
    sys.exit(main())
