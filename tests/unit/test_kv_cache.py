"""Prefix and dual KV caches: exact where nothing is stale, same invariants as uncached decoding."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from dultra.decoding import (
    DecodeConfig,
    EntropyBounded,
    Factor,
    LowConfidence,
    PlannerGreedy,
    PlannerSample,
    Threshold,
    generate,
    replay,
)
from dultra.decoding.trajectory import replay_forwards, replay_steps
from dultra.errors import ConfigError
from dultra.model.kv_cache import KVCache
from tests.helpers import MASK, padded_prompts, small_model

ALL = [PlannerGreedy(1.0), PlannerSample(), Threshold(0.5), Factor(1.0), LowConfidence(16), EntropyBounded(0.5)]
CACHES = ["prefix", "dual"]


def _scored(model, x, mask, index, **cache_args):
    """Token and planner logits of the block `index` (B, N), the planner seeing that block's masks."""
    planner_mask = torch.zeros_like(x, dtype=torch.bool).scatter_(1, index, True)
    t = torch.tensor([0.25, 0.5, 0.75])
    out = model(x, attention_mask=mask, logits_index=index, planner_t=t, planner_mask=planner_mask, **cache_args)
    return out.logits, out.planner_logits


@pytest.mark.parametrize("kind", CACHES)
@pytest.mark.parametrize("n_kv_heads", [4, 2])
@torch.no_grad()
def test_cached_forward_equals_the_full_forward_when_nothing_is_stale(kind, n_kv_heads):
    model = small_model(n_kv_heads=n_kv_heads)
    ids, mask, _ = padded_prompts()
    x = torch.cat([ids, torch.full((3, 16), MASK)], dim=1)
    mask = torch.cat([mask, torch.ones(3, 16, dtype=torch.long)], dim=1)
    index = torch.arange(13, 17).expand(3, -1)  # the second block of four
    fresh = index if kind == "dual" else torch.arange(13, x.shape[1]).expand(3, -1)
    cache = KVCache()
    full = _scored(model, x, mask, index, cache=cache)  # fills the cache
    cached = _scored(model, x, mask, index, cache=cache, fresh=fresh)
    assert torch.allclose(cached[0], full[0], atol=1e-5) and torch.allclose(cached[1], full[1], atol=1e-5)


@torch.no_grad()
def test_cached_forward_reads_stale_columns_until_the_next_refresh(model):
    """A token changed outside the fresh columns is not seen (the Fast-dLLM approximation);
    the prefix cache recomputes the columns after the block, so it sees that change."""
    ids, mask, _ = padded_prompts()
    x = torch.cat([ids, torch.full((3, 16), MASK)], dim=1)
    mask = torch.cat([mask, torch.ones(3, 16, dtype=torch.long)], dim=1)
    index = torch.arange(13, 17).expand(3, -1)
    cache = KVCache()
    before = _scored(model, x, mask, index, cache=cache)
    x[:, 18] = 5  # a column after the block: stale for dual, recomputed by prefix
    now = _scored(model, x, mask, index)
    dual = _scored(model, x, mask, index, cache=cache, fresh=index)
    assert torch.allclose(dual[0], before[0], atol=1e-5) and not torch.allclose(dual[0], now[0], atol=1e-3)
    prefix = _scored(model, x, mask, index, cache=cache, fresh=torch.arange(13, x.shape[1]).expand(3, -1))
    assert not torch.allclose(prefix[0], before[0], atol=1e-3)


def test_fresh_columns_need_a_filled_cache(model):
    x = torch.full((1, 8), MASK)
    with pytest.raises(ConfigError, match="filled cache"):
        model(x, cache=KVCache(), fresh=torch.arange(4)[None])


@pytest.mark.parametrize("kind", CACHES)
@pytest.mark.parametrize("strategy", ALL, ids=lambda s: s.spec())
def test_every_position_revealed_with_a_cache(model, strategy, kind):
    ids, mask, _ = padded_prompts()
    out = generate(model, ids, mask, strategy, DecodeConfig(gen_length=16, block_length=4, seed=0, cache=kind))
    assert not (out.completion == MASK).any()
    assert ((out.nfe >= 4) & (out.nfe <= 16)).all()
    assert out.steps >= int(out.nfe.max())


@pytest.mark.parametrize("kind", CACHES)
@pytest.mark.parametrize("strategy", [PlannerGreedy(1e6), Threshold(0.0)], ids=lambda s: s.spec())
def test_one_step_per_block_is_exact_because_every_step_refreshes(model, strategy, kind):
    ids, mask, _ = padded_prompts()
    config = DecodeConfig(gen_length=16, block_length=4)
    plain = generate(model, ids, mask, strategy, config)
    cached = generate(model, ids, mask, strategy, DecodeConfig(gen_length=16, block_length=4, cache=kind))
    assert (cached.nfe == 4).all()
    assert torch.equal(cached.completion, plain.completion)


def test_prefix_and_dual_are_the_same_cache_with_a_single_block(model):
    ids, mask, _ = padded_prompts()
    runs = [generate(model, ids, mask, Threshold(0.9), DecodeConfig(gen_length=8, block_length=8, cache=k))
            for k in CACHES]
    assert torch.equal(runs[0].completion, runs[1].completion) and torch.equal(runs[0].nfe, runs[1].nfe)


@pytest.mark.parametrize("kind", CACHES)
@pytest.mark.parametrize("strategy", [PlannerGreedy(1.0), Threshold(0.3), LowConfidence(8)], ids=lambda s: s.spec())
def test_batch_with_a_cache_equals_each_prompt_alone(model, strategy, kind):
    """Rows wait for each other at block ends, so a row's cache holds what it would alone."""
    ids, mask, prompts = padded_prompts()
    config = DecodeConfig(gen_length=16, block_length=4, cache=kind)
    batch = generate(model, ids, mask, strategy, config)
    for i, p in enumerate(prompts):
        alone = generate(model, p[None], None, strategy, config)
        assert torch.equal(batch.completion[i], alone.completion[0])
        assert batch.nfe[i] == alone.nfe[0]


def test_a_row_that_stops_early_mid_block_lets_the_batch_refresh_at_once():
    """With a cache the batch moves to the next block when every row's block is done; a row
    ended by early stop mid-block counts as done then, not one forward later (a forward in
    which no row had anything to decode)."""
    ids = torch.randint(0, 60, (3, 4), generator=torch.Generator().manual_seed(165))
    config = DecodeConfig(gen_length=8, block_length=4, early_stop=True, record=True, cache="prefix",
                          eos_ids=(36, 0, 41, 48, 26, 5, 22, 50, 18), temperature=1.0, seed=165)
    out = generate(small_model(1), ids, None, PlannerSample(1.0), config)
    steps = out.trajectory.unmask_step
    assert steps[0, 2] == -1 and steps[0, 3] >= 0  # row 0 stopped after its EOS with a mask left in block 1
    assert out.trajectory.taken.any(dim=0).all()  # every forward decoded a token somewhere
    assert out.refreshes == 2 and out.steps == int(out.nfe.max())


def test_a_cache_changes_the_output_of_a_multi_step_decode(model):
    """Guards the tests above against a cache that silently recomputes everything."""
    ids, mask, _ = padded_prompts()
    plain = generate(model, ids, mask, Threshold(1.0), DecodeConfig(gen_length=16, block_length=4))
    dual = generate(model, ids, mask, Threshold(1.0), DecodeConfig(gen_length=16, block_length=4, cache="dual"))
    assert not torch.equal(plain.completion, dual.completion)


@pytest.mark.parametrize(
    "config, message",
    [
        (DecodeConfig(gen_length=16, block_length=4, cache="full"), "unknown cache"),
    ],
)
def test_clear_errors_for_unsupported_cache_settings(model, config, message):
    with pytest.raises(ConfigError, match=message):
        generate(model, torch.zeros(1, 4, dtype=torch.long), None, Threshold(0.9), config)


@pytest.mark.parametrize("kind", CACHES)
@pytest.mark.parametrize("strategy", ALL, ids=lambda s: s.spec())
def test_cached_replay_reproduces_the_cached_rollout(model, strategy, kind):
    """RL with a cache: the replay (under autograd) gives the log-probs the rollout recorded."""
    ids, mask, _ = padded_prompts()
    config = DecodeConfig(gen_length=16, block_length=4, seed=2, temperature=0.7, record=True, cache=kind)
    out = generate(model, ids, mask, strategy, config)
    traj = out.trajectory
    assert torch.equal(traj.num_steps, out.nfe) and traj.taken.shape[1] == out.steps
    assert traj.refreshes[0] == 0 and len(traj.refreshes) == 4 == out.refreshes  # one per block of the batch
    assert generate(model, ids, mask, strategy, replace(config, cache="none")).refreshes == 0
    assert (traj.log_probs[~traj.taken] == 0).all()
    replayed = replay(model, traj)
    assert torch.allclose(replayed, traj.log_probs, atol=1e-5)
    packs = list(replay_steps(model, traj))
    assert len(packs) == 4 and sum(p.forwards for p in packs) == replay_forwards(traj) == out.steps


def test_cached_replay_differs_from_an_uncached_replay_of_the_same_trajectory(model):
    """Guards the test above: the cache's stale keys really enter the replayed log-probs."""
    ids, mask, _ = padded_prompts()
    config = DecodeConfig(gen_length=16, block_length=4, seed=2, temperature=0.7, record=True, cache="dual")
    traj = generate(model, ids, mask, PlannerSample(), config).trajectory
    assert (~traj.taken).any()  # rows waited for the batch: the replay skips those steps
    assert torch.allclose(replay(model, traj), traj.log_probs, atol=1e-5)
    with torch.no_grad():
        uncached = replay(model, replace(traj, cache="none", refreshes=()))
    assert not torch.allclose(uncached, traj.log_probs, atol=1e-3)


@pytest.mark.parametrize("kind", CACHES)
def test_cached_replay_gradient_matches_finite_differences(kind):
    """The gradient reaches the weights through the refresh's keys and values as well (one
    that stopped there is 17% off here). Weights in float64; log-probs are float32, so eps
    is as small as their rounding allows (the remaining gap is ~2e-4)."""
    model = small_model(3).double()
    ids, mask, _ = padded_prompts()
    config = DecodeConfig(gen_length=8, block_length=4, seed=1, temperature=0.7, record=True, cache=kind)
    traj = generate(model, ids, mask, PlannerSample(), config).trajectory
    assert (traj.num_steps > 2).any()  # some blocks take cached steps
    params = list(model.parameters())
    direction = [torch.randn_like(p, generator=torch.Generator().manual_seed(i)) for i, p in enumerate(params)]
    model.zero_grad()
    replay(model, traj).sum().backward()
    analytic = float(sum((p.grad * d).sum() for p, d in zip(params, direction)))
    eps = 3e-4

    def shifted(sign):
        with torch.no_grad():
            for p, d in zip(params, direction):
                p.add_(sign * eps * d)
            value = float(replay(model, traj).double().sum())
            for p, d in zip(params, direction):
                p.sub_(sign * eps * d)
        return value

    numeric = (shifted(1) - shifted(-1)) / (2 * eps)
    assert analytic == pytest.approx(numeric, rel=1e-3)


@pytest.mark.parametrize("kind", CACHES)
def test_cached_replay_gradients_are_the_same_with_activation_checkpointing(kind):
    """Full-model GRPO at 8B checkpoints activations; recomputed blocks read the same refresh."""
    model = small_model(3)
    ids, mask, _ = padded_prompts()
    config = DecodeConfig(gen_length=8, block_length=4, seed=1, temperature=0.7, record=True, cache=kind)
    traj = generate(model, ids, mask, PlannerSample(), config).trajectory
    grads, kept, saved = [], [], []
    for checkpointing in (False, True):
        model.train()
        model.checkpoint_activations(checkpointing)
        model.zero_grad()
        saved.clear()
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
            loss = replay(model, traj).sum()
        loss.backward()
        grads.append([p.grad.clone() for p in model.parameters()])
        kept.append(len(saved))
    assert kept[1] < 0.7 * kept[0]  # checkpointed blocks keep their inputs only, for the backward
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*grads)) and grads[0][0].abs().sum() > 0
