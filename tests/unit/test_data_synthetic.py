"""Synthetic tasks: deterministic, disjoint splits, correct targets that fit the tiny model."""

from __future__ import annotations

import random
import re

import pytest

from dultra.data import SyntheticConfig, encode_examples, generate, load_task, render_prompts
from dultra.data.synthetic import math_example, split_of
from dultra.errors import ConfigError, DataError
from dultra.rewards import CodeReward, format_reward, math_correct_reward
from tests.reward_helpers import SubprocessRunner

TASKS = ("synthetic-math", "synthetic-code")
JOINERS = r"(?:,| then| and) "  # the default joiners, each followed by the next value


@pytest.mark.parametrize("task", TASKS)
def test_deterministic_given_the_seed(task):
    a, b = generate(task, "train", n=50, seed=3), generate(task, "train", n=50, seed=3)
    assert a == b
    assert [e.prompt for e in generate(task, "train", n=50, seed=4)] != [e.prompt for e in a]
    assert len({e.id for e in a}) == len({e.prompt for e in a}) == 50
    # A prefix of a bigger draw: sizes do not reshuffle what was already generated.
    assert generate(task, "train", n=80, seed=3)[:50] == a


@pytest.mark.parametrize("task", TASKS)
def test_splits_never_share_a_prompt(task):
    train = {e.prompt for seed in (0, 1) for e in generate(task, "train", n=2000, seed=seed)}
    test = {e.prompt for seed in (0, 1) for e in generate(task, "test", n=300, seed=seed)}
    assert not train & test
    assert all(split_of(p, 10) == "test" for p in test)


def test_about_the_asked_share_is_held_out():
    prompts = [f"Compute {i} + {j}." for i in range(100) for j in range(30)]
    for percent in (10, 50):
        held = sum(split_of(p, percent) == "test" for p in prompts) / len(prompts)
        assert abs(held - percent / 100) < 0.03


def test_sum_targets_are_running_values():
    examples = generate("synthetic-math", "train", n=500, config=SyntheticConfig(ops="+-"))
    for ex in examples:
        start, *ops = re.findall(r"[-+*]? ?\d+", ex.prompt)
        body, answer = ex.solution.split("\n#### ")
        values = re.split(JOINERS, body.rstrip("."))
        # Each value is the previous one combined with the prompt's next operation.
        prev = start
        for op, value in zip(ops, values, strict=True):
            assert eval(f"{prev} {op}") == int(value), ex
            prev = value
        assert answer == ex.answer == values[-1] == str(eval(ex.prompt.removeprefix("Compute ").rstrip(".")))
        assert 0 <= int(ex.answer) <= 9
    assert {ex.meta["steps"] for ex in examples} == {4}
    assert len({len(ex.prompt) for ex in examples}) == 1  # one layout: operands sit at fixed offsets


def test_multiplication_gets_explicit_precedence():
    cfg = SyntheticConfig(min_steps=2, max_steps=3, ops="+-*", max_start=99, max_operand=99, max_value=999)
    examples = generate("synthetic-math", "train", n=300, config=cfg)
    assert any("(" in ex.prompt for ex in examples)
    for ex in examples:
        assert eval(ex.prompt.removeprefix("Compute ").rstrip(".")) == int(ex.answer)
        assert len(re.split(JOINERS, ex.solution)) == ex.meta["steps"]


def test_default_math_chains_distances_that_fold_every_value_in_one_layout():
    examples = generate("synthetic-math", "train", n=500)
    assert examples == generate("synthetic-math", "train", n=500, config=SyntheticConfig(ops="|"))
    for ex in examples:
        start, *operands = re.findall(r"\d", ex.prompt)
        assert ex.prompt == "Compute ||||{} - {}| - {}| - {}| - {}|.".format(start, *operands)
        values = re.split(JOINERS, ex.solution.split("\n#### ")[0].rstrip("."))
        prev = int(start)
        for b, value in zip(operands, values, strict=True):
            prev = abs(prev - int(b))
            assert prev == int(value), ex
        assert ex.answer == values[-1]
    assert {ex.answer for ex in examples} == {str(v) for v in range(10)}


def test_distance_mixes_with_the_other_operations():
    cfg = SyntheticConfig(min_steps=2, max_steps=4, ops="+-*|")
    for ex in generate("synthetic-math", "train", n=300, config=cfg):
        # Bars group like parentheses: a closing bar follows a digit, an opening one never does.
        expr = re.sub(r"(\d)\|", r"\1)", ex.prompt.removeprefix("Compute ").rstrip(".")).replace("|", "abs(")
        assert eval(expr) == int(ex.answer), ex.prompt
    examples = generate("synthetic-code", "test", n=6, config=SyntheticConfig(ops="+|"))
    assert any("abs(x - " in e.solution for e in examples)
    assert CodeReward(SubprocessRunner())([e.solution for e in examples], tests=[e.tests for e in examples]) == [1.0] * 6


def test_joiners_are_free_choices_that_leave_the_problems_alone(tiny_tokenizer):
    fixed = generate("synthetic-math", "train", n=600, config=SyntheticConfig(joiners=(",",)))
    examples = generate("synthetic-math", "train", n=600)  # the default: (",", " then", " and")
    assert [e.prompt for e in examples] == [e.prompt for e in fixed]
    assert [re.findall(r"\d+", e.solution) for e in examples] == [re.findall(r"\d+", e.solution) for e in fixed]
    # Each gap draws its own joiner: all three show up at every gap, about equally often.
    gaps = [re.findall(r"(,| then| and) ", e.solution) for e in examples]
    for i in range(3):
        counts = [sum(g[i] == j for g in gaps) for j in (",", " then", " and")]
        assert min(counts) > 150, counts
    # One token each, so every value and the answer sit at the same token offsets.
    tokens = [tiny_tokenizer(e.solution, add_special_tokens=False)["input_ids"] for e in examples]
    assert {len(t) for t in tokens} == {15}
    digits = {tuple(i for i, t in enumerate(tiny_tokenizer.convert_ids_to_tokens(ids)) if t.isdigit()) for ids in tokens}
    assert digits == {(0, 3, 6, 9, 14)}


def test_math_answers_are_verified_by_the_reward():
    examples = generate("synthetic-math", "test", n=60)
    answers = [e.answer for e in examples]
    assert math_correct_reward([e.solution for e in examples], answer=answers) == [1.0] * 60
    off_by_one = [e.solution.replace(f"#### {e.answer}", f"#### {int(e.answer) + 1}") for e in examples]
    assert math_correct_reward(off_by_one, answer=answers) == [0.0] * 60
    assert format_reward([e.solution for e in examples], kind="math") == [1.0] * 60


def test_code_targets_pass_their_tests():
    examples = generate("synthetic-code", "test", n=6)
    assert examples == generate("synthetic-code", "test", n=6, config=SyntheticConfig(ops="+-"))  # its default
    reward = CodeReward(SubprocessRunner())
    tests = [e.tests for e in examples]
    assert reward([e.solution for e in examples], tests=tests) == [1.0] * 6
    # A wrong self-check fails the whole program, hence every hidden test.
    broken = [re.sub(r"== (-?\d+)", lambda m: f"== {int(m.group(1)) + 1}", e.solution) for e in examples]
    assert reward(broken, tests=tests) == [0.0] * 6
    assert all(len(e.tests) == 4 and e.tests[0].source.split("==")[0] in e.solution for e in examples)


@pytest.mark.parametrize("task", TASKS)
def test_fits_the_tiny_tokenizer(task, tiny_tokenizer):
    examples = generate(task, "train", n=2000)
    lengths = [len(tiny_tokenizer(e.solution, add_special_tokens=False)["input_ids"]) for e in examples]
    assert max(lengths) + 1 <= 64  # the completion plus its EOS in a 64-token generation
    prompts = render_prompts(tiny_tokenizer, examples)
    assert prompts[0] == f"<|user|>{examples[0].prompt}<|assistant|>"
    ids, mask = encode_examples(tiny_tokenizer, examples[:8])
    assert ids.shape[1] <= 48 and mask.sum(1).min() > 5


def test_load_task_generates_and_config_is_checked():
    assert len(load_task("synthetic-math", "train", limit=7)) == 7
    with pytest.raises(ConfigError, match="splits"):
        load_task("synthetic-math", "validation", limit=3)
    with pytest.raises(ConfigError, match="ops must be"):
        SyntheticConfig(ops="/")
    with pytest.raises(ConfigError, match=r"no operation in ops='\*' keeps \d+ within 0..9"):
        generate("synthetic-math", "train", n=50, config=SyntheticConfig(ops="*"))
    one = SyntheticConfig(ops="*|", max_start=1, max_value=1)  # "*" cannot keep 0 or 1 within 0..1
    assert {math_example(random.Random(s), one, random.Random(s)).answer for s in range(20)} == {"0", "1"}
    with pytest.raises(ConfigError, match="joiners must be"):
        SyntheticConfig(joiners=("\n####",))
    tiny_space = SyntheticConfig(min_steps=1, max_steps=1, ops="+", max_start=2, max_operand=2)
    with pytest.raises(DataError, match="distinct 'train' problems"):
        generate("synthetic-math", "train", n=50, config=tiny_space)
