"""Math correctness: the completion's final answer against the reference, with math-verify.

    math_correct_reward(["... #### 16", "\\\\boxed{15}"], answer=["16", "16"])  -> [1.0, 0.0]

The completion's answer is the last \\boxed{...}, else the text after the last `####`
(dultra.data.answers); a trailing period is dropped ("#### 16." reads as 16), and a number
followed only by words also counts as the number ("72 dollars", \\text{5 hours}). A
completion without either scores 0.0. A reference that is a number (GSM8K, the synthetic
tasks) takes only a number, or a fraction in lowest terms ("\\frac{3}{2}" for 1.5), as
GSM8K graders do: math-verify would evaluate "7 - 2", "\\frac{50}{2}" or a copy of the
prompt, so a policy could score without computing the last steps (`plain_number` says what
counts, for the reference too: "1,\\!000", "30^\\circ" and "\\$18.90" are numbers; a fraction
or a percent is compared by math-verify). Both sides are parsed by math-verify as the
argument of a \\boxed{}, so GSM8K integers ("1,000" = "1000"), MATH500 LaTeX (\\frac{1}{2} =
0.5 = 1/2, \\left( 3, \\frac{\\pi}{2} \\right), 10\\%, \\text{(C)}) and plain expressions
(against a reference that is not a number) compare by value. A reference answer that math-verify cannot parse
gives None (the sample cannot be scored) rather than a misleading 0.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from math_verify import parse, verify

from dultra.data.answers import extract_answer, plain_number


def _timeouts() -> dict[str, dict[str, int | None]]:
    """math-verify's timeouts use SIGALRM, which only the main thread may set."""
    if threading.current_thread() is threading.main_thread():
        return {"parse": {}, "verify": {}}
    return {"parse": {"parsing_timeout": None}, "verify": {"timeout_seconds": None}}


def parse_answer(answer: str) -> list:
    """math-verify's parse of a bare answer ("16", "\\\\frac{1}{2}"); [] if unparseable."""
    return parse(f"\\boxed{{{answer}}}", **_timeouts()["parse"])


def _matches(gold: list, answer: str) -> bool:
    pred = parse_answer(answer)
    return bool(pred) and verify(gold, pred, **_timeouts()["verify"])


def math_correct_reward(
    completions: Sequence[str], answer: str | Sequence[str | None], **_: object
) -> list[float | None]:
    """1.0 / 0.0 per completion; None where the reference answer is missing or unparseable.

    completions: N decoded texts. answer: N reference answers (one per completion, so a
    GRPO group repeats its prompt's answer), or one string for them all.
    """
    if isinstance(answer, str):  # not N answers of one character each
        answer = [answer] * len(completions)
    if len(answer) != len(completions):
        raise ValueError(f"{len(completions)} completions but {len(answer)} answers")
    gold_cache: dict[str, list] = {}  # a group of G completions shares one reference
    out: list[float | None] = []
    for text, ref in zip(completions, answer):
        if ref is None or not str(ref).strip():
            out.append(None)
            continue
        # A reference that is a number however dressed ("1,\\!000", "30^\\circ", "\\$18.90") is
        # that number, and takes only a number: math-verify would also take "999+1". Fractions
        # and percents keep math-verify's equivalences (2/4 and 4 2/3 for fractions, 0.25 for 25%).
        ref_number = plain_number(str(ref).strip())
        if ref_number and ("/" in ref_number or "%" in str(ref)):
            ref_number = None
        if ref not in gold_cache:
            gold_cache[ref] = parse_answer(ref_number or str(ref))
        gold = gold_cache[ref]
        if not gold:
            out.append(None)
            continue
        found = extract_answer(text)
        if found is None:
            out.append(0.0)
            continue
        found = found[:-1] if found.endswith(".") else found
        # "72 dollars" is 72 to a GSM8K grader; math-verify knows some units ("5 hours") but not all.
        number = plain_number(found)
        if ref_number:
            tries = [number] if number else []
        else:
            tries = dict.fromkeys(filter(None, (found, number)))
        out.append(1.0 if any(_matches(gold, candidate) for candidate in tries) else 0.0)
    return out
