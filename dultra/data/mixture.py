"""Training sets made of several tasks, or read from one JSONL artifact.

    load_examples("synthetic-math,synthetic-code", None, "train", limit=20000)
    load_examples("", "prepared/train.jsonl", "train")      # written by `prepare_data`
"""

from __future__ import annotations

from dultra.data.example import Example, read_examples
from dultra.data.registry import load_task
from dultra.errors import ConfigError


def load_examples(tasks: str, path: str | None, split: str, limit: int | None = None) -> list[Example]:
    """Examples of every comma-separated task (each up to `limit`), or of the JSONL file at `path`."""
    if path:
        return read_examples(path)
    names = [t.strip() for t in tasks.split(",") if t.strip()]
    if not names:
        raise ConfigError("no tasks given (and no data file)")
    return [ex for name in names for ex in load_task(name, split, limit=limit)]
