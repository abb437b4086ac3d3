"""Evaluate one (corruption, severity) cell: python evaluate.py corruption=motion_blur severity=2.

The same command as `iqa-evaluate`; the work is in iqa_saliency.cli.evaluate.
"""

from iqa_saliency.cli.evaluate import run

if __name__ == "__main__":
    run()
