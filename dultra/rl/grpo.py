"""GRPO maths (dultra.md section 5): group advantages and the clipped sequence-level loss.

Shapes: N = prompts x group_size completions, grouped contiguously (completion i belongs to
prompt i // group_size); S = denoising steps.

The loss of one sample with sequence ratio r = exp(sum_s (log pi_s - log pi_old_s)) is
    -min(r * A, clip(r, 1 - eps_low, 1 + eps_high) * A)
Its gradient is -A * r * sum_s grad log pi_s where the unclipped branch is active, else 0.
So a trainer can backpropagate step by step, `coefficient * log pi_s`, with the
coefficient computed once from all steps (`loss_coefficients`): the same gradient as the
sequence-level loss, holding one step's activations at a time.
"""

from __future__ import annotations

import torch


def group_advantages(
    rewards: torch.Tensor,
    keep: torch.Tensor,
    group_size: int,
    scale_by_std: bool = False,
    min_clip: float | None = None,
    eps: float = 1e-4,
) -> torch.Tensor:
    """A = r - mean of the kept rewards of the same group (optionally / their std).

    rewards: (N,) float (any value where keep is False). keep: (N,) bool, False for samples
    that could not be scored: they get A = 0 and do not count in their group's statistics.
    Advantages below `min_clip` are set to 0 (the reference's advantage_min_clip).
    Returns (N,) float32.
    """
    r = torch.where(keep, rewards.float(), 0.0).view(-1, group_size)
    k = keep.view(-1, group_size).float()
    n = k.sum(dim=1, keepdim=True).clamp(min=1)
    mean = r.sum(dim=1, keepdim=True) / n
    # Equal rewards give exactly 0, not the float32 rounding of their mean (~1e-7, which
    # would replay every row of a group that carries no signal).
    adv = torch.where(zero_spread(rewards, keep, group_size)[:, None], 0.0, (r - mean) * k)
    if scale_by_std:
        var = ((r - mean) ** 2 * k).sum(dim=1, keepdim=True) / (n - 1).clamp(min=1)
        adv = adv / (var.sqrt() + eps)
    adv = adv.view(-1)
    if min_clip is not None:
        adv = torch.where(adv < min_clip, torch.zeros_like(adv), adv)
    return adv


def zero_spread(rewards: torch.Tensor, keep: torch.Tensor, group_size: int) -> torch.Tensor:
    """(N,) rewards and keep flags -> (N / group_size,) bool: the group's kept rewards are all equal
    (so all its advantages are 0; a group with fewer than two kept samples counts too)."""
    k = keep.view(-1, group_size)
    r = rewards.float().view(-1, group_size)
    highest = torch.where(k, r, -torch.inf).amax(dim=1)
    lowest = torch.where(k, r, torch.inf).amin(dim=1)
    return highest <= lowest


def sequence_log_ratio(log_probs: torch.Tensor, old_log_probs: torch.Tensor) -> torch.Tensor:
    """(N, S) per-step log pi now and at rollout -> (N,) log of the sequence-level ratio."""
    return (log_probs - old_log_probs).sum(dim=1)


def clipped_objective(
    log_ratio: torch.Tensor, advantages: torch.Tensor, eps_low: float, eps_high: float
) -> torch.Tensor:
    """(N,) per-sample GRPO loss -min(r A, clip(r) A) with r = exp(log_ratio)."""
    ratio = log_ratio.exp()
    clipped = ratio.clamp(1 - eps_low, 1 + eps_high)
    return -torch.minimum(ratio * advantages, clipped * advantages)


def loss_coefficients(
    log_ratio: torch.Tensor, advantages: torch.Tensor, eps_low: float, eps_high: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample weight c such that the gradient of `clipped_objective` is -c * grad(sum_s log pi_s).

    log_ratio, advantages: (N,). Returns c (N,) and a (N,) bool "clipped" flag (the
    clipped branch is the minimum and the gradient is zero).
    """
    ratio = log_ratio.exp()
    clipped = ((ratio > 1 + eps_high) & (advantages > 0)) | ((ratio < 1 - eps_low) & (advantages < 0))
    # A = 0 contributes nothing even where exp overflowed (inf * 0 would be NaN).
    zero = clipped | (advantages == 0)
    return torch.where(zero, torch.zeros_like(ratio), ratio * advantages), clipped


def kl_penalty(log_probs: torch.Tensor, ref_log_probs: torch.Tensor) -> torch.Tensor:
    """k3 estimator of KL(pi || pi_ref) per step: exp(ref - lp) - (ref - lp) - 1, same shape."""
    d = ref_log_probs - log_probs
    return d.exp() - d - 1
