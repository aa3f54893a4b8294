"""Reading a program, its tests or its input from a local file, for both `run` commands.

    read_text("solution.py", "program")   # ValueError in one line for a missing or binary file
"""

from __future__ import annotations


def read_text(path: str, what: str) -> str:
    """The UTF-8 text of the file at `path`; ValueError, in one line naming `what` and `path`,
    for a missing, unreadable or binary file."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as err:
        raise ValueError(f"cannot read {what} {path}: {err.strerror or err}") from None
    except UnicodeDecodeError:
        hint = ": give the Python source" if what in ("program", "tests") else ""
        raise ValueError(f"{what} {path} is not UTF-8 text{hint}") from None
