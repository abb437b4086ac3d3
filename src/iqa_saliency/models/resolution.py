"""Which weights each model of a run really got: the one record behind the banner, summary.json, per_image.csv,
the figures and the dashboard config.

A model's weights are *requested* by the configuration and *resolved* when it loads. With
allow_untrained_fallback=true an unavailable download may be replaced by untrained weights, but only weights the
user did not name: a published release the project refers to by name (a torchvision weights enum, the PaQ-2-PiQ
release URL). A checkpoint file or URL the user gave is never replaced: its failure stops the run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from ..errors import WeightsUnavailableError, find_user_error
from .weights import UNTRAINED, WeightsIdentity

log = logging.getLogger(__name__)
Model = TypeVar("Model")

QUALITY = "quality"
CLASSIFIER = "classifier"
ROLE_NAMES = {QUALITY: "quality model (PaQ-2-PiQ)", CLASSIFIER: "classifier"}
_shown: set[str] = set()  # the fallback banners this process has shown


@dataclass(frozen=True)
class WeightsRequest:
    """What the configuration asks one model to load: a description, and whether the user named the file."""

    role: str  # QUALITY or CLASSIFIER
    requested: str  # e.g. "resnet18:IMAGENET1K_V1", a checkpoint path or URL, or "untrained"
    named: bool  # a checkpoint file or URL the user gave: never replaced by a fallback
    key: str  # the config key that names these weights


def quality_request(checkpoint: str | None, pretrained: bool, releases: tuple[str, ...] = ()) -> WeightsRequest:
    """The quality model's request; `releases`: the published URLs it may fall back from."""
    if not pretrained:
        return WeightsRequest(QUALITY, UNTRAINED, False, "quality.checkpoint")
    return WeightsRequest(QUALITY, str(checkpoint), str(checkpoint) not in releases, "quality.checkpoint")


def classifier_request(arch: str, weights: str | None, checkpoint: str | None, pretrained: bool) -> WeightsRequest:
    """The classifier's request: a checkpoint (named, used whatever `pretrained` says), a weights enum, or none."""
    if checkpoint:
        return WeightsRequest(CLASSIFIER, str(checkpoint), True, "classifier.checkpoint")
    if not pretrained or not weights:
        return WeightsRequest(CLASSIFIER, UNTRAINED, False, "classifier.weights")
    return WeightsRequest(CLASSIFIER, f"{arch}:{weights}", False, "classifier.weights")


@dataclass(frozen=True)
class ResolvedWeights:
    """A model's requested weights and those it got; `fallback` is why untrained weights replaced them."""

    request: WeightsRequest
    identity: WeightsIdentity
    fallback: str | None = None

    @property
    def untrained(self) -> bool:
        return self.identity.name == UNTRAINED

    def as_dict(self) -> dict[str, Any]:
        return {**self.identity.as_dict(), "requested": self.request.requested, "untrained": self.untrained,
                "fallback": self.fallback}


@dataclass(frozen=True)
class ModelWeights:
    """The resolved weights of a run's two models: every output that names weights reads them here."""

    quality: ResolvedWeights
    classifier: ResolvedWeights

    @classmethod
    def as_loaded(cls, quality: WeightsIdentity, classifier: WeightsIdentity) -> ModelWeights:
        """For models built by hand (the benchmark, tests): requested = what was loaded, no fallback."""
        return cls(ResolvedWeights(WeightsRequest(QUALITY, quality.name, False, "quality.checkpoint"), quality),
                   ResolvedWeights(WeightsRequest(CLASSIFIER, classifier.name, False, "classifier.checkpoint"),
                                   classifier))

    def roles(self) -> list[ResolvedWeights]:
        return [self.quality, self.classifier]

    @property
    def untrained(self) -> bool:
        return any(r.untrained for r in self.roles())

    def summary(self) -> dict[str, Any]:
        """summary.json's "weights": each model's request and resolution, and whether any ran untrained."""
        return {QUALITY: self.quality.as_dict(), CLASSIFIER: self.classifier.as_dict(), "untrained": self.untrained,
                "fell_back": [r.request.role for r in self.roles() if r.fallback]}

    def columns(self) -> dict[str, str]:
        """per_image.csv's weights columns: the name of the weights each model ran with ("untrained")."""
        return {"quality_weights": self.quality.identity.name, "classifier_weights": self.classifier.identity.name}

    def dashboard(self) -> dict[str, Any]:
        """The dashboard config's weights keys, from what ran (not from what was configured)."""
        return {**self.columns(), "pretrained": not self.untrained, "untrained": self.untrained}

    def figure_mark(self) -> str | None:
        """The warning a figure carries when a model ran untrained, else None."""
        names = [ROLE_NAMES[r.request.role] for r in self.roles() if r.untrained]
        if not names:
            return None
        return f"UNTRAINED weights ({', '.join(names)}): the maps show no learned behaviour"

    def banner(self) -> str | None:
        """The console banner naming every model that fell back to untrained weights, else None."""
        fell = [r for r in self.roles() if r.fallback]
        if not fell:
            return None
        line = "=" * 78
        body = [f"{ROLE_NAMES[r.request.role]}: {r.request.requested} unavailable ({r.fallback}) -> UNTRAINED"
                for r in fell]
        return "\n".join([line, "OFFLINE (allow_untrained_fallback=true): running with UNTRAINED weights; every "
                          "output is marked 'untrained'.", *body, line])

    def log(self) -> None:
        """Say on the console which weights each model runs with (a banner for every fallback)."""
        for r in self.roles():
            sha = f" (sha256 {r.identity.sha256[:16]}…)" if r.identity.sha256 else ""
            log.info("%s weights: %s%s", ROLE_NAMES[r.request.role], r.identity.name, sha)
        banner = self.banner()
        if banner and banner in _shown:  # a sweep's cells in one process: the banner in full once
            log.warning("OFFLINE: running with UNTRAINED weights, as for the cells before (see the banner above).")
        elif banner:
            _shown.add(banner)
            log.warning("\n%s", banner)


def as_given(role: str, identity: WeightsIdentity) -> ResolvedWeights:
    """A model the caller passed in (the Python API): what it holds is what was asked for."""
    return ResolvedWeights(WeightsRequest(role, identity.name, True, role), identity)


def load_with_fallback(request: WeightsRequest, load: Callable[[], Model], load_untrained: Callable[[], Model],
                       identity: Callable[[Model], WeightsIdentity], allow_fallback: bool
                       ) -> tuple[Model, ResolvedWeights]:
    """Load one model; with `allow_fallback`, unavailable weights the user did not name become untrained ones.

    Weights the user named (a checkpoint file or URL) are never replaced: their failure is raised as one line.
    """
    try:
        model = load()
    except Exception as exc:
        error = find_user_error(exc)
        if not allow_fallback or not isinstance(error, WeightsUnavailableError):
            raise
        if request.named:
            raise WeightsUnavailableError(
                f"{error} allow_untrained_fallback=true never replaces weights you named ({request.key}="
                f"{request.requested}): fix {request.key}, or leave it unset to allow the fallback."
            ) from exc
        model = load_untrained()
        return model, ResolvedWeights(request, identity(model), fallback=str(error))
    return model, ResolvedWeights(request, identity(model))
