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

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dultra.data.example import Example
from dultra.errors import ConfigError
from dultra.rewards.code_correct import CodeReward
from dultra.rewards.combine import RewardConfig, combine, scorable_mask
from dultra.rewards.distill import DistillReward, Teacher
from dultra.rewards.format import format_reward, per_completion
from dultra.rewards.math_correct import math_correct_reward
from dultra.rewards.runner import CodeRunner
from dultra.rewards.steps import step_penalty


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
