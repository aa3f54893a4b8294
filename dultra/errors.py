"""Errors a user can fix (bad settings, paths, checkpoints). The CLI prints them in one line.

Catch DultraError for all of them. ConfigError, CheckpointError and DataError are also
ValueErrors, so callers can catch bad input the usual way.
"""


class DultraError(Exception):
    """Base of every error caused by the caller's input rather than by a bug."""


class ConfigError(DultraError, ValueError):
    """Settings that cannot work (lengths, strategy parameters, architecture fields)."""


class CheckpointError(DultraError, ValueError):
    """A checkpoint or tokenizer that cannot be loaded as asked."""


class DataError(DultraError, ValueError):
    """A dataset or data file that cannot serve as the task asked for (missing fields, bad rows)."""


def first_line(err: BaseException, default: str | None = None) -> str:
    """The first non-blank line of `err`'s message, for a one-line error (default: its type's name)."""
    return next((line for line in str(err).splitlines() if line.strip()), default or type(err).__name__)
