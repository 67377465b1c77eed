"""Errors that reach the user as one or two plain lines, never a traceback."""


class PcmError(Exception):
    """Base class: ``str(error)`` is what the user reads (at most two lines: problem, then fix)."""

    exit_code = 2


class ConfigError(PcmError):
    """A config file, override or option value is wrong."""


class UnknownComponentError(ConfigError):
    """A component name is not registered."""


class MissingBackendError(ConfigError):
    """A known component whose optional dependencies are not installed."""
