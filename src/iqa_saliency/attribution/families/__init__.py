"""Model families for layer attribution: which layer to explain by default and how its output becomes a
(B, C, h, w) map. One small module per family registers a `Family`; a model no family claims is handled as a CNN
(its layer4 or last convolution, outputs already (B, C, h, w)).
"""

from __future__ import annotations

from . import convnext, swin, vit  # noqa: F401  (each registers its family)
from .registry import FAMILIES, Family, Match, find_family, register_family

__all__ = ["FAMILIES", "Family", "Match", "find_family", "register_family"]
