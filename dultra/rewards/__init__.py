"""Pure reward functions with one contract, `(completions, **fields) -> list[float | None]`
(None: could not be scored), their weighted combination, and the batch scorer GRPO uses.

    from dultra.rewards import RewardScorer, example_fields, productive_steps

The production code runner is `dultra.rewards.sandbox_client.SandboxClient` (the sandbox
service, or in-process workers without a URL).
"""

from dultra.rewards.code_correct import CodeReward
from dultra.rewards.combine import (
    COMPONENTS,
    RewardWeights,
    UnscorableBatchError,
    combine,
    scorable_mask,
)
from dultra.rewards.distill import DistillReward, Teacher, completion_log_likelihood, load_teacher
from dultra.rewards.format import format_reward
from dultra.rewards.math_correct import math_correct_reward
from dultra.rewards.runner import CodeRunner, SandboxUnavailable
from dultra.rewards.scorer import RewardConfig, RewardScorer, ScoredBatch, example_fields
from dultra.rewards.steps import productive_steps, step_penalty

__all__ = [
    "COMPONENTS", "CodeReward", "CodeRunner", "DistillReward", "RewardConfig", "RewardScorer",
    "RewardWeights", "SandboxUnavailable", "ScoredBatch", "Teacher", "UnscorableBatchError",
    "combine", "completion_log_likelihood", "example_fields", "format_reward", "load_teacher",
    "math_correct_reward", "productive_steps", "scorable_mask", "step_penalty",
]
