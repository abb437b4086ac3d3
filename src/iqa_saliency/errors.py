"""Errors a user can cause; each message ends with one sentence that names the fix."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class UserError(Exception):
    """A problem with the user's input or configuration, reported as one clear message."""


class ConfigError(UserError):
    """An invalid configuration value."""


class InputError(ConfigError, ValueError):
    """An input the Python API cannot evaluate right (pixels out of range, NaN, a label the classifier lacks)."""


class WeightsUnavailableError(UserError):
    """Model weights are neither cached nor downloadable."""


class DatasetError(UserError):
    """A dataset that cannot be used as configured."""


class OutputError(UserError):
    """Outputs that cannot be written (a full disk, a read-only folder)."""


def find_in_chain(exc: BaseException, kinds: type | tuple[type, ...]) -> BaseException | None:
    """The first exception of `kinds` in `exc`'s cause/context chain (chains may loop: each is visited once)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kinds):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def find_user_error(exc: BaseException) -> UserError | None:
    """The UserError behind `exc`, also when wrapped (e.g. by Hydra's instantiate)."""
    return find_in_chain(exc, UserError)


def reraise_interrupt(exc: BaseException) -> None:
    """Raise the Ctrl-C or exit hidden behind `exc`, if any.

    A signal handled while compiled code runs (numba's glass_blur, for one) comes back as a SystemError whose cause
    is the KeyboardInterrupt; code that reports per-image errors and goes on must not turn it into a skipped image.
    """
    interrupt = find_in_chain(exc, (KeyboardInterrupt, SystemExit))
    if interrupt is not None:
        raise interrupt


@contextmanager
def exit_on_user_error(code: int = 2, cleanup: Callable[[], object] | None = None) -> Iterator[None]:
    """In an entry point: print a user error as one line on stderr and exit with `code` (after `cleanup`)."""
    try:
        yield
    except Exception as exc:
        user_error = find_user_error(exc)
        if user_error is None:
            raise
        if cleanup is not None:
            cleanup()
        print(f"error: {user_error}", file=sys.stderr)
        sys.exit(code)


class RunFolderError(UserError):
    """A run folder that already holds a run (complete, unfinished, or of another configuration)."""
