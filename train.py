"""Fine-tune a classifier: python train.py dataset=folder dataset.root=PATH [dataset.quality_filter=[Good]].

The same command as `iqa-train`; the work is in iqa_saliency.cli.train.
"""

from iqa_saliency.cli.train import run

if __name__ == "__main__":
    run()
