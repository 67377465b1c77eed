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


class OutputError(PcmError):
    """The run cannot write where it was told to (missing, read-only or full folder)."""


WRITE_FIX = "Fix: free space there or point train.output_dir (and tracking.uri) at a writable folder"


def reason(exc: BaseException) -> str:
    """The operating system's words for a failed write: ``No space left on device``, ``Read-only file system``..."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text.split("I/O error: ")[-1][:200]  # safetensors: "Error while serializing: I/O error: <reason>"
