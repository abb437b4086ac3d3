"""Optional dependencies behind pip extras, imported only when a model that needs them is asked for."""

from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import ConfigError

ZOO_EXTRA = "zoo"


def require(module: str, what: str, extra: str = ZOO_EXTRA) -> ModuleType:
    """Import `module`, or raise a one-line ConfigError saying which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(f"{what} needs the '{extra}' extra ({module} is not installed). Install it with: "
                          f"pip install 'iqa-saliency[{extra}]'.") from exc
