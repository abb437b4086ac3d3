"""Two adjustments to Hydra 1.3 (pinned below 1.4 in pyproject.toml) that the entry points apply before Hydra runs.

* Group listing: Hydra deep-copies its whole config repository for every group it lists (about 100 copies for
  `--help`, 40 ms each here, most of `--help`'s time). One copy per (config name, overrides) is listed from instead;
  the copy is made for the same reason (not to change the loader's repository) and listing does not change it.
  Groups another entry point owns (train.py's `recipe` for evaluate.py) are left out of `--help` and completion.
* Run mode: before every run Hydra composes the whole configuration once more only to read `hydra.mode` (about
  40% of the time a bad value takes to be reported). None of this project's configs sets it, so it is read from the
  command line (`hydra.mode=...`); with `+experiment=...` (a user's experiment config could set it) Hydra composes.
* Shell completion of values: Hydra completes config groups and keys but offers only a key's current value; the
  keys with a fixed set of values (corruption names, severities, ...) complete to those values.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from hydra.core.object_type import ObjectType

_state: dict[str, Any] = {"hidden": frozenset(), "choices": {}}


def speed_up_hydra(hidden_groups: Iterable[str] = (), value_choices: Mapping[str, Iterable[Any]] | None = None
                   ) -> None:
    """Apply both adjustments for this process (idempotent; the latest entry point's groups and choices count)."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.hydra import Hydra
    from hydra.plugins.completion_plugin import CompletionPlugin

    _state["hidden"] = frozenset(hidden_groups)
    _state["choices"] = {k: [str(v).lower() if isinstance(v, bool) else str(v) for v in values]
                         for k, values in (value_choices or {}).items()}
    if not getattr(ConfigLoaderImpl.get_group_options, "_iqa_patched", False):
        ConfigLoaderImpl.get_group_options = _group_options
    if not getattr(Hydra.get_mode, "_iqa_patched", False):
        Hydra.get_mode = _mode_from_command_line(Hydra.get_mode)
    if not getattr(CompletionPlugin._get_matches, "_iqa_patched", False):
        CompletionPlugin._get_matches = staticmethod(_value_matches(CompletionPlugin._get_matches))


def _group_options(self: Any, group_name: str, results_filter: ObjectType | None = ObjectType.CONFIG,
                   config_name: str | None = None, overrides: list[str] | None = None) -> list[str]:
    key = (config_name, tuple(overrides or ()))
    repos = self.__dict__.setdefault("_iqa_group_repos", {})
    if key not in repos:
        repos[key] = self._parse_overrides_and_create_caching_repo(config_name, list(overrides or ()))[1]
    options = repos[key].get_group_options(group_name, results_filter)
    if group_name == "" and results_filter == ObjectType.GROUP:
        options = [o for o in options if o not in _state["hidden"]]
    return options


_group_options._iqa_patched = True  # type: ignore[attr-defined]


def _value_matches(original: Callable[[Any, str], list[str]]) -> Callable[[Any, str], list[str]]:
    def matches(config: Any, word: str) -> list[str]:
        key, eq, value = word.partition("=")
        choices = _state["choices"].get(key.lstrip("+~"))
        if eq and choices is not None:
            return [f"{key}={c}" for c in choices if c.startswith(value)]
        return original(config, word)

    matches._iqa_patched = True  # type: ignore[attr-defined]
    return matches


def _mode_from_command_line(original: Callable[..., Any]) -> Callable[..., Any]:
    def get_mode(self: Any, config_name: str | None, overrides: list[str]) -> Any:
        keys = [o.split("=", 1)[0].lstrip("+~") for o in overrides]
        if any(k == "hydra.mode" or k.endswith("experiment") for k in keys):
            return original(self, config_name, overrides)
        return None  # as Hydra's own answer for a configuration without hydra.mode: -m decides

    get_mode._iqa_patched = True  # type: ignore[attr-defined]
    return get_mode
