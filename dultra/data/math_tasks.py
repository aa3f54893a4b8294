"""GSM8K and MATH500 rows -> math `Example`s.

GSM8K (`question`, `answer` ending in `#### <final>`): the reference answer is the text
after `####`; `solution` is the worked answer without the `<<48/2=24>>` calculator notes,
ending in the \\boxed{} form the prompt asks for.
MATH500 (`problem`, `answer`, optional `solution`, `subject`, `level`, `unique_id`): the
reference answer is `answer`, or the last \\boxed{} of `solution` when `answer` is absent.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from dultra.data.answers import extract_boxed, extract_hash
from dultra.data.example import Example
from dultra.data.fields import require_fields
from dultra.data.prompts import MATH_SYSTEM
from dultra.errors import DataError

_CALC_NOTE = re.compile(r"<<[^>]*>>")


def gsm8k_examples(rows: Sequence[dict[str, Any]], split: str, task: str = "gsm8k") -> list[Example]:
    require_fields(rows, task, ("question", "answer"))
    out = []
    for i, row in enumerate(rows):
        worked = str(row["answer"])
        final = extract_hash(worked)
        if final is None:
            raise DataError(f"{task}: row {i} has no '#### <final answer>' in its answer field")
        steps = _CALC_NOTE.sub("", worked.rpartition("####")[0]).strip()
        out.append(Example(
            id=f"{task}/{split}/{i}", task=task, kind="math", prompt=str(row["question"]).strip(),
            system=MATH_SYSTEM, answer=final.replace(",", ""),
            solution=f"{steps}\nThe final answer is \\boxed{{{final.replace(',', '')}}}.",
        ))
    return out


def math500_examples(rows: Sequence[dict[str, Any]], split: str, task: str = "math500") -> list[Example]:
    require_fields(rows, task, ("problem",), any_of=(("answer", "solution"),))
    out = []
    for i, row in enumerate(rows):
        solution = row.get("solution")
        answer = row.get("answer")
        if answer is None:
            answer = extract_boxed(str(solution))
            if answer is None:
                raise DataError(f"{task}: row {i} has no 'answer' and no \\boxed{{}} in its solution")
        answer = str(answer).strip()
        meta = {k: row[k] for k in ("subject", "level") if row.get(k) is not None}
        out.append(Example(
            id=f"{task}/{row.get('unique_id') or f'{split}/{i}'}", task=task, kind="math",
            prompt=str(row["problem"]).strip(), system=MATH_SYSTEM, answer=answer,
            solution=str(solution) if solution is not None else f"\\boxed{{{answer}}}", meta=meta,
        ))
    return out
