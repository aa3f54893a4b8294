"""Where the answer sits in a completion: \\boxed{...}, `#### ...`, or a ```python block.

    extract_answer("... so 19 - 3 = 16.\\n#### 16")          -> "16"
    extract_answer("the area is \\boxed{\\frac{1}{2}}.")     -> "\\frac{1}{2}"
    extract_code("Here:\\n```python\\ndef f(): ...\\n```")   -> "def f(): ..."

Rule for math (the rewards rely on it): the argument of the **last** `\\boxed{...}` wins;
without a complete box, the text after the **last** `####` up to the end of its line
(markdown bold stripped; a markdown heading such as `#### Step 1` over more text is passed
over); otherwise there is no answer. Nothing else (last number in the text, "The answer
is") counts, so that the format reward and the correctness reward agree.
`plain_number` reads "72 dollars" as 72 for the correctness reward.

Rule for code: read as the reference's evaluation reads it (`extract_code`), so that pass@1
compares with its figures; the format reward asks for more, a closed block (`has_code_block`).
"""

from __future__ import annotations

import math
import re
import textwrap

_BOXED = re.compile(r"\\boxed\s*\{")
_HASH = re.compile(r"#{4,}[ \t]*(?:\r?\n)?([^\n]*)")  # a `####` marker and the rest of its line (or the next)
_WORD = re.compile(r"[A-Za-z]{2}")  # what a markdown heading starts with
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:\n[ \t]*```|```)", re.DOTALL)
_OPEN_FENCE = re.compile(r"```[ \t]*[A-Za-z0-9_+-]*[^\n]*\n")
# A number as graders read one, once LaTeX dressing is gone ("\text{5 hours}", "30^\circ", "30°",
# "\$1.25", "25\%", "1,\!000", "18~\mathrm{km/h}"): "(25)", "x = 25", "- 5", "72 dollars",
# "12 inches^2", and a fraction in lowest terms ("\frac{3}{2}", "\frac54", "-1/2"). An
# expression around it ("7 - 2", "|5|", "3 = 5", "2, 3", "5x", "2^{10}", "\frac{50}{2}") does
# not match: it leaves work undone.
_UNWRAP = re.compile(r"\\(?:text|mbox|mathrm|textbf|mathbf)\s*\{([^{}]*)\}")
_DRESSING = re.compile(r"\\[!,;: ]|\^\s*\{?\s*\\circ\s*\}?|\\degree\b|°|\\?[$%]")
_UNSIGNED = r"\d+(?:,\d{3})*(?:\.\d+)?|\.\d+"  # "72", "1,000.5", ".5"
# \frac{3}{2}, \dfrac32, 3/2: numerator and denominator in groups num* / den*, at most 20 digits
_FRACTION = (r"\\[dt]?frac\s*(?:\{\s*(?P<nsign>[+-]?)\s*(?P<num>\d{1,20})\s*\}|(?P<num1>\d))"
             r"\s*(?:\{\s*(?P<den>\d{1,20})\s*\}|(?P<den1>\d))|(?P<num2>\d{1,20})\s*/\s*(?P<den2>\d{1,20})")
_PLAIN_NUMBER = re.compile(
    rf"(?:[A-Za-z]\s*=\s*)?\(?\s*(?P<sign>[+-]?)\s*(?:(?P<number>{_UNSIGNED})|{_FRACTION})\s*\)?"
    r"(?:\s+[A-Za-z][A-Za-z ./]*(?:\^\{?\d\}?)?)?\.?"
)


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
    """Text after the last `####` up to the end of its line, or None if absent or empty.

    Markdown is read as such: bold (`#### **72**`, `**#### 72**`) and a heading's closing
    hashes (`#### 72 ####`) are stripped, and a line that starts with a word and has text
    after it (`#### Step 1: add` over its working, `#### Check` after the answer) is a
    heading, not an answer, and is passed over. A word that ends the completion (`#### odd`)
    and a letter alone (`#### C`, `#### x = 5`) are answers; so is the line after a bare `####`.
    """
    for match in reversed(list(_HASH.finditer(text))):
        answer = match[1].strip(" \t\r*#")
        if answer and not (_WORD.match(answer) and text[match.end():].strip()):
            return answer
    return None


def extract_answer(text: str) -> str | None:
    """The completion's final answer: last \\boxed{} first, else last `####` (module doc)."""
    boxed = extract_boxed(text)
    return boxed if boxed else extract_hash(text)


def plain_number(answer: str) -> str | None:
    """"72 dollars", "\\text{5 hours}", "$18.", "25%", "30^\\circ", "x = 25" -> the number, and
    "\\frac{3}{2}" -> "3/2"; None unless the answer is one number so dressed (so "3\\sqrt{2}",
    "2, 3", "7 - 2" or "\\frac{50}{2}" give None)."""
    answer = answer.replace("{,}", ",").replace("\u2212", "-")  # LaTeX's 1{,}000; Unicode's minus sign
    bare = _DRESSING.sub("", _UNWRAP.sub(r" \1 ", answer).replace("~", " "))  # ~: LaTeX's space
    match = _PLAIN_NUMBER.fullmatch(bare.strip())
    if not match:
        return None
    sign = "-" if (match["sign"] == "-") != (match["nsign"] == "-") else ""  # -\frac{-1}{2} is 1/2
    if match["number"]:
        return sign + match["number"]
    num, den = (int(match[part] or match[part + "1"] or match[part + "2"]) for part in ("num", "den"))
    return f"{sign}{num}/{den}" if den > 1 and math.gcd(num, den) == 1 else None


def closed_blocks(text: str) -> list[str]:
    """Bodies of the non-empty closed ``` blocks, python ones first (each group in order)."""
    blocks = [(lang.lower(), body) for lang, body in _FENCE.findall(text) if body.strip()]
    python = [body for lang, body in blocks if lang in ("python", "py", "python3")]
    return python + [body for lang, body in blocks if lang not in ("python", "py", "python3")]


def has_code_block(text: str) -> bool:
    """The completion put its program in a closed ``` block (what the format reward asks)."""
    return bool(closed_blocks(text))


def extract_code(text: str) -> str | None:
    """The program of a completion, dedented: the first closed ```python block (else any
    closed block); else, when a fence is never closed (EOS inside it), all that follows it;
    else, with no fence at all, the whole text. None when that is empty. This is how the
    reference's evaluation reads programs (code that ran out of tokens fails its tests).
    """
    if blocks := closed_blocks(text):
        return _dedent(blocks[0])
    fences = text.count("```")
    if fences % 2 == 0:  # none at all, or every block closed and empty
        body = "" if fences else text
    else:
        opens = list(_OPEN_FENCE.finditer(text))
        body = text[opens[-1].end():] if opens else ""
    return _dedent(body) if body.strip() else None


def _dedent(code: str) -> str:
    """Without the indentation every line shares (a fence inside a list item); unchanged when
    none is shared, since textwrap.dedent also blanks whitespace-only lines (in docstrings too)."""
    lines = [line for line in code.splitlines() if line.strip()]
    return textwrap.dedent(code) if lines and all(line[0] in " \t" for line in lines) else code
