"""GRPO maths against slow, obviously-correct references."""

from __future__ import annotations

import math

import pytest
import torch

from dultra.rl.grpo import (
    clipped_objective,
    group_advantages,
    kl_penalty,
    loss_coefficients,
    sequence_log_ratio,
    zero_spread,
)


def ref_advantages(rewards, keep, G, scale, min_clip):
    out = []
    for g in range(len(rewards) // G):
        rows = list(range(g * G, (g + 1) * G))
        kept = [rewards[i] for i in rows if keep[i]]
        mean = sum(kept) / len(kept) if kept else 0.0
        std = (sum((x - mean) ** 2 for x in kept) / max(len(kept) - 1, 1)) ** 0.5
        for i in rows:
            a = (rewards[i] - mean) if keep[i] else 0.0
            if scale and keep[i]:
                a /= std + 1e-4
            if min_clip is not None and a < min_clip:
                a = 0.0
            out.append(a)
    return torch.tensor(out)


@pytest.mark.parametrize("scale", [False, True])
@pytest.mark.parametrize("min_clip", [None, -0.5, 0.0])
def test_group_advantages_match_reference(scale, min_clip):
    g = torch.Generator().manual_seed(0)
    rewards = torch.rand(24, generator=g) * 3
    keep = torch.rand(24, generator=g) > 0.2
    keep[:6] = False  # a group with nothing scorable
    got = group_advantages(rewards, keep, 6, scale, min_clip)
    want = ref_advantages(rewards.tolist(), keep.tolist(), 6, scale, min_clip)
    assert torch.allclose(got, want, atol=1e-5)
    assert (got[~keep] == 0).all()


def test_equal_rewards_give_zero_advantage():
    adv = group_advantages(torch.tensor([1.0, 1.0, 1.0, 0.0, 2.0, 1.0]), torch.ones(6, dtype=torch.bool), 3, True)
    assert torch.equal(adv[:3], torch.zeros(3))
    assert adv[3] < 0 < adv[4]
    # 1.97 twelve times: its float32 mean is one rounding step off (A ~ 1e-7 per row before).
    # A dropped sample of another value leaves the group equal.
    same = torch.tensor([1.97] * 12 + [0.3])
    keep = torch.tensor([True] * 12 + [False])
    for scale in (False, True):
        assert torch.equal(group_advantages(same, keep, 13, scale), torch.zeros(13))
    assert zero_spread(same, keep, 13).tolist() == [True]
    assert zero_spread(same, torch.ones(13, dtype=torch.bool), 13).tolist() == [False]


def test_coefficients_give_the_gradient_of_the_clipped_sequence_loss():
    """Per-step backward of -c * log pi_s equals autograd through the sequence-level loss."""
    g = torch.Generator().manual_seed(1)
    N, S = 16, 5
    theta = torch.randn(N, S, generator=g, requires_grad=True)  # stands in for log pi_s(theta)
    old = (theta.detach() + torch.randn(N, S, generator=g) * 0.2)
    adv = torch.randn(N, generator=g)
    for eps_low, eps_high in [(0.2, 1.0), (0.1, 0.1)]:
        loss = clipped_objective(sequence_log_ratio(theta, old), adv, eps_low, eps_high).sum()
        (want,) = torch.autograd.grad(loss, theta)
        coef, clipped = loss_coefficients(sequence_log_ratio(theta.detach(), old), adv, eps_low, eps_high)
        got = torch.zeros_like(theta)
        for s in range(S):  # what the trainer does: one backward per step
            theta_s = theta.detach()[:, s].clone().requires_grad_(True)
            (-(coef * theta_s).sum()).backward()
            got[:, s] = theta_s.grad
        assert torch.allclose(got, want, atol=1e-5)
        assert clipped.any() and not clipped.all()


def test_on_policy_ratio_is_one_and_never_clipped():
    lp = torch.randn(8, 4)
    log_ratio = sequence_log_ratio(lp, lp.clone())
    assert torch.equal(log_ratio, torch.zeros(8))
    adv = torch.randn(8)
    coef, clipped = loss_coefficients(log_ratio, adv, 0.2, 1.0)
    assert torch.equal(coef, adv) and not clipped.any()


def test_zero_advantage_gives_zero_coefficient_even_past_overflow():
    coef, clipped = loss_coefficients(torch.tensor([100.0, 0.0]), torch.tensor([0.0, 0.0]), 0.2, 1.0)
    assert torch.equal(coef, torch.zeros(2)) and not clipped.any()  # exp(100) * 0 was NaN


def test_zero_spread_counts_only_kept_rewards():
    rewards = torch.tensor([1.0, 1.0, 0.0, 0.0, 1.0, 5.0, 3.0, 3.0, 3.0, 4.0, 9.0, 8.0])
    keep = torch.tensor([1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 0, 0]).bool()
    # The dropped 0 leaves group 0 flat; group 3 has one kept sample.
    assert zero_spread(rewards, keep, 3).tolist() == [True, False, True, True]
    assert zero_spread(rewards, torch.ones(12, dtype=torch.bool), 3).tolist() == [False, False, True, False]
    assert torch.equal(zero_spread(rewards, keep, 3).repeat_interleave(3) & keep,
                       (group_advantages(rewards, keep, 3) == 0) & keep)


def test_kl_penalty_is_the_k3_estimator():
    lp = torch.randn(10)
    assert torch.allclose(kl_penalty(lp, lp), torch.zeros(10))
    # d = ref - lp: exp(d) - d - 1, which is not symmetric in d.
    d = torch.tensor([1.0, -1.0, 2.0])
    want = torch.tensor([math.e - 2, math.exp(-1), math.exp(2) - 3])
    assert torch.allclose(kl_penalty(lp[:3], lp[:3] + d), want)
    assert not torch.allclose(kl_penalty(lp[:3], lp[:3] + d), kl_penalty(lp[:3], lp[:3] - d))


def test_kl_penalty_averages_to_the_kl_over_policy_samples():
    """k3 is an unbiased estimate of KL(pi || pi_ref) over tokens drawn from pi (Schulman, "Approximating KL")."""
    log_p = torch.tensor([0.5, 0.3, 0.15, 0.05]).log()
    log_ref = torch.tensor([0.25, 0.25, 0.25, 0.25]).log()
    exact = (log_p.exp() * (log_p - log_ref)).sum()
    expected = (log_p.exp() * kl_penalty(log_p, log_ref)).sum()
    assert torch.allclose(expected, exact, atol=1e-6)
    x = torch.multinomial(log_p.exp(), 200_000, replacement=True, generator=torch.Generator().manual_seed(0))
    samples = kl_penalty(log_p[x], log_ref[x])
    assert abs(samples.mean() - exact) < 4 * samples.std() / 200_000**0.5  # within 4 standard errors
