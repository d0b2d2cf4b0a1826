"""Errors that the CLI turns into a one-line message and exit status 2.

Every error here names *where* the problem is (a file and line, a config key, a
model folder), so that a user can fix the input without reading a traceback.
"""

from __future__ import annotations


class RLHFError(Exception):
    """Base class for user-facing errors (bad input, bad config, bad model folder)."""


class ConfigError(RLHFError):
    """A config file or override is invalid; the message names the key."""


class DataError(RLHFError):
    """A data file is malformed; the message names the file, the line and the field."""

    def __init__(self, message: str, path: object = None, line: int | None = None, field: str | None = None):
        self.path, self.line, self.field = path, line, field
        where = []
        if path is not None:
            where.append(str(path))
        if line is not None:
            where.append(f"line {line}")
        if field is not None:
            where.append(f"field '{field}'")
        super().__init__(f"{': '.join([', '.join(where), message]) if where else message}")


class ModelLoadError(RLHFError):
    """A model name or folder cannot be loaded as asked."""


class HubUnreachableError(ModelLoadError):
    """A hub id was given, the hub did not answer within seconds, and no cached copy exists."""


class NumericError(RLHFError):
    """A NaN or inf appeared in a reward, loss or gradient."""


class DiskSpaceError(RLHFError):
    """Too little free space for a checkpoint or model folder; nothing was written."""
