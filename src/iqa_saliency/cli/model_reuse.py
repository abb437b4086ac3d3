"""The models of a sweep's cells in one process (Hydra's basic launcher), loaded and checked once: each keyed by
its whole configuration, the weights files it names and the settings that change a loaded model in place
(iqa_saliency.models.reuse); a cell with another model never gets a cached one."""

from __future__ import annotations

import json
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from ..models.reuse import ModelReuse, is_reused, keep_folded, model_key

if TYPE_CHECKING:
    from ..evaluation.settings import EvaluationModels, Explanation

MODELS = ModelReuse()  # the loaded models, reused by the next cell of this process while their key stays the same


def reused(cfg: DictConfig, role: str, node: DictConfig, load: Callable[[], Any]) -> Any:
    """`load()`, or what it loaded for an earlier cell of this process with the same model configuration, weights
    files and the settings that change a loaded model in place (models.reuse); its models' folded copies kept."""
    key = model_key(OmegaConf.to_container(node, resolve=True), trainer=OmegaConf.to_container(cfg.trainer,
                    resolve=True), channels_last=cfg.channels_last, fold_batchnorm=cfg.fold_batchnorm,
                    allow_untrained_fallback=cfg.allow_untrained_fallback)
    loaded = MODELS.get(role, key, load)
    model = loaded[0][0] if role == "quality" else loaded[0].model
    keep_folded(model)
    return loaded


def check_layers(models: EvaluationModels, explain: Explanation, data: DictConfig) -> None:
    """Refuse a layer method's layer that cannot give a spatial map (probed at the run's input size; for a reused
    model once per method, options and size: the verdict cannot change)."""
    from ..attribution.layer_check import check_layer_method
    from ..models.paq2piq import GlobalScore

    side = next((v for v in (data.get("crop"), data.get("resize")) if isinstance(v, int) and v >= 32), 224)
    if explain.given is None:  # a caller's captum object (the API) explains the layer they chose
        _checked_once(models.classifier.model, explain.method, explain.options, lambda: check_layer_method(
            explain.method, explain.options, models.classifier.model, (side, side)), side)
    if explain.quality_saliency != "local":
        _checked_once(models.quality, explain.quality_saliency, explain.quality_options, lambda: check_layer_method(
            explain.quality_saliency, explain.quality_options, GlobalScore(models.quality), (side, side),
            key="similarity.quality_saliency_options.layer", what="quality model"), side)


_passed: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()  # layer checks passed, per model


def _checked_once(model: Any, method: str, options: dict[str, Any], check: Callable[[], Any], side: int) -> None:
    """Run `check` unless it passed for this reused model, method, options and probe size before."""
    if not is_reused(model):  # the Python API's models: checked each run
        check()
        return
    key = json.dumps([method, options, side], sort_keys=True, default=repr)
    if key in _passed.get(model, set()):
        return
    check()
    _passed.setdefault(model, set()).add(key)
