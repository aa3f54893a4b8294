"""Format reward: did the completion put its answer where the task asked?

    format_reward(["x \\\\boxed{3}", "```python\\nf = 1\\n```"], kind=["math", "code"])  -> [1.0, 1.0]

math: 1.0 if the completion has a final answer by the rule of dultra.data.answers (a
complete \\boxed{...} or a non-empty `#### ...` line). code: 1.0 if it has a non-empty
closed ``` code block (more than the correctness reward needs to find a program).
Otherwise 0.0. Never None: the format can always be judged.
"""

from __future__ import annotations

from collections.abc import Sequence

from dultra.data.answers import extract_answer, has_code_block


def per_completion(value: str | Sequence[str], n: int, name: str) -> list[str]:
    """A field given once for the batch or once per completion -> n values."""
    if isinstance(value, str):
        return [value] * n
    if len(value) != n:
        raise ValueError(f"{n} completions but {len(value)} values of {name!r}")
    return list(value)


def format_reward(
    completions: Sequence[str], kind: str | Sequence[str], **_: object
) -> list[float | None]:
    """completions: N texts; kind: "math" | "code", for the batch or per completion."""
    out: list[float | None] = []
    for text, k in zip(completions, per_completion(kind, len(completions), "kind")):
        if k == "math":
            out.append(1.0 if extract_answer(text) is not None else 0.0)
        elif k == "code":
            out.append(1.0 if has_code_block(text) else 0.0)
        else:
            raise ValueError(f"unknown task kind {k!r} (expected 'math' or 'code')")
    return out
