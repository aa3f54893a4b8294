"""GRPO rollouts: each prompt decoded `group_size` times with planner sampling, then scored.

    roll = rollout(model, tokenizer, examples, group_size=12, decode=DecodeConfig(...))
    scored = score(scorer, roll, examples, group_size=12)

Completions are grouped contiguously (completion i belongs to examples[i // group_size]),
the layout `dultra.rewards.example_fields` and `dultra.rl.grpo.group_advantages` expect.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from dultra.data import Example, encode_examples
from dultra.decoding import DecodeConfig, DecodeOutput, PlannerSample, generate
from dultra.rewards import RewardScorer, ScoredBatch, example_fields, productive_steps


@dataclass
class Rollout:
    """output: the decoded batch with its trajectory. texts: (N,) completions up to the first EOS."""

    output: DecodeOutput
    texts: list[str]


def rollout(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[Example],
    group_size: int,
    decode: DecodeConfig,
    device: torch.device | str,
) -> Rollout:
    """Decode every example `group_size` times (planner-sample, trajectory recorded)."""
    ids, mask = encode_examples(tokenizer, examples)
    ids = ids.repeat_interleave(group_size, dim=0).to(device)
    mask = mask.repeat_interleave(group_size, dim=0).to(device)
    out = generate(model, ids, mask, PlannerSample(), decode)
    return Rollout(out, out.texts(tokenizer))


def score(scorer: RewardScorer, roll: Rollout, examples: Sequence[Example], group_size: int) -> ScoredBatch:
    """Every reward component and the weighted total of a rollout."""
    steps = productive_steps(roll.output.trajectory.unmask_step)
    return scorer.score(roll.texts, steps, group_size, **example_fields(examples, group_size))
