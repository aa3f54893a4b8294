"""Weighted reward, step penalty, unscorable samples, and the batch scorer end to end."""

from __future__ import annotations

import pytest
import torch

from dultra.data import generate
from dultra.errors import ConfigError
from dultra.rewards import (
    RewardConfig,
    RewardScorer,
    RewardWeights,
    Teacher,
    UnscorableBatchError,
    combine,
    example_fields,
    productive_steps,
    scorable_mask,
    step_penalty,
)
from tests.reward_helpers import DownRunner, SubprocessRunner, tiny_llama


def test_reference_default_weights():
    trained = RewardWeights.for_kind("math").resolve(train_planner=True, has_teacher=True)
    assert trained == RewardWeights(correct=1.0, format=1.0, distill=1.0, steps=0.1)
    assert RewardWeights.for_kind("code").correct == 3.0
    assert RewardConfig().code == RewardWeights.for_kind("code")
    with pytest.raises(ConfigError, match="unknown task kind"):
        RewardWeights.for_kind("chess")


def test_an_unset_distill_weight_is_zero_without_a_teacher():
    """So the defaults train without one; a weight the user set still needs a teacher."""
    assert RewardWeights.for_kind("code").distill is None
    assert RewardWeights().resolve(train_planner=True, has_teacher=False).distill == 0.0
    assert RewardWeights(distill=0.5).resolve(train_planner=True, has_teacher=False).distill == 0.5
    given = RewardConfig(math=RewardWeights(distill=1.0))
    given.resolve(True, has_teacher=True).check(["math"], has_teacher=True)
    with pytest.raises(ConfigError, match="rewards.math.distill is 1.0 but no teacher is set"):
        given.resolve(True, has_teacher=False).check(["math"], has_teacher=False)
    RewardConfig().resolve(True, has_teacher=False).check(["math", "code"], has_teacher=False)


def test_an_unset_steps_weight_is_zero_when_the_planner_is_frozen():
    # as the reference: gen_step_reward_weight = 0.0 if freeze_unmasking_head else 0.1
    assert RewardWeights.for_kind("math").steps is None
    assert RewardWeights().resolve(train_planner=False, has_teacher=True).steps == 0.0
    assert RewardWeights().resolve(train_planner=True, has_teacher=True).steps == 0.1
    # a weight the user set is kept either way
    assert RewardWeights(steps=0.3).resolve(train_planner=False, has_teacher=True).steps == 0.3
    assert RewardWeights(steps=0.0).resolve(train_planner=True, has_teacher=True).steps == 0.0
    frozen = RewardConfig(code=RewardWeights(correct=3.0, steps=0.2)).resolve(train_planner=False, has_teacher=True)
    assert (frozen.math.steps, frozen.code.steps, frozen.code.correct) == (0.0, 0.2, 3.0)
    assert frozen.resolve(train_planner=True, has_teacher=False) == frozen  # nothing left unset
    with pytest.raises(ConfigError, match="a weight is unset"):
        combine(RewardWeights(), correct=[1.0], format=[1.0], distill=[0.0], steps=[-0.1])


def test_the_scorer_drops_the_step_penalty_of_a_frozen_planner():
    math_ex = generate("synthetic-math", "test", n=1)
    fields = example_fields(math_ex, group_size=2)
    config = RewardConfig(math=RewardWeights(distill=0.0))
    completions = [math_ex[0].solution, "no answer"]
    frozen = RewardScorer(config, train_planner=False).score(completions, steps=[10, 20], group_size=2, **fields)
    trained = RewardScorer(config).score(completions, steps=[10, 20], group_size=2, **fields)
    assert frozen.total == [2.0, 0.0]
    assert trained.total == [pytest.approx(2.0 - 0.02), pytest.approx(-0.04)]


def test_combine_is_the_weighted_sum_with_none_propagation():
    w = RewardWeights(correct=3.0, format=1.0, distill=1.0, steps=0.1)
    total = combine(w, correct=[1.0, 0.5, None], format=[1.0, 0.0, 1.0], distill=[-2.0, -1.0, -1.0],
                    steps=[-0.2, -0.4, -0.1])
    assert total[0] == pytest.approx(3 + 1 - 2 - 0.02)
    assert total[1] == pytest.approx(1.5 + 0 - 1 - 0.04)
    assert total[2] is None
    # A zero-weight component may be absent, and its None values do not matter.
    no_distill = RewardWeights(distill=0.0, steps=0.1)
    assert combine(no_distill, correct=[1.0], format=[0.0], steps=[-0.5]) == [pytest.approx(0.95)]
    assert combine(no_distill, correct=[1.0], format=[0.0], steps=[0.0], distill=[None]) == [1.0]
    # A non-finite value would make its whole group's advantages NaN: the sample leaves instead.
    with pytest.warns(UserWarning, match="non-finite component.*'distill': 2"):
        total = combine(w, correct=[1.0] * 3, format=[1.0] * 3, distill=[-0.5, float("nan"), float("-inf")],
                        steps=[-0.2] * 3)
    assert total == [pytest.approx(3 + 1 - 0.5 - 0.02), None, None]
    with pytest.raises(ConfigError, match="'distill' has a non-zero weight but no values"):
        combine(w, correct=[1.0], format=[1.0], steps=[0.0])
    with pytest.raises(ConfigError, match="unknown reward components"):
        combine(w, correct=[1.0], format=[1.0], steps=[0.0], distill=[0.0], length=[1.0])


def test_step_penalty_counts_steps_that_revealed_something():
    # Row 0 revealed at steps 0, 1, 1, 3 (step 2 revealed nothing), then EOS fill (-1).
    unmask_step = torch.tensor([[0, 1, 1, 3, -1, -1], [0, 0, 0, 0, 0, 0]])
    assert productive_steps(unmask_step) == [3, 1]
    assert step_penalty(["a", "b"], steps=[3, 1]) == [pytest.approx(-0.06), pytest.approx(-0.02)]
    with pytest.raises(ValueError, match=">= 0"):
        step_penalty(["a"], steps=[-1])


def test_scorable_mask_drops_none_and_fails_on_a_bad_batch():
    assert scorable_mask([1.0, None, 0.0, 2.0], group_size=2, max_unscorable_fraction=0.25) == [True, False, True, True]
    with pytest.raises(UnscorableBatchError, match="2 of 4 samples could not be scored"):
        scorable_mask([1.0, None, None, 2.0], group_size=2, max_unscorable_fraction=0.25)
    with pytest.raises(ValueError, match="groups of 3"):
        scorable_mask([1.0, 2.0], group_size=3, max_unscorable_fraction=0.5)


def test_scorer_on_a_mixed_batch(tiny_tokenizer):
    math_ex = generate("synthetic-math", "test", n=1)
    code_ex = generate("synthetic-code", "test", n=1)
    examples = math_ex + code_ex
    fields = example_fields(examples, group_size=2)
    completions = [math_ex[0].solution, "no answer", code_ex[0].solution, "```python\ndef f(x):\n    return 0\n```"]
    teacher = Teacher(tiny_llama(len(tiny_tokenizer)), tiny_tokenizer)
    scorer = RewardScorer(RewardConfig(), code_runner=SubprocessRunner(), teacher=teacher)
    batch = scorer.score(completions, steps=[10, 20, 5, 5], group_size=2, **fields)
    assert batch.components["correct"][:3] == [1.0, 0.0, 1.0] and batch.components["correct"][3] < 1.0
    assert batch.components["format"] == [1.0, 0.0, 1.0, 1.0]
    assert batch.keep == [True] * 4
    distill = batch.components["distill"]
    assert batch.total[0] == pytest.approx(1.0 + 1.0 + distill[0] + 0.1 * -0.2)
    assert batch.total[2] == pytest.approx(3.0 + 1.0 + distill[2] + 0.1 * -0.1)
    # A kind that weights distill 0 gets no teacher score: none to drag the logged mean to 0.
    only_math = RewardConfig(code=RewardWeights(correct=3.0, distill=0.0))
    batch = RewardScorer(only_math, code_runner=SubprocessRunner(), teacher=teacher).score(
        completions, steps=[10, 20, 5, 5], group_size=2, **fields)
    assert [v is None for v in batch.components["distill"]] == [False, False, True, True]
    assert batch.keep == [True] * 4 and batch.total[2] == pytest.approx(3.0 + 1.0 + 0.1 * -0.1)


def test_scorer_with_the_sandbox_down():
    code_ex = generate("synthetic-code", "test", n=2)
    fields = example_fields(code_ex, group_size=2)
    no_distill = RewardConfig(code=RewardWeights(correct=3.0, distill=0.0),
                              max_unscorable_fraction=0.5)
    scorer = RewardScorer(no_distill, code_runner=DownRunner())
    completions = [code_ex[0].solution, "", code_ex[1].solution, ""]  # "": no program at all
    batch = scorer.score(completions, steps=[1, 1, 1, 1], group_size=2, **fields)
    # Code that would have run is unscorable; code that never reached the runner scores 0.
    assert batch.keep == [False, True, False, True] and batch.total[1] == pytest.approx(-0.002)
    with pytest.raises(UnscorableBatchError):
        scorer.score([e.solution for e in code_ex for _ in range(2)], steps=[1] * 4, group_size=2, **fields)


def test_scorer_refuses_missing_parts():
    math_ex = generate("synthetic-math", "test", n=1)
    fields = example_fields(math_ex, group_size=1)
    with pytest.raises(ConfigError, match="no teacher"):
        RewardScorer(RewardConfig(math=RewardWeights(distill=1.0))).score([math_ex[0].solution], steps=[1],
                                                                          group_size=1, **fields)
    code_ex = generate("synthetic-code", "test", n=1)
    with pytest.raises(ConfigError, match="need a code runner"):
        RewardScorer().score(["x"], steps=[1], group_size=1, **example_fields(code_ex, 1))


def test_scorer_components_are_the_same_whatever_the_batchs_kinds(tiny_tokenizer):
    """Processes sum the components of their own batches: the names may not depend on them."""
    config = RewardConfig(math=RewardWeights(distill=0.0))  # code keeps its distill weight
    teacher = Teacher(tiny_llama(len(tiny_tokenizer)), tiny_tokenizer)
    scorer = RewardScorer(config, code_runner=SubprocessRunner(), teacher=teacher)
    math_ex = generate("synthetic-math", "test", n=1)
    code_ex = generate("synthetic-code", "test", n=1)
    on_math = scorer.score([math_ex[0].solution] * 2, steps=[1, 1], group_size=2, **example_fields(math_ex, 2))
    on_code = scorer.score([code_ex[0].solution] * 2, steps=[1, 1], group_size=2, **example_fields(code_ex, 2))
    assert list(on_math.components) == list(on_code.components) == ["correct", "format", "steps", "distill"]
    assert on_math.components["distill"] == [None, None]  # weight 0: not applicable, no teacher call
    assert all(v is not None and v < 0 for v in on_code.components["distill"])


def test_reward_config_check_names_the_weight_that_needs_a_teacher():
    config = RewardConfig(math=RewardWeights(distill=0.0), code=RewardWeights(correct=3.0, distill=1.0))
    config.check({"math"}, has_teacher=False)
    config.check({"math", "code"}, has_teacher=True)
    with pytest.raises(ConfigError, match=r"rewards.code.distill is 1.0 but no teacher is set: set --teacher, "
                                          r"or --rewards.code.distill 0"):
        config.check({"math", "code"}, has_teacher=False)
