"""Before Hydra creates a run or sweep folder: compose the command line's configuration as Hydra will, and check it
against the schema (iqa_saliency.cli.schema). A -m sweep has every cell's configuration checked before the first
cell starts. Hydra's own composition errors (an unknown key, a missing group option, bad override syntax) become
one `error:` line too; everything exits 2 with nothing written.
"""

from __future__ import annotations

import copy
import re
import sys
from typing import Any

from omegaconf import DictConfig, open_dict

from ..errors import ConfigError, exit_on_user_error
from .schema import check_config, config_keys, config_sources, suggest

# Hydra's flags that do not start a run (or change which config is composed): leave those to Hydra alone.
NOT_A_RUN = ("-h", "--help", "--hydra-help", "--version", "-i", "--info", "-c", "--cfg", "-p", "--package",
             "-sc", "--shell-completion", "--experimental-rerun", "-cp", "--config-path", "-cn", "--config-name",
             "-cd", "--config-dir")
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def precheck(argv: list[str], task: str) -> None:
    """In an entry point: refuse the command line's configuration (every cell of a sweep) in one line, exit 2."""
    if any(arg.split("=", 1)[0] in NOT_A_RUN for arg in argv):
        return
    multirun = "-m" in argv or "--multirun" in argv
    overrides = [arg for arg in argv if arg not in ("-m", "--multirun", "--resolve")]
    if any(arg.startswith("-") for arg in overrides):
        return  # a flag Hydra will explain itself
    with exit_on_user_error():
        check_command_line(overrides, task, multirun)


def check_command_line(overrides: list[str], task: str, multirun: bool = False) -> int:
    """Compose `overrides` for `task` (evaluate or train) and check it; with `multirun`, every cell of the sweep.
    Returns the number of configurations checked."""
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    _check_syntax(overrides)
    with initialize_config_module(config_module="iqa_saliency.conf", version_base="1.3"):
        hydra = GlobalHydra.instance().hydra
        with _one_line(task):
            base = hydra.compose_config(task, overrides, run_mode=RunMode.MULTIRUN if multirun else RunMode.RUN)
        if not multirun:
            check_config(base, task)
            return 1
        return _check_cells(base, overrides, task, hydra.config_loader)


def _check_syntax(overrides: list[str]) -> None:
    """Each override parses (Hydra's grammar), or one line names it."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    for override in overrides:
        try:
            parser.parse_override(override)
        except HydraException as exc:
            reason = " ".join(line.strip() for line in str(exc).splitlines()[:1])
            raise ConfigError(f"'{override}' is not a valid override ({reason}). Write key=value; quote values "
                              "with brackets, commas or spaces, e.g. key='a,b'.") from None


def _check_cells(base: DictConfig, overrides: list[str], task: str, loader: Any) -> int:
    """Every job of a basic sweep, as the sweeper will compose it; cells that choose the same config groups share
    one composition (only their key=value overrides differ, applied the way Hydra applies them)."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if base.hydra.sweeper.get("_target_") != BASIC_SWEEPER:
        return 0  # another sweeper's cells are checked as each job starts
    params = [f"{k}={v}" for k, v in (base.hydra.sweeper.get("params") or {}).items()]
    parser = OverridesParser.create(config_loader=loader)
    with _one_line(task):  # the sweeper gets the task's overrides only (Hydra's own are in every job's config)
        parsed = [o for o in parser.parse_overrides(params + overrides) if not o.is_hydra_override()]
        jobs = [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
    composed: dict[tuple[str, ...], DictConfig] = {}
    for job in jobs:
        cell = ",".join(job) or "(no overrides)"
        with _one_line(task, f"sweep cell {cell}: "):
            parsed = parser.parse_overrides(job)
            groups = tuple(o.input_line for o in parsed if loader.repository.group_exists(o.key_or_group))
            if groups not in composed:
                composed[groups] = loader.load_sweep_config(base, list(groups))
                with open_dict(composed[groups]):
                    del composed[groups]["hydra"]  # not checked, and the largest part to copy per cell
            cfg = copy.deepcopy(composed[groups])
            ConfigLoaderImpl._apply_overrides_to_config(
                [o for o in parsed if not loader.repository.group_exists(o.key_or_group)], cfg)
            check_config(cfg, task)
    return len(jobs)


class _one_line:  # noqa: N801  (used as a context manager)
    """Turn Hydra's multi-line composition errors (and schema errors) into one ConfigError line."""

    def __init__(self, task: str, prefix: str = "") -> None:
        self.task, self.prefix = task, prefix

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> bool:
        from hydra.errors import HydraException
        from omegaconf.errors import OmegaConfBaseException

        if exc is None:
            return False
        if isinstance(exc, ConfigError):
            if self.prefix:
                raise ConfigError(self.prefix + str(exc)) from None
            return False
        if isinstance(exc, (HydraException, OmegaConfBaseException)):
            raise ConfigError(self.prefix + hydra_message(exc, self.task)) from None
        return False


def hydra_message(exc: BaseException, task: str) -> str:
    """One line for a Hydra composition error, naming the key or option and the fix."""
    text = str(exc).strip()
    unknown = re.search(r"Could not override '([^']+)'", text)
    if unknown:
        key = unknown.group(1)
        known = sorted(config_keys(task))
        sources = config_sources().get(key)
        if sources:
            return (f"'{key}' is not a key of the chosen configuration; {', '.join(sources)} set it. Choose one of "
                    f"those (e.g. {sources[0]}), or add the key with +{key}=VALUE.")
        return (f"Unknown key '{key}': the configuration has no such key.{suggest(key, known)} Check "
                f"the spelling (`{task}.py --cfg job` lists the keys), or add a new key with +{key}=VALUE.")
    missing = re.search(r"Could not find '([^']+)/([^']+)'", text)
    if missing:
        group, name = missing.groups()
        options = re.findall(r"^\t(\S+)$", text, flags=re.MULTILINE)
        return (f"{group}={name} is not a config of group '{group}'.{suggest(name, options)} Use one of: "
                f"{', '.join(options)}.")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " ".join(lines[:3]) + " Check the override's spelling and syntax (key=value)."


def main_precheck(task: str) -> None:
    """The entry points' call: sys.argv as Hydra will read it."""
    precheck(sys.argv[1:], task)
