"""Score a GRPO rollout batch: every reward component, the weighted total, who is kept.

    scorer = RewardScorer(RewardConfig(), code_runner=sandbox_client, teacher=teacher)
    fields = example_fields(examples, group_size=12)        # each example repeated 12 times
    batch = scorer.score(completions, steps=productive_steps(traj.unmask_step),
                         group_size=12, **fields)
    batch.total, batch.keep, batch.components["correct"]

Completions are grouped contiguously: completion i belongs to examples[i // group_size].
A batch's components are the same names whatever its task kinds ("distill" exactly when a
teacher is given), since processes sum them together.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from dultra.configio import doc
from dultra.data.example import Example
from dultra.errors import ConfigError
from dultra.rewards.code_correct import CodeReward
from dultra.rewards.combine import RewardWeights, combine, scorable_mask
from dultra.rewards.distill import DistillReward, Teacher
from dultra.rewards.format import format_reward, per_completion
from dultra.rewards.math_correct import math_correct_reward
from dultra.rewards.runner import CodeRunner
from dultra.rewards.steps import step_penalty


@dataclass(frozen=True)
class RewardConfig:
    """Reward settings of a GRPO run (defaults: dultra.md section 5)."""

    math: RewardWeights = doc(factory=lambda: RewardWeights.for_kind("math"), help="weights for math tasks")
    code: RewardWeights = doc(factory=lambda: RewardWeights.for_kind("code"), help="weights for code tasks")
    max_unscorable_fraction: float = doc(0.25, "fail the step if more of a batch cannot be scored")
    code_workers: int = doc(8, "concurrent sandbox requests")

    def resolve(self, train_planner: bool, has_teacher: bool) -> RewardConfig:
        """Unset weights filled in for a run whose planner trains or not, with a teacher or not
        (RewardWeights.resolve)."""
        return dataclasses.replace(self, math=self.math.resolve(train_planner, has_teacher),
                                   code=self.code.resolve(train_planner, has_teacher))

    def check(self, kinds: Iterable[str], has_teacher: bool) -> None:
        """Fail before training when a weight is negative (it would reward wrong answers or slow
        decoding), when a task kind of the data weights a reward without its model, or when
        max_unscorable_fraction is no fraction."""
        if not 0 <= self.max_unscorable_fraction <= 1:  # also false for NaN
            raise ConfigError(f"rewards.max_unscorable_fraction must be in [0, 1], got {self.max_unscorable_fraction}")
        if self.code_workers < 1:
            raise ConfigError(f"rewards.code_workers must be >= 1, got {self.code_workers}")
        for kind in ("math", "code"):
            for name, value in dataclasses.asdict(getattr(self, kind)).items():
                if value is not None and not 0 <= value < float("inf"):
                    raise ConfigError(f"rewards.{kind}.{name} must be a number >= 0 (0 turns it off), got {value}")
        for kind in sorted(set(kinds)):
            weight = getattr(self, kind).distill
            if weight and not has_teacher:  # None: resolved to 0 without a teacher
                raise ConfigError(f"rewards.{kind}.distill is {weight} but no teacher is set: "
                                  f"set --teacher, or --rewards.{kind}.distill 0")


@dataclass
class ScoredBatch:
    """Rewards of N completions. Dropped samples have keep False and total None."""

    total: list[float | None]  # (N,) weighted reward
    keep: list[bool]  # (N,) False: unscorable, leaves its group
    components: dict[str, list[float | None]]  # name -> (N,) unweighted values


def example_fields(examples: Sequence[Example], group_size: int) -> dict[str, list[Any]]:
    """Per-completion reward fields for `group_size` completions of each example, in order."""
    rep = [ex for ex in examples for _ in range(group_size)]
    return {
        "kind": [ex.kind for ex in rep],
        "answer": [ex.answer for ex in rep],
        "tests": [ex.tests for ex in rep],
        "code_prefix": [ex.code_prefix for ex in rep],
        "messages": [ex.messages() for ex in rep],
    }


class RewardScorer:
    """Computes the components with the configured runner and teacher, then combines them.

    train_planner: whether the planner head is trained, which fixes an unset steps weight (and
    the teacher, or its absence, an unset distill weight).
    """

    def __init__(self, config: RewardConfig | None = None, code_runner: CodeRunner | None = None,
                 teacher: Teacher | None = None, train_planner: bool = True) -> None:
        self.config = (config or RewardConfig()).resolve(train_planner, has_teacher=teacher is not None)
        self.code = CodeReward(code_runner, self.config.code_workers) if code_runner is not None else None
        self.distill = DistillReward(teacher) if teacher is not None else None

    def _correct(self, completions: Sequence[str], kinds: list[str], fields: dict[str, Any]) -> list[float | None]:
        out: list[float | None] = [None] * len(completions)
        for kind in ("math", "code"):
            idx = [i for i, k in enumerate(kinds) if k == kind]
            if not idx:
                continue
            if kind == "math":
                if fields.get("answer") is None:
                    raise ConfigError("math completions need the 'answer' field")
                values = math_correct_reward([completions[i] for i in idx], [fields["answer"][i] for i in idx])
            else:
                if self.code is None:
                    raise ConfigError("code completions need a code runner (the sandbox client)")
                if fields.get("tests") is None:
                    raise ConfigError("code completions need the 'tests' field")
                prefixes = fields.get("code_prefix")
                values = self.code([completions[i] for i in idx], [fields["tests"][i] for i in idx],
                                   [prefixes[i] for i in idx] if prefixes is not None else None)
            for i, v in zip(idx, values):
                out[i] = v
        return out

    def _distill(self, completions: Sequence[str], messages: Sequence[Any] | None,
                 wanted: list[bool]) -> list[float | None]:
        """The teacher's reward where its weight is non-zero, None elsewhere: not applicable, so
        it weighs nothing in the total and stays out of the logged mean."""
        out: list[float | None] = [None] * len(completions)
        idx = [i for i, w in enumerate(wanted) if w]
        if idx:
            chats = [messages[i] for i in idx] if messages is not None else None
            values = self.distill([completions[i] for i in idx], chats)
            for i, v in zip(idx, values):
                out[i] = v
        return out

    def score(self, completions: Sequence[str], steps: Sequence[int], group_size: int,
              kind: str | Sequence[str], **fields: Any) -> ScoredBatch:
        """completions: N = B * group_size texts; steps: N productive step counts; kind and
        the other fields (answer, tests, code_prefix, messages) as from `example_fields`."""
        kinds = per_completion(kind, len(completions), "kind")
        weights = [self.config.math if k == "math" else self.config.code for k in kinds]
        components: dict[str, list[float | None]] = {
            "correct": self._correct(completions, kinds, fields),
            "format": format_reward(completions, kinds),
            "steps": step_penalty(completions, steps),
        }
        wanted = [w.distill != 0 for w in weights]
        if any(wanted) and self.distill is None:
            raise ConfigError("the distill weight is non-zero but no teacher was given")
        if self.distill is not None:
            components["distill"] = self._distill(completions, fields.get("messages"), wanted)
        total = combine(weights, **components)
        keep = scorable_mask(total, group_size, self.config.max_unscorable_fraction)
        return ScoredBatch(total=total, keep=keep, components=components)
