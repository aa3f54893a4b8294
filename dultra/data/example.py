"""The task record every loader returns, and its JSONL form.

    from dultra.data import load_task, write_examples, read_examples
    write_examples(load_task("synthetic-math", "train", limit=1000), "train.jsonl")
    examples = read_examples("train.jsonl")

An `Example` is what one GRPO prompt needs: the chat messages to send, and what the
rewards check the completion against (a reference answer for math, unit tests for code).
The JSONL form is one `Example.to_dict()` per line, so pipeline steps can pass a task as a
plain artifact.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from dultra.errors import DataError

Kind = Literal["math", "code"]
KINDS: tuple[str, ...] = ("math", "code")


@dataclass(frozen=True)
class CodeTest:
    """One unit test of a code task; the sandbox runs each test in a fresh interpreter.

    kind "assert": `source` is Python run after the program (same module); the test
    passes if the whole script exits with status 0 in time.
    kind "io": the program runs with `stdin` as standard input; the test passes if its
    standard output equals `stdout` up to trailing whitespace on each line and blank
    lines at the end.
    """

    kind: Literal["assert", "io"]
    source: str = ""
    stdin: str = ""
    stdout: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("assert", "io"):
            raise DataError(f"unknown code test kind {self.kind!r} (expected 'assert' or 'io')")
        if self.kind == "assert" and not self.source.strip():
            raise DataError("an 'assert' code test needs non-empty source")

    def to_dict(self) -> dict[str, str]:
        if self.kind == "assert":
            return {"kind": "assert", "source": self.source}
        return {"kind": "io", "stdin": self.stdin, "stdout": self.stdout}

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> CodeTest:
        try:
            return cls(**{k: row[k] for k in row if k in ("kind", "source", "stdin", "stdout")})
        except TypeError as err:  # missing "kind"
            raise DataError(f"bad code test {row!r}: {err}") from None


@dataclass(frozen=True)
class Example:
    """One prompt of a task, with what its completions are scored against.

    Math examples carry `answer`; code examples carry `tests` (and maybe `code_prefix`).
    """

    id: str  # stable and unique within the task, e.g. "gsm8k/test/17"
    task: str  # registry name of the task ("gsm8k", "synthetic-code", ...)
    kind: Kind  # which correctness reward applies
    prompt: str  # the user message (question plus task instructions)
    system: str = ""  # system message; "" sends the user message alone
    answer: str | None = None  # math: the reference final answer, as math-verify reads it
    tests: tuple[CodeTest, ...] = ()  # code: unit tests the extracted program must pass
    code_prefix: str = ""  # code: source put before the extracted program (HumanEval imports)
    solution: str | None = None  # a reference completion in the asked format (None if unknown)
    meta: dict[str, Any] = field(default_factory=dict)  # provenance (subject, level, ...)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise DataError(f"example {self.id}: kind must be one of {KINDS}, got {self.kind!r}")
        if not self.prompt.strip():
            raise DataError(f"example {self.id}: empty prompt")
        if self.answer is not None and not isinstance(self.answer, str):
            raise DataError(f"example {self.id}: answer must be a string or a number, got {self.answer!r}")
        if self.kind == "math" and (self.answer is None or not self.answer.strip()):  # "0" is an answer
            raise DataError(f"example {self.id}: a math example needs a reference answer")
        if self.kind == "code" and not self.tests:
            raise DataError(f"example {self.id}: a code example needs at least one test")

    def messages(self) -> list[dict[str, str]]:
        """Chat messages for the tokenizer's chat template (system first when present)."""
        turns = [{"role": "system", "content": self.system}] if self.system else []
        return [*turns, {"role": "user", "content": self.prompt}]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "task": self.task, "kind": self.kind, "prompt": self.prompt,
            "system": self.system, "answer": self.answer,
            "tests": [t.to_dict() for t in self.tests], "code_prefix": self.code_prefix,
            "solution": self.solution, "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> Example:
        missing = [k for k in ("id", "task", "kind", "prompt") if k not in row]
        if missing:
            raise DataError(f"not an example record (missing {', '.join(missing)}): keys {sorted(row)}")
        return cls(
            id=str(row["id"]), task=row["task"], kind=row["kind"], prompt=row["prompt"],
            system=row.get("system") or "", answer=_answer_text(row.get("answer")),
            tests=tuple(CodeTest.from_dict(t) for t in row.get("tests") or ()),
            code_prefix=row.get("code_prefix") or "", solution=row.get("solution"),
            meta=dict(row.get("meta") or {}),
        )


def _answer_text(answer: Any) -> Any:
    """A JSON number answer (`"answer": 16`) as the text math-verify reads; anything else as is.
    A float is written out in full: math-verify reads "1e-05" as 1*e - 5 (Euler's e)."""
    if isinstance(answer, float):
        return format(Decimal(repr(answer)), "f")
    if isinstance(answer, int) and not isinstance(answer, bool):
        return str(answer)
    return answer


def write_examples(examples: Iterable[Example], path: str | Path) -> Path:
    """Write one JSON object per line (UTF-8); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for ex in examples:
            f.write(json.dumps(ex.to_dict(), ensure_ascii=False) + "\n")
    return path


def read_examples(path: str | Path) -> list[Example]:
    """Read a file written by `write_examples`; errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no examples file at {path}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:  # a Parquet file, say
        raise DataError(f"{path} is not text: expected a JSONL file of examples (as `prepare_data` writes); "
                        "a dataset's own files go to --data with its --task") from None
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append(Example.from_dict(json.loads(line)))
        except (json.JSONDecodeError, DataError) as err:
            raise DataError(f"{path}:{n}: {err}") from None
    return out
