"""The errors that stop a command (bad config, a broken or locked catalog, a missing tool, a
full or read-only state directory) and the exit code each maps to; imports nothing.
Expected outcomes (a duplicate, a rejected file) are values in `model`, not these.
"""

from __future__ import annotations

EX_OK = 0
EX_FAILED = 1  # the command ran, but some file failed or the library is inconsistent
EX_USAGE = 64
EX_UNAVAILABLE = 69
EX_SOFTWARE = 70
EX_CANTCREAT = 73  # the state directory (or a file in it) cannot be written: read-only
EX_TEMPFAIL = 75
EX_CONFIG = 78  # the unit says RestartPreventExitStatus=78: restarting will not help


class MediasortError(Exception):
    """mediasortd failed."""

    exit_code = EX_SOFTWARE

    def __init_subclass__(cls, exit_code: int | None = None, **kwargs: object) -> None:
        """`class XError(MediasortError, exit_code=EX_...)`; without one, the parent's."""
        super().__init_subclass__(**kwargs)
        if exit_code is not None:
            cls.exit_code = exit_code

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class UsageError(MediasortError, exit_code=EX_USAGE):
    """The command line asks for something that cannot be done (a bad time, no such batch)."""


class ConfigError(MediasortError, exit_code=EX_CONFIG):
    """The configuration is invalid."""


class CatalogError(MediasortError, exit_code=EX_UNAVAILABLE):
    """The catalog database cannot be opened or is broken."""


class LockedError(MediasortError, exit_code=EX_TEMPFAIL):
    """Another mediasortd process is writing to this library."""


class ToolError(MediasortError, exit_code=EX_UNAVAILABLE):
    """A helper program (ExifTool) is missing or broken."""


class StateFullError(MediasortError, exit_code=EX_TEMPFAIL):
    """The state directory's filesystem is full: nothing was lost; free space, run again."""


class StateReadOnlyError(MediasortError, exit_code=EX_CANTCREAT):
    """The state directory cannot be written (read-only filesystem or permissions)."""


class ForeignCatalogError(MediasortError, exit_code=EX_CONFIG):
    """The catalog does not belong to this library (lost, replaced, or new)."""
