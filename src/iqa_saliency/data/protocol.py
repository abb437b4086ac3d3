"""The protocol of one evaluation cell: what is evaluated (`Cell`) and how images become model inputs (`Inputs`).

Parameter objects shared by the dataset (data.pairs) and the evaluation (evaluation.cell, evaluation.module);
built once from the configuration (iqa_saliency.cli.evaluate) or by hand (the Python API, the benchmark).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Cell:
    """One cell of the grid: a corruption at a severity (0 = clean), seeded per image from `seed`."""

    corruption: str
    severity: int
    seed: int = 0


@dataclass(frozen=True)
class Inputs:
    """How images become model inputs: resize the shorter side, centre-crop, when and where to corrupt, batching."""

    resize: int | None = 256
    crop: int | None = 224
    corrupt_at: str = "crop"  # crop: resize, crop, corrupt (ImageNet-C); full_size: corrupt, then crop (the study)
    small: str = "upscale"  # a side below the crop: upscale to it | pad: black borders as CenterCrop (the study)
    max_pixels: int | None = 50_000_000  # an image over this many pixels after resize/crop is skipped
    batch_size: int = 8
    num_workers: int = 2
    save_images: bool = False  # also write every corrupted input as a lossless PNG
    # numpy: imagecorruptions in the DataLoader workers | torch: batched on the trainer's device in the evaluation
    # step (corruption.backends.choose_backend says which really runs a cell)
    corruption_backend: str = "numpy"
