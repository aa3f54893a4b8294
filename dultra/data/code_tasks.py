"""HumanEval, MBPP and APPS rows -> code `Example`s with sandbox-runnable `CodeTest`s.

- HumanEval (`task_id`, `prompt`, `canonical_solution`, `test`, `entry_point`): one
  "assert" test, the dataset's `check` function called on the entry point, so the pass
  fraction is 0 or 1 as in pass@1. `code_prefix` is the prompt before the entry point's
  `def` (imports and helper functions the stub relies on).
- MBPP (`task_id`, `text` or `prompt`, `test_list`, optional `code`, `test_setup_code` /
  `test_imports`): one "assert" test per entry of `test_list`. The prompt shows them all, as
  the benchmark's does, except in the train split: there it shows the first (it fixes the
  function's name and call), since a policy rewarded on asserts it can read learns to answer
  them from a lookup table.
- APPS (`problem_id`, `question`, `input_output` JSON, optional `starter_code`,
  `solutions`, `difficulty`): "io" tests from the inputs/outputs, or, for call-based
  problems (`fn_name`), one "assert" test per case calling the function (a LeetCode-style
  `class Solution` method is accepted). Rows without any test case are skipped (APPS
  has some).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from dultra.data.example import CodeTest, Example
from dultra.data.fields import first_present, require_fields
from dultra.data.prompts import CODE_SYSTEM, apps_prompt, humaneval_prompt, mbpp_prompt
from dultra.errors import DataError


def fenced(code: str) -> str:
    return f"```python\n{code.rstrip()}\n```"


def humaneval_examples(rows: Sequence[dict[str, Any]], split: str, task: str = "humaneval") -> list[Example]:
    require_fields(rows, task, ("task_id", "prompt", "test", "entry_point"))
    out = []
    for row in rows:
        stub, entry = str(row["prompt"]), str(row["entry_point"])
        found = re.search(rf"^def {re.escape(entry)}\s*\(", stub, flags=re.MULTILINE)
        if found is None:
            raise DataError(f"{task}: {row['task_id']}: the prompt does not define {entry}()")
        test = CodeTest("assert", source=f"{row['test'].rstrip()}\n\n\ncheck({entry})\n")
        canonical = row.get("canonical_solution")
        out.append(Example(
            id=str(row["task_id"]), task=task, kind="code", prompt=humaneval_prompt(stub),
            system=CODE_SYSTEM, tests=(test,), code_prefix=stub[: found.start()],
            solution=fenced(stub + canonical) if canonical is not None else None,
            meta={"entry_point": entry},
        ))
    return out


def mbpp_examples(rows: Sequence[dict[str, Any]], split: str, task: str = "mbpp") -> list[Example]:
    require_fields(rows, task, ("task_id", "test_list"), any_of=(("text", "prompt"),))
    out = []
    for row in rows:
        for field in ("test_list", "test_imports"):  # a string would be read as one test per character
            if row.get(field) is not None and not isinstance(row[field], list):
                raise DataError(f"{task}: task {row['task_id']}: {field} must be a list of strings, got "
                                f"{type(row[field]).__name__}")
        asserts = [str(t) for t in row["test_list"] if str(t).strip()]
        if not asserts:
            raise DataError(f"{task}: task {row['task_id']} has an empty test_list")
        imports = row.get("test_imports") or []
        setup = "\n".join([*map(str, imports), str(row.get("test_setup_code") or "")]).strip()
        tests = tuple(CodeTest("assert", source=f"{setup}\n{a}\n" if setup else f"{a}\n") for a in asserts)
        code = row.get("code")
        out.append(Example(
            id=f"{task}/{row['task_id']}", task=task, kind="code",
            prompt=mbpp_prompt(str(first_present(row, ("text", "prompt"))),
                               asserts[:1] if split == "train" else asserts),
            system=CODE_SYSTEM, tests=tests, solution=fenced(str(code)) if code else None,
        ))
    return out


# Runs after the candidate program; json round trips turn tuples into lists on both sides.
_CALL_TEST = """
import json as _json

def _norm(value):
    try:
        return _json.loads(_json.dumps(value))
    except (TypeError, ValueError):
        return value

_fn = globals().get({name!r})
if _fn is None:
    _fn = getattr(Solution(), {name!r})
_got = _norm(_fn(*_json.loads({args!r})))
_want = _json.loads({want!r})
assert _got == _want or [_got] == _want, (_got, _want)
"""


def _text(value: Any) -> str:
    """APPS stores some stdin/stdout cases as lists of lines."""
    return "\n".join(map(str, value)) if isinstance(value, list) else str(value)


def apps_tests(io: dict[str, Any]) -> tuple[CodeTest, ...]:
    inputs, outputs = io.get("inputs") or [], io.get("outputs") or []
    if len(inputs) != len(outputs):
        raise DataError(f"APPS input_output has {len(inputs)} inputs but {len(outputs)} outputs")
    name = io.get("fn_name")
    if name:
        return tuple(
            CodeTest("assert", source=_CALL_TEST.format(name=name, args=json.dumps(i), want=json.dumps(o)))
            for i, o in zip(inputs, outputs)
        )
    return tuple(CodeTest("io", stdin=_text(i), stdout=_text(o)) for i, o in zip(inputs, outputs))


def apps_examples(rows: Sequence[dict[str, Any]], split: str, task: str = "apps") -> list[Example]:
    require_fields(rows, task, ("problem_id", "question", "input_output"))
    out = []
    for row in rows:
        raw = row["input_output"]
        try:
            io = json.loads(raw) if isinstance(raw, str) and raw.strip() else (raw or {})
        except json.JSONDecodeError as err:
            raise DataError(f"{task}: problem {row['problem_id']}: input_output is not JSON ({err.msg})") from None
        if not isinstance(io, dict):
            raise DataError(f"{task}: problem {row['problem_id']}: input_output must be a JSON object with inputs "
                            f"and outputs, got {type(io).__name__}")
        tests = apps_tests(io)
        if not tests:
            continue
        solutions = row.get("solutions")
        if isinstance(solutions, str):
            try:
                solutions = json.loads(solutions) if solutions.strip() else []
            except json.JSONDecodeError as err:
                raise DataError(f"{task}: problem {row['problem_id']}: solutions is not JSON ({err.msg})") from None
        if solutions and not (isinstance(solutions, list) and all(isinstance(s, str) for s in solutions)):
            raise DataError(f"{task}: problem {row['problem_id']}: solutions must be a JSON list of programs")
        out.append(Example(
            id=f"{task}/{split}/{row['problem_id']}", task=task, kind="code",
            prompt=apps_prompt(str(row["question"]), str(row.get("starter_code") or ""), io.get("fn_name")),
            system=CODE_SYSTEM, tests=tests,
            solution=fenced(solutions[0]) if solutions else None,
            meta={k: row[k] for k in ("difficulty", "url") if row.get(k) is not None},
        ))
    if not out:
        raise DataError(f"{task}: no row of split '{split}' has any test case")
    return out
