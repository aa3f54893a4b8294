"""Math correctness and format rewards on real GSM8K answers and MATH500-style answers."""

from __future__ import annotations

import pytest

from dultra.data import extract_answer, extract_boxed, extract_code, load_task
from dultra.rewards import format_reward, math_correct_reward
from tests.data_helpers import GSM8K


@pytest.fixture(scope="module")
def gsm8k():
    return load_task("gsm8k", "test", path=GSM8K, limit=40)


def test_gsm8k_reference_solutions_score_one(gsm8k):
    answers = [e.answer for e in gsm8k]
    assert math_correct_reward([e.solution for e in gsm8k], answer=answers) == [1.0] * 40
    # The dataset's own "#### 18" form counts as well.
    hashed = [f"worked out.\n#### {a}" for a in answers]
    assert math_correct_reward(hashed, answer=answers) == [1.0] * 40


def test_gsm8k_wrong_and_malformed_score_zero(gsm8k):
    answers = [e.answer for e in gsm8k]
    wrong = [f"\\boxed{{{int(a) + 1}}}" for a in answers]
    assert math_correct_reward(wrong, answer=answers) == [0.0] * 40
    right = answers[0]
    malformed = [
        f"The answer is {right}.",             # no box, no ####
        f"\\boxed{{{right}",                    # unclosed box
        "#### ",                               # empty final line
        f"\\boxed{{{right}}} ... \\boxed{{7}}",  # the last box wins
        "",
    ]
    assert math_correct_reward(malformed, answer=[right] * 5) == [0.0] * 5
    assert format_reward(malformed, kind="math") == [0.0, 0.0, 0.0, 1.0, 0.0]


@pytest.mark.parametrize("reference, completion", [
    ("18", "She makes $18.\n#### 18."),                        # trailing period
    ("1000", "#### 1,000"),                                   # thousands separator
    ("\\frac{1}{2}", "so $\\boxed{0.5}$"),
    ("\\frac{1}{2}", "\\boxed{1/2}"),
    ("\\dfrac{3}{4}", "\\boxed{\\frac34}"),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "\\boxed{(3, \\pi/2)}"),
    ("3\\sqrt{13}", "\\boxed{\\sqrt{117}}"),
    ("10\\%", "\\boxed{10}"),
    ("\\text{(C)}", "\\boxed{C}"),
    ("x^2+7x+10", "\\boxed{(x+2)(x+5)}"),
    ("-3", "The result is \\boxed{ -3 }"),
    ("18", "\\boxed{18 dollars}"),                              # a number and words: the number
    ("5", "\\boxed{\\text{5 hours}}"),
    ("72", "#### **72**"),                                   # markdown bold
    ("72", "**#### 72 dollars.**"),
    ("25", "#### 25%"),                                      # a number as graders read one
    ("25", "\\boxed{x = 25}"),
    ("25", "#### (+25)"),
    ("30", "\\boxed{30^\\circ}"),                              # MATH's dressing of a number
    ("30", "\\boxed{30°}"),
    ("30", "\\boxed{30\\degree}"),
    ("1000", "\\boxed{1,\\!000}"),
    ("5", "\\boxed{5\\,\\text{cm}}"),
    ("1.25", "\\boxed{\\$1.25}"),
    ("-5", "\\boxed{- 5}"),
    ("18", "\\boxed{18 \\text{ km/h}}"),
    ("18", "\\boxed{18 \\mathrm{~cm}}"),
    ("1.5", "\\boxed{\\frac{3}{2}}"),                          # a fraction in lowest terms is a number
    ("1.25", "\\boxed{\\frac54}"),
    ("-0.5", "\\boxed{-\\dfrac{1}{2}}"),
    ("0.5", "#### 1/2 cup"),
    ("1000", "\\boxed{1{,}000}"),                               # LaTeX's thousands separator
    ("-5", "\\boxed{\u22125}"),                                # Unicode's minus sign
    ("-0.5", "\\boxed{\\frac{-1}{2}}"),
    ("0.5", "\\boxed{-\\frac{-1}{2}}"),
    ("1,\\!000", "\\boxed{1000}"),                               # MATH's references, dressed too
    ("30^\\circ", "#### 30"),
    ("\\$18.90", "\\boxed{18.9}"),
    ("\\text{5 hours}", "\\boxed{5}"),
    ("\\frac{3}{4}", "\\boxed{0.75}"),
    ("\\frac{3}{4}", "\\boxed{\\frac{6}{8}}"),                 # fractions and percents: math-verify's rules
    ("\\frac{14}{3}", "\\boxed{4\\frac{2}{3}}"),
    ("25\\%", "\\boxed{0.25}"),
])
def test_equivalent_forms_are_correct(reference, completion):
    assert math_correct_reward([completion], answer=[reference]) == [1.0]


@pytest.mark.parametrize("reference, completion", [
    ("\\frac{14}{3}", "\\boxed{4.67}"),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "\\boxed{(\\pi/2, 3)}"),
    ("x^2+7x+10", "\\boxed{(x+2)(x+6)}"),
    ("18", "\\boxed{19 dollars}"),
    ("3", "\\boxed{3\\sqrt{2}}"),    # a number and more is not the number
    ("2", "#### 2, 3"),
    # A number reference takes only a number: math-verify would evaluate these to it.
    ("5", "#### 7 - 2"),
    ("5", "#### ||||7 - 6| - 6| - 4| - 6|"),                 # the synthetic prompt, copied
    ("5", "#### |5|"),
    ("5", "#### 3 = 5"),
    ("25", "\\boxed{\\frac{50}{2}}"),                          # a fraction left to simplify
    ("25", "#### 50/2"),
    ("2", "\\boxed{\\frac{2}{1}}"),
    ("1024", "\\boxed{2^{10}}"),
    ("0.5", "\\boxed{\\frac{1}{3}}"),
    ("23", "#### 2~3"),                                         # ~ is a space, not nothing
    ("5", "#### " + "1" * 5000 + "/3"),                          # no crash on a huge fraction
    ("25", "\\boxed{25^2}"),
    ("5", "#### 5x"),
    ("1,\\!000", "\\boxed{999+1}"),                              # so does a dressed one
    ("30^\\circ", "\\boxed{29+1}"),
    ("\\$18.90", "\\boxed{18+0.9}"),
])
def test_different_values_are_wrong(reference, completion):
    assert math_correct_reward([completion], answer=[reference]) == [0.0]


def test_unscorable_references_give_none():
    # math-verify keeps unparseable LaTeX as a string; only an empty parse is unscorable.
    assert math_correct_reward(["\\boxed{1}"] * 3, answer=[None, "  ", "\\text{}"]) == [None, None, None]
    with pytest.raises(ValueError, match="2 completions but 1 answers"):
        math_correct_reward(["a", "b"], answer=["1"])


def test_one_answer_string_serves_every_completion():
    # Not read as one answer per character ("1", "6"), which scored both of these 1.0.
    assert math_correct_reward(["#### 1", "#### 16"], answer="16") == [0.0, 1.0]


def test_extraction_rules():
    assert extract_boxed("\\boxed{\\frac{1}{2}} then \\boxed{\\left\\{ 1, 2 \\right\\}}") == "\\left\\{ 1, 2 \\right\\}"
    assert extract_boxed("\\boxed{a} \\boxed{b") == "a"  # an unclosed last box does not count
    assert extract_answer("#### 5\nmore text\n#### 7 apples\ntrailing") == "7 apples"
    assert extract_answer("\\boxed{3}\n#### 4") == "3"  # a box beats ####
    assert extract_code("text\n```python\nx = 1\n```\n```python\nx = 2\n```") == "x = 1"
    assert extract_code("```\nprint(1)\n```") == "print(1)"
    assert extract_code("```python\ndef f():\n    return 1") == "def f():\n    return 1"  # EOS in the fence
    assert extract_code("  ```python\n  x = 1\n  ```") == "x = 1"  # dedented
    assert extract_code("x = 1") == "x = 1" and extract_code("```python\n```") is None


def test_markdown_headings_are_not_answers():
    headed = [
        "#### Step 1: add the eggs\n16 - 3 - 4 = 9, so 9 * 2 = 18 dollars.",  # a heading, no answer
        "Worked out.\n#### 18\n\n#### Check\n18 / 2 = 9 eggs.",  # the answer, then a heading
        "#### 18 ####",  # a heading's closing hashes
        "Worked out.\n####\n18",  # the answer on the line after
    ]
    assert [extract_answer(t) for t in headed] == [None, "18", "18", "18"]
    assert format_reward(headed, kind="math") == [0.0, 1.0, 1.0, 1.0]
    assert math_correct_reward(headed, answer="18") == [0.0, 1.0, 1.0, 1.0]
    # A word that ends the completion answers, as does a letter alone.
    assert [extract_answer(t) for t in ("#### odd", "#### No\n", "#### C\nsince ...", "#### x = 5")] == \
        ["odd", "No", "C", "x = 5"]
    assert math_correct_reward(["so it is\n#### odd"], answer="\\text{odd}") == [1.0]


def test_format_reward_for_code_and_bad_kinds():
    texts = ["```python\nx = 1\n```", "x = 1", "```python\nx = 1"]
    assert format_reward(texts, kind=["code"] * 3) == [1.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="unknown task kind 'prose'"):
        format_reward(["x"], kind="prose")
    with pytest.raises(ValueError, match="2 completions but 1 values of 'kind'"):
        format_reward(["a", "b"], kind=["math"])
