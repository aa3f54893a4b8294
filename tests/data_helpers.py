"""Offline data for the data and reward tests: the shared GSM8K copy and small rows with
the fields of the Hub datasets (MATH500, MBPP, APPS)."""

from __future__ import annotations

import json
from pathlib import Path

# ../shared/data from the project root (docs/environment.md); the tests never download.
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
GSM8K = SHARED_DATA / "gsm8k"


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# Rows written for these tests, with the fields (and quirks) of the Hub datasets.
MATH500_ROWS = [
    {"problem": "Write the point $(0,2)$ in polar coordinates.", "solution": "... $\\boxed{\\left( 2, \\frac{\\pi}{2} \\right)}$.",
     "answer": "\\left( 2, \\frac{\\pi}{2} \\right)", "subject": "Precalculus", "level": 2,
     "unique_id": "test/precalculus/1.json"},
    {"problem": "What is $1/2 + 1/4$?", "solution": "We get $\\boxed{\\frac{3}{4}}$.", "subject": "Algebra",
     "level": 1, "unique_id": "test/algebra/1.json"},  # no `answer`: taken from the solution's box
]
MBPP_ROWS = [
    {"task_id": 7, "text": "Write a function that returns the second largest distinct number of a list.",
     "code": "def second_largest(xs):\n    return sorted(set(xs))[-2]",
     "test_list": ["assert second_largest([4, 1, 4, 3]) == 3", "assert second_largest([9, 8]) == 8"],
     "test_setup_code": "", "challenge_test_list": []},
]
APPS_ROWS = [
    {"problem_id": 4000, "question": "Print the sum of two integers.", "difficulty": "introductory",
     "solutions": json.dumps(["a, b = map(int, input().split())\nprint(a + b)"]), "starter_code": "",
     "input_output": json.dumps({"inputs": ["1 2\n", "10 -3\n"], "outputs": ["3\n", "7\n"]})},
    {"problem_id": 4001, "question": "Return the largest element.", "difficulty": "introductory",
     "solutions": json.dumps(["def biggest(xs):\n    return max(xs)"]), "starter_code": "def biggest(xs):",
     "input_output": json.dumps({"fn_name": "biggest", "inputs": [[[1, 5, 2]], [[-1]]], "outputs": [[5], [-1]]})},
    {"problem_id": 4002, "question": "No tests here.", "solutions": "[]", "input_output": ""},
]
