"""Parameter objects of one evaluation: how it is explained, what is written, speed options, the models.

What is evaluated and on which inputs (`Cell`, `Inputs`) live in iqa_saliency.data.protocol.

Built once from the configuration (iqa_saliency.cli.evaluate) or by hand (the Python API, the benchmark), then
handed to `run_evaluation` and the Lightning module unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch

from ..attribution.base import AttributionMethod
from ..attribution.given import GivenAttribution
from ..attribution.registry import build_attribution
from ..data.loading import WorkerPool
from ..models.classifier import Classifier
from ..models.paq2piq import PaQ2PiQ, ScoreNormalizer
from ..models.resolution import ModelWeights
from ..models.weights import WeightsIdentity
from .faithfulness import Faithfulness


@dataclass(frozen=True)
class Explanation:
    """Which attribution explains the classifier (and optionally the quality model), and what is compared."""

    method: str = "gradcam"
    options: dict[str, Any] = field(default_factory=dict)
    target: str = "pred"  # pred: the predicted class; label: the true class
    quality_saliency: str = "local"  # local: PaQ-2-PiQ's 20x20 local scores; or a method explaining the global score
    quality_options: dict[str, Any] = field(default_factory=dict)
    quality_map: str = "raw"  # raw | inverted | drop (see evaluation.similarity.select_quality_map)
    # a caller's captum object or function (the Python API, attribution.given): builds the method in place of `method`
    given: Callable[[torch.nn.Module], AttributionMethod] | None = field(default=None, compare=False)
    faithfulness: Faithfulness = field(default_factory=Faithfulness)  # deletion/insertion AUCs (off by default)

    def classifier_factory(self) -> Callable[[torch.nn.Module], AttributionMethod]:
        """Builds the classifier's attribution method for a model."""
        return self.given or partial(build_attribution, self.method, **self.options)

    def quality_factory(self) -> Callable[[torch.nn.Module], AttributionMethod] | None:
        """Builds the method explaining the quality model's global score, or None for the local scores."""
        if self.quality_saliency == "local":
            return None
        return partial(build_attribution, self.quality_saliency, **self.quality_options)


@dataclass(frozen=True)
class Outputs:
    """What the run writes and reuses: the run folder, figures, images, maps, resume and caches."""

    run_dir: str | Path
    figures: int = 8  # three-panel figures for the first N images
    save_maps: bool = True  # False: per_image.csv only, no maps/*.npz
    maps_format: str = "npz"  # npz: one maps/*.npz per image | zarr: one chunked store per process (io.maps)
    resume: bool = False  # finish an interrupted run in run_dir
    clean_cache_dir: str | Path | None = None
    corruption_cache_dir: str | Path | None = None
    config: dict[str, Any] | None = None  # the resolved configuration, recorded and compared on resume
    resume_command: str | None = None  # the command line that finishes this run (printed when it stops early)

    def finish_hint(self) -> str:
        """What to run to finish the run after it stopped early."""
        return self.resume_command or f"resume=true hydra.run.dir={self.run_dir}"


@dataclass(frozen=True)
class Speed:
    """Speed options that keep the numbers (within floating-point tolerance)."""

    channels_last: bool = False  # NHWC memory format for both models
    fold_batchnorm: bool = True  # BatchNorm folded into the convolutions at load
    # DataLoader workers kept across the cells of this process (a sweep's); None: each cell starts its own
    workers: WorkerPool | None = field(default=None, compare=False)


@dataclass(frozen=True)
class EvaluationModels:
    """The loaded models: PaQ-2-PiQ with its weights' identity and score normalisation, and the classifier."""

    quality: PaQ2PiQ
    quality_weights: WeightsIdentity
    classifier: Classifier
    normalizer: ScoreNormalizer = field(default_factory=ScoreNormalizer)
    weights: ModelWeights | None = None  # requested vs resolved weights (None: as loaded, no fallback)

    @property
    def resolved(self) -> ModelWeights:
        """Which weights each model really got: the only source for every output that names weights."""
        return self.weights or ModelWeights.as_loaded(self.quality_weights, self.classifier.weights)


@dataclass
class GivenModels:
    """Models the caller passes in (the Python API) in place of the configured ones."""

    classifier: Classifier | None = None
    quality: tuple[PaQ2PiQ, WeightsIdentity] | None = None
    attribution: GivenAttribution | None = None  # a captum object or function, checked (attribution.given)


# The models' outputs for a batch of [0, 1] images: q_global (B,), q_local (B, 20, 20), probs and logits
# (B, classes), attribution (B, H, W). The benchmark injects a stand-in to measure the host side alone.
Inference = Callable[[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]
