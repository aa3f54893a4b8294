"""Vectorised unmasking rules against slow per-row references written from dultra.md section 3."""

from __future__ import annotations

import pytest
import torch

from dultra.decoding import rules


def _rows(seed: int, B: int = 64, N: int = 12):
    g = torch.Generator().manual_seed(seed)
    scores = torch.rand(B, N, generator=g)
    scores[::5] = torch.round(scores[::5] * 4) / 4  # plenty of exact ties
    candidates = torch.rand(B, N, generator=g) < 0.6
    candidates[3] = False  # a row with nothing left
    return scores, candidates, g


def _ranked(row_scores, row_cand, descending=True):
    """Candidate positions sorted by score, ties to the lower position."""
    idx = [i for i in range(len(row_scores)) if row_cand[i]]
    return sorted(idx, key=lambda i: (-row_scores[i] if descending else row_scores[i], i))


def _as_mask(positions, N):
    out = torch.zeros(N, dtype=torch.bool)
    out[list(positions)] = True
    return out


def ref_threshold(scores, cand, tau):
    out = []
    for s, c in zip(scores.tolist(), cand.tolist()):
        order = _ranked(s, c)
        chosen = [i for i in order if s[i] >= tau]
        if order and not chosen:
            chosen = order[:1]
        out.append(_as_mask(chosen, len(s)))
    return torch.stack(out)


def ref_factor(scores, cand, factor):
    out = []
    for s, c in zip(scores.tolist(), cand.tolist()):
        order = _ranked(s, c)
        n = 0
        for rank, i in enumerate(order, start=1):
            if s[i] < 1 - factor / (rank + 1):
                break
            n = rank
        out.append(_as_mask(order[: max(n, 1)], len(s)))
    return torch.stack(out)


def ref_factor_official(scores, cand, factor):
    """Fast-dLLM's get_transfer_index_dynamic (NVlabs/Fast-dLLM llada/generate.py), row by row."""
    out = []
    for s, c in zip(scores.tolist(), cand.tolist()):
        order = _ranked(s, c)
        if not order:
            out.append(_as_mask([], len(s)))
            continue
        threshs = [1 - factor / (n + 1) for n in range(1, len(order) + 1)]
        threshs[0] = -1
        for top_i in range(len(threshs)):
            if s[order[top_i]] < threshs[top_i]:
                break
        if top_i == 0 or top_i == len(threshs) - 1:
            top_i += 1
        out.append(_as_mask(order[:top_i], len(s)))
    return torch.stack(out)


def ref_entropy(ent, cand, gamma):
    """EB-sampler (arXiv 2505.24857): the largest prefix U by increasing entropy with sum(H_U) - max(H_U) <= gamma."""
    out = []
    for e, c in zip(ent.tolist(), cand.tolist()):
        order = _ranked(e, c, descending=False)
        n = 0
        for size in range(1, len(order) + 1):
            h = [e[i] for i in order[:size]]
            if sum(h) - max(h) <= gamma:
                n = size
        out.append(_as_mask(order[: max(n, 1)], len(e)))
    return torch.stack(out)


def ref_planner_greedy(p, cand, factor):
    out = []
    for s, c in zip(p.tolist(), cand.tolist()):
        order = _ranked(s, c)
        k = int(sum(factor * s[i] for i in order))
        out.append(_as_mask(order[: min(max(k, 1), len(order))], len(s)))
    return torch.stack(out)


def ref_planner_sample(p, cand, u, factor=1.0):
    out = []
    for s, c, uu in zip(p.tolist(), cand.tolist(), u.tolist()):
        chosen = [i for i in range(len(s)) if c[i] and uu[i] < min(1.0, factor * s[i])]
        order = _ranked(s, c)
        out.append(_as_mask(chosen or order[:1], len(s)))
    return torch.stack(out)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("tau", [0.0, 0.5, 0.9, 1.0])
def test_threshold_matches_reference(seed, tau):
    s, c, _ = _rows(seed)
    assert torch.equal(rules.threshold_rule(s, c, tau), ref_threshold(s, c, tau))


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("factor", [0.5, 1.0, 2.0])
def test_factor_matches_reference(seed, factor):
    s, c, _ = _rows(seed)
    s = 0.5 + s / 2  # confidences where the rule selects a varying number
    assert torch.equal(rules.factor_rule(s, c, factor), ref_factor(s, c, factor))


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("factor", [0.5, 1.0, 2.0, 3.0])
def test_factor_official_matches_fast_dllm_code(seed, factor):
    s, c, g = _rows(seed)
    s = 0.5 + s / 2
    c[::4] &= torch.rand(c[::4].shape, generator=g) < 0.25  # rows with 0-3 candidates, where it differs
    want = ref_factor_official(s, c, factor)
    assert torch.equal(rules.factor_rule(s, c, factor, official=True), want)
    # the two versions differ exactly where only the last candidate failed
    plain = rules.factor_rule(s, c, factor)
    differs = (plain != want).any(dim=1)
    assert differs.any() and torch.equal(differs, want.sum(1) == plain.sum(1) + 1)
    assert torch.equal(want.sum(1)[differs], c.sum(1)[differs])


def test_factor_official_reveals_both_of_two_masks():
    s = torch.tensor([[0.99, 0.2], [0.3, 0.2]])
    c = torch.ones(2, 2, dtype=torch.bool)
    assert rules.factor_rule(s, c, 1.0).sum(1).tolist() == [1, 1]
    assert rules.factor_rule(s, c, 1.0, official=True).sum(1).tolist() == [2, 2]


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("gamma", [0.0, 0.3, 0.5, 1.5, 4.0, float("inf")])
def test_entropy_matches_reference(seed, gamma):
    e, c, _ = _rows(seed)
    assert torch.equal(rules.entropy_rule(e, c, gamma), ref_entropy(e, c, gamma))


def test_entropy_reveals_the_token_that_crosses_the_bound():
    # Sorted 0.05, 0.2, 0.9: sums before each are 0, 0.05, 0.25, so gamma 0.1 reveals two
    # (a running sum including the last, 0.25, would reveal one).
    e = torch.tensor([[0.9, 0.05, 0.2, 0.0]])
    c = torch.tensor([[True, True, True, False]])
    assert rules.entropy_rule(e, c, 0.1).tolist() == [[False, True, True, False]]
    assert rules.entropy_rule(e, c, 0.3).tolist() == [[True, True, True, False]]
    assert rules.entropy_rule(e, c, 0.0).tolist() == [[False, True, False, False]]


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("factor", [0.3, 1.0, 5.0])
def test_planner_greedy_matches_reference(seed, factor):
    p, c, _ = _rows(seed)
    assert torch.equal(rules.planner_greedy_rule(p, c, factor), ref_planner_greedy(p, c, factor))


def test_planner_greedy_with_a_huge_factor_reveals_every_candidate():
    p, c, _ = _rows(0)
    p = p.clamp(min=1e-3)  # a float -> int64 overflow used to turn 1e20 * p into k = 1 on the CPU
    assert torch.equal(rules.planner_greedy_rule(p, c, 1e20), c & c.any(dim=1, keepdim=True))


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("factor", [0.3, 1.0, 5.0])
def test_planner_sample_matches_reference(seed, factor):
    p, c, g = _rows(seed)
    u = torch.rand(p.shape, generator=g)
    assert torch.equal(rules.planner_sample_rule(p, c, u, factor), ref_planner_sample(p, c, u, factor))


@pytest.mark.parametrize("seed", range(3))
def test_select_top_k_matches_reference(seed):
    s, c, g = _rows(seed)
    k = torch.randint(0, 14, (s.shape[0],), generator=g)
    want = torch.stack([_as_mask(_ranked(r, m)[: int(kk)], s.shape[1]) for r, m, kk in zip(s.tolist(), c.tolist(), k)])
    assert torch.equal(rules.select_top_k(s, c, k), want)


def test_every_rule_selects_subset_and_at_least_one():
    s, c, g = _rows(7)
    u = torch.rand(s.shape, generator=g)
    selections = [
        rules.threshold_rule(s, c, 1.0), rules.factor_rule(s, c, 0.01), rules.entropy_rule(s, c, 0.0),
        rules.planner_greedy_rule(s * 0, c, 1.0), rules.planner_sample_rule(s * 0, c, u),
    ]
    has = c.any(dim=1)
    for sel in selections:
        assert not (sel & ~c).any()
        assert torch.equal(sel.any(dim=1), has)


def test_schedule_spreads_block_evenly():
    counts = [int(rules.schedule_count(torch.tensor([i]), 10, 4)) for i in range(4)]
    assert counts == [3, 3, 2, 2] and sum(counts) == 10
    assert sum(int(rules.schedule_count(torch.tensor([i]), 32, 32)) for i in range(32)) == 32
    assert int(rules.schedule_count(torch.tensor([0]), 32, 1)) == 32
