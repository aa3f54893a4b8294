"""Code pass-fraction reward, executed for real by a subprocess runner (tests/reward_helpers.py)."""

from __future__ import annotations

import json

import pytest

from dultra.data import extract_code, load_task
from dultra.data.code_tasks import fenced
from dultra.rewards import CodeReward, CodeRunner
from tests.data_helpers import APPS_ROWS, MBPP_ROWS, write_jsonl
from tests.reward_helpers import DownRunner, SubprocessRunner

# Plain, helper-using, import-using problems.
HUMANEVAL_IDS = ("HumanEval/0", "HumanEval/10", "HumanEval/32", "HumanEval/38", "HumanEval/53")


@pytest.fixture(scope="module")
def humaneval():
    by_id = {e.id: e for e in load_task("humaneval", "test")}
    return [by_id[i] for i in HUMANEVAL_IDS]


def score(runner, examples, completions):
    return CodeReward(runner)(completions, tests=[e.tests for e in examples],
                              code_prefix=[e.code_prefix for e in examples])


def test_runner_satisfies_the_protocol():
    assert isinstance(SubprocessRunner(), CodeRunner) and isinstance(DownRunner(), CodeRunner)


def test_humaneval_canonical_passes_and_broken_fails(humaneval):
    runner = SubprocessRunner()
    assert score(runner, humaneval, [f"Here it is:\n{e.solution}\nDone." for e in humaneval]) == [1.0] * 5
    # Broken: the right signature returning a constant of the wrong kind.
    broken = [fenced(f"def {e.meta['entry_point']}(*args):\n    return None") for e in humaneval]
    assert score(runner, humaneval, broken) == [0.0] * 5


def test_humaneval_helpers_come_from_the_prompt(humaneval):
    # The model writes only make_palindrome; is_palindrome is defined in the prompt.
    make_palindrome = humaneval[1]
    only_target = fenced(
        "def make_palindrome(string: str) -> str:\n"
        "    for i in range(len(string) + 1):\n"
        "        if is_palindrome(string[i:]):\n"
        "            return string + string[:i][::-1]\n"
    )
    assert score(SubprocessRunner(), [make_palindrome], [only_target]) == [1.0]


def test_partial_pass_fraction_and_timeouts(tmp_path):
    [mbpp] = load_task("mbpp", "test", path=write_jsonl(tmp_path / "mbpp.jsonl", MBPP_ROWS))
    runner = SubprocessRunner(timeout_s=1.0)
    half = fenced("def second_largest(xs):\n    return 3")  # passes the first assert only
    loops = fenced("def second_largest(xs):\n    while True:\n        pass")
    assert score(runner, [mbpp] * 3, [mbpp.solution, half, loops]) == [1.0, 0.5, 0.0]


def test_apps_stdin_and_call_based(tmp_path):
    io, call = load_task("apps", "test", path=write_jsonl(tmp_path / "apps.jsonl", APPS_ROWS))
    runner = SubprocessRunner()
    wrong_io = fenced("a, b = map(int, input().split())\nprint(a - b)")
    as_class = fenced("class Solution:\n    def biggest(self, xs):\n        return max(xs)")
    assert score(runner, [io, io, call, call], [io.solution, wrong_io, call.solution, as_class]) == [1.0, 0.0, 1.0, 1.0]


def test_no_program_scores_zero_without_running(humaneval):
    runner = SubprocessRunner()
    assert score(runner, humaneval[:3], ["", "```python\n\n```", "```python\n   "]) == [0.0, 0.0, 0.0]
    assert runner.calls == 0
    # A task without tests cannot score its program, right or wrong: None, not 0.
    assert CodeReward(runner)([humaneval[0].solution, ""], tests=[[], []]) == [None, None]
    assert runner.calls == 0


def test_programs_are_read_as_the_reference_evaluation_reads_them(humaneval):
    """Not fenced, fenced but never closed (EOS inside the fence), fenced inside an indented list item."""
    ex = humaneval[4]
    body = ex.solution.split("```python\n", 1)[1].split("```", 1)[0]
    indented = "1. Here:\n" + "".join(f"   {line}\n" for line in f"```python\n{body}```".splitlines())
    texts = [body, f"Sure.\n```python\n{body}", indented, "I cannot do that."]
    runner = SubprocessRunner()
    assert score(runner, [ex] * 4, texts) == [1.0, 1.0, 1.0, 0.0]
    assert runner.calls == len({extract_code(t) for t in texts})  # prose is run too (and fails)


def test_identical_programs_run_once(humaneval):
    runner = SubprocessRunner()
    group = [humaneval[4]] * 4
    assert score(runner, group, [group[0].solution] * 3 + [""]) == [1.0, 1.0, 1.0, 0.0]
    assert runner.calls == 1


def test_unavailable_sandbox_gives_none(humaneval):
    assert score(DownRunner(), humaneval[:2], [e.solution for e in humaneval[:2]]) == [None, None]


def test_tests_as_json_dicts_and_bad_runners(humaneval):
    ex = humaneval[4]
    as_json = json.loads(json.dumps([t.to_dict() for t in ex.tests]))
    assert CodeReward(SubprocessRunner())([ex.solution], tests=[as_json], code_prefix=None) == [1.0]

    class Liar:
        def run_tests(self, code, tests):
            return 3, 2

    with pytest.raises(ValueError, match="runner returned \\(3, 2\\) for 1 tests"):
        CodeReward(Liar())([ex.solution], tests=[ex.tests])
    with pytest.raises(ValueError, match="1 completions but 2 test lists"):
        CodeReward(Liar())([ex.solution], tests=[ex.tests, ex.tests])
