"""Errors a user can cause; each message ends with one sentence that names the fix."""


class UserError(Exception):
    """A problem with the user's input or configuration, reported as one clear message."""


class ConfigError(UserError):
    """An invalid configuration value."""


class WeightsUnavailableError(UserError):
    """Model weights are neither cached nor downloadable."""


class DatasetError(UserError):
    """A dataset that cannot be used as configured."""
