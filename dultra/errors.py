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


def yaml_problem(err: BaseException) -> str:
    """A YAML parse error (or any other) in one line: "line 2, column 1: expected the node
    content, but found '<stream end>'" (PyYAML's message spans five lines)."""
    problem, mark = getattr(err, "problem", None), getattr(err, "problem_mark", None)
    if problem is None:
        return first_line(err)
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark is not None else problem


def one_line(text: str, limit: int = 200) -> str:
    """`text` in one line (whitespace collapsed), cut to `limit` characters with "...": error
    bodies can be whole HTML pages."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
