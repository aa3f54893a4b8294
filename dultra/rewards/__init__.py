"""Pure reward functions with one contract, `(completions, **fields) -> list[float | None]`
(None: could not be scored), their weighted combination, and the batch scorer GRPO uses.

    from dultra.rewards import RewardScorer, example_fields, productive_steps

The production code runner is `dultra.rewards.sandbox_client.SandboxClient` (the sandbox
service, or in-process workers without a URL). The weights and `RewardConfig` import with
the package; the rest when first used (the scorer and the teacher import torch).
"""

from dultra.lazy import lazy_exports
from dultra.rewards.combine import (
    COMPONENTS,
    RewardConfig,
    RewardWeights,
    UnscorableBatchError,
    combine,
    scorable_mask,
)

__getattr__, __dir__ = lazy_exports(__name__, {
    "code_correct": ("CodeReward",),
    "distill": ("DistillReward", "Teacher", "completion_log_likelihood", "load_teacher"),
    "format": ("format_reward",),
    "math_correct": ("math_correct_reward",),
    "runner": ("CodeRunner", "SandboxUnavailable"),
    "scorer": ("RewardScorer", "ScoredBatch", "example_fields"),
    "steps": ("productive_steps", "step_penalty"),
})

__all__ = [
    "COMPONENTS", "CodeReward", "CodeRunner", "DistillReward", "RewardConfig", "RewardScorer",
    "RewardWeights", "SandboxUnavailable", "ScoredBatch", "Teacher", "UnscorableBatchError",
    "combine", "completion_log_likelihood", "example_fields", "format_reward", "load_teacher",
    "math_correct_reward", "productive_steps", "scorable_mask", "step_penalty",
]
