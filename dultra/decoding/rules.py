"""Unmasking rules: which masked positions of the current block to reveal this step.

Every rule is a pure, batched function over the current block, shapes:
    candidates: (B, N) bool, the still-masked positions of each row's current block
    scores:     (B, N) float (confidence, entropy, planner probability or logit)
    returns:    (B, N) bool, a subset of `candidates`, non-empty for every row that has a
                candidate (no decoding step is wasted)
There is no Python loop over rows or positions. Ties go to the lower position.
Slow, obviously-correct per-row versions live in tests/unit/test_rules.py.
"""

from __future__ import annotations

import torch

NEG_INF = float("-inf")


def select_top_k(scores: torch.Tensor, candidates: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """The `k[b]` highest-scoring candidates of each row; k: (B,) int, clamped to [0, #candidates]."""
    masked = scores.masked_fill(~candidates, NEG_INF)
    order = masked.argsort(dim=1, descending=True, stable=True)
    positions = torch.arange(scores.shape[1], device=scores.device).expand_as(order)
    rank = torch.empty_like(order).scatter_(1, order, positions)
    return (rank < k[:, None]) & candidates


def ensure_one(selected: torch.Tensor, scores: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """Add the best-scoring candidate to rows where nothing was selected."""
    best = scores.masked_fill(~candidates, NEG_INF).argmax(dim=1)
    empty = candidates.any(dim=1) & ~selected.any(dim=1)
    forced = torch.zeros_like(selected).scatter_(1, best[:, None], empty[:, None])
    return selected | forced


def _prefix_count(ok_sorted: torch.Tensor) -> torch.Tensor:
    """Length of the leading run of True in each row of a sorted condition; (B, N) -> (B,)."""
    return ok_sorted.long().cumprod(dim=1).sum(dim=1)


def threshold_rule(confidence: torch.Tensor, candidates: torch.Tensor, tau: float) -> torch.Tensor:
    """Fast-dLLM parallel decoding: every candidate with confidence >= tau, at least the best."""
    return ensure_one(candidates & (confidence >= tau), confidence, candidates)


def factor_rule(
    confidence: torch.Tensor, candidates: torch.Tensor, factor: float, official: bool = False
) -> torch.Tensor:
    """Fast-dLLM factor rule: the largest n whose n-th best confidence is >= 1 - factor / (n + 1).

    Confidences sorted descending fall while the bound rises with n, so the rows that pass
    form a prefix and n is its length (at least 1).

    official: as Fast-dLLM's code (`get_transfer_index_dynamic`, which the dUltra reference
    copies): when only the last candidate fails, it is revealed too, so a row with two
    candidates always reveals both. Its published numbers and the reference's warm-start
    labels come from this version.
    """
    n = torch.arange(1, confidence.shape[1] + 1, device=confidence.device)
    bound = 1.0 - factor / (n + 1.0)
    ranked = confidence.masked_fill(~candidates, NEG_INF).sort(dim=1, descending=True).values
    count = _prefix_count(ranked >= bound).clamp(min=1)
    if official:
        count = torch.where(count == candidates.sum(dim=1) - 1, count + 1, count)
    return select_top_k(confidence, candidates, count)


def entropy_rule(entropy: torch.Tensor, candidates: torch.Tensor, gamma: float) -> torch.Tensor:
    """EB-sampler (Ben-Hamu et al. 2025, arXiv 2505.24857): with the candidates sorted by
    increasing entropy H, reveal the longest prefix U with sum_U H - max_U H <= gamma.

    The max of a sorted prefix is its last element, so the test is on the sum *before* it:
    the token whose entropy crosses the bound is still revealed, and the first always is
    (gamma >= 0).
    """
    ranked = entropy.masked_fill(~candidates, float("inf")).sort(dim=1).values
    before = torch.cat([torch.zeros_like(ranked[:, :1]), ranked[:, :-1].cumsum(dim=1)], dim=1)
    # `before` is finite at the first non-candidate too: select_top_k caps the count
    count = _prefix_count(before <= gamma).clamp(min=1)
    return select_top_k(-entropy, candidates, count)


def planner_greedy_rule(prob: torch.Tensor, candidates: torch.Tensor, factor: float) -> torch.Tensor:
    """dUltra inference: k = int(sum(factor * p)) (at least 1), reveal the k largest p.

    k is also capped at the number of candidates (the reference can pick non-masks when
    factor > 1 pushes k past it).
    """
    expected = (prob * factor).masked_fill(~candidates, 0.0).sum(dim=1)
    # truncation, like the reference's .int(); capped first, as float -> int64 overflow
    # differs between CPU (INT64_MIN) and CUDA (saturates)
    k = expected.clamp(max=prob.shape[1]).long().clamp(min=1)
    return select_top_k(prob, candidates, k)


def planner_sample_rule(
    prob: torch.Tensor, candidates: torch.Tensor, uniform: torch.Tensor, factor: float = 1.0
) -> torch.Tensor:
    """dUltra rollouts: independent Bernoulli(min(1, factor * p)) per candidate; if none
    fires, the argmax p. factor 1 is the policy GRPO trains; dUltra's sampled evaluations
    scale it like the greedy rule's.

    uniform: (B, N) draws from U[0, 1).
    """
    return ensure_one(candidates & (uniform < prob * factor), prob, candidates)


def schedule_count(block_step: torch.Tensor, block_length: int, steps_per_block: int) -> torch.Tensor:
    """LLaDA low-confidence schedule: tokens to reveal at step `block_step` (B,) of a block.

    A block of `block_length` masks is spread evenly over `steps_per_block` steps, the
    remainder going to the first steps.
    """
    base, remainder = divmod(block_length, steps_per_block)
    return base + (block_step < remainder).long()
