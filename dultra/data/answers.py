"""Where the answer sits in a completion: \\boxed{...}, `#### ...`, or a ```python block.

    extract_answer("... so 19 - 3 = 16.\\n#### 16")          -> "16"
    extract_answer("the area is \\boxed{\\frac{1}{2}}.")     -> "\\frac{1}{2}"
    extract_code("Here:\\n```python\\ndef f(): ...\\n```")   -> "def f(): ..."

Rule for math (the rewards rely on it): the argument of the **last** `\\boxed{...}` wins;
without a complete box, the text after the **last** `####` up to the end of its line;
otherwise there is no answer. Nothing else (last number in the text, "The answer is")
counts, so that the format reward and the correctness reward agree.
"""

from __future__ import annotations

import re

_BOXED = re.compile(r"\\boxed\s*\{")
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:\n[ \t]*```|```)", re.DOTALL)


def extract_boxed(text: str) -> str | None:
    """Argument of the last complete \\boxed{...} (braces balanced), or None."""
    found = None
    for match in _BOXED.finditer(text):
        depth, start = 1, match.end()
        for i in range(start, len(text)):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
                if depth == 0:
                    found = text[start:i].strip()
                    break
    return found


def extract_hash(text: str) -> str | None:
    """Text after the last `####` up to the end of its line, or None if absent or empty."""
    head, sep, tail = text.rpartition("####")
    if not sep:
        return None
    answer = tail.strip().split("\n", 1)[0].strip()
    return answer or None


def extract_answer(text: str) -> str | None:
    """The completion's final answer: last \\boxed{} first, else last `####` (module doc)."""
    boxed = extract_boxed(text)
    return boxed if boxed else extract_hash(text)


def extract_code(text: str) -> str | None:
    """Body of the first closed ```python block (any closed ``` block if none is python).

    Returns None when the completion has no closed code block: code that ran out of tokens
    inside its fence is not executed.
    """
    blocks = [(lang.lower(), body) for lang, body in _FENCE.findall(text)]
    for lang, body in blocks:
        if lang in ("python", "py", "python3") and body.strip():
            return body
    for _, body in blocks:
        if body.strip():
            return body
    return None
