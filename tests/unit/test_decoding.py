"""Decoding invariants on tiny models (dultra.md sections 3-4)."""

from __future__ import annotations

import copy
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
    parse_strategy,
    replay,
)
from dultra.decoding.generate import _fill_after_eos
from dultra.decoding.trajectory import replay_forwards, replay_steps
from dultra.errors import ConfigError
from tests.helpers import EOS, MASK, PAD, padded_prompts, predict_eos, small_model

ALL = [PlannerGreedy(1.0), PlannerSample(), Threshold(0.5), Factor(1.0), LowConfidence(16), EntropyBounded(0.5)]
CFG = DecodeConfig(gen_length=16, block_length=4, record=True, seed=0)


def _prompts(B=3, P=6, seed=0):
    return torch.randint(0, 60, (B, P), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("strategy", ALL, ids=lambda s: s.spec())
def test_every_position_revealed_exactly_once_block_by_block(model, strategy):
    out = generate(model, _prompts(), None, strategy, CFG)
    traj = out.trajectory
    assert not (out.completion == MASK).any()
    assert (traj.unmask_step >= 0).all() and torch.equal(traj.num_steps, out.nfe)
    assert (out.nfe <= CFG.gen_length).all()
    for b in range(3):
        steps = traj.unmask_step[b]
        # Each step reveals >= 1 position, and blocks are finished in order.
        assert set(steps.tolist()) == set(range(int(out.nfe[b])))
        per_block = steps.view(-1, CFG.block_length)
        assert (per_block.max(dim=1).values[:-1] < per_block.min(dim=1).values[1:]).all()


@pytest.mark.parametrize("strategy", [Threshold(1.0), LowConfidence(16)], ids=lambda s: s.spec())
def test_one_token_per_step_rules(model, strategy):
    out = generate(model, _prompts(), None, strategy, CFG)
    assert (out.nfe == CFG.gen_length).all()


def test_huge_planner_factor_reveals_a_block_per_step(model):
    out = generate(model, _prompts(), None, PlannerGreedy(factor=1e6), CFG)
    assert (out.nfe == CFG.gen_length // CFG.block_length).all()


def test_low_confidence_follows_its_schedule(model):
    out = generate(model, _prompts(), None, LowConfidence(steps=8), CFG)
    assert (out.nfe == 8).all()
    counts = torch.stack([(out.trajectory.unmask_step == s).sum(dim=1) for s in range(8)], dim=1)
    assert (counts == 2).all()


@pytest.mark.parametrize("strategy", ALL, ids=lambda s: s.spec())
def test_replay_reproduces_recorded_log_probs(model, strategy):
    config = DecodeConfig(gen_length=16, block_length=4, record=True, seed=3, temperature=0.7)
    out = generate(model, _prompts(), None, strategy, config)
    traj = out.trajectory
    assert torch.isfinite(traj.log_probs).all()
    with torch.no_grad():
        replayed = replay(model, traj)
    assert torch.allclose(replayed, traj.log_probs, atol=1e-5)
    steps = torch.arange(traj.log_probs.shape[1])
    assert (traj.log_probs[steps[None] >= traj.num_steps[:, None]] == 0).all()


def test_replay_packs_the_steps_rows_took_into_full_forwards(model):
    """Rows that finish early leave their slots to later steps: ceil(sum(NFE) / B) forwards."""
    out = generate(model, _prompts(B=4), None, PlannerSample(), CFG)
    traj = out.trajectory
    assert traj.num_steps.min() < traj.num_steps.max()  # otherwise nothing to pack
    packs = list(replay_steps(model, traj))
    total = int(traj.num_steps.sum())
    assert len(packs) == -(-total // 4) < int(traj.num_steps.max())
    assert [p.last for p in packs] == [False] * (len(packs) - 1) + [True]
    pairs = torch.cat([torch.stack([p.rows, p.steps], dim=1) for p in packs])
    assert len(pairs) == total == len(pairs.unique(dim=0))  # every step a row took, once
    assert (pairs[:, 1] < traj.num_steps[pairs[:, 0]]).all()


def test_replay_padded_to_more_forwards_yields_empty_packs_that_still_backpropagate(model):
    """Sharded processes replay as many forwards as the longest one: the extra packs are empty."""
    traj = generate(model, _prompts(B=4), None, PlannerSample(), CFG).trajectory
    own = replay_forwards(traj)
    packs = list(replay_steps(model, traj, forwards=own + 2))
    assert len(packs) == own + 2 and len(list(replay_steps(model, traj))) == own
    assert [len(p.rows) for p in packs[own:]] == [0, 0] and [p.last for p in packs[-3:]] == [False, False, True]
    assert torch.allclose(replay(model, traj, forwards=own + 2), traj.log_probs, atol=1e-5)
    model.zero_grad(set_to_none=True)
    packs[-1].log_prob.sum().backward()  # an empty pack's loss is 0 but its backward reaches every weight
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads) and all(g.abs().sum() == 0 for g in grads)
    model.zero_grad(set_to_none=True)


def test_replay_of_rows_without_steps_still_runs_the_forwards_asked_for(model):
    traj = generate(model, _prompts(B=2), None, PlannerSample(), CFG).trajectory
    idle = traj.select(torch.tensor([0]))
    idle.taken = torch.zeros_like(idle.taken)
    assert replay_forwards(idle) == 0 and list(replay_steps(model, idle)) == []
    packs = list(replay_steps(model, idle, forwards=3))
    assert len(packs) == 3 and all(len(p.rows) == 0 for p in packs) and packs[-1].last


def test_lockstep_without_a_process_group_decodes_as_without(model):
    config = DecodeConfig(gen_length=16, block_length=4, record=True, seed=5, temperature=0.5)
    plain = generate(model, _prompts(), None, PlannerSample(), config)
    locked = generate(model, _prompts(), None, PlannerSample(), replace(config, lockstep=True))
    assert torch.equal(plain.sequences, locked.sequences) and torch.equal(plain.nfe, locked.nfe)
    assert plain.steps == locked.steps


def test_replay_has_gradients_for_base_and_head(model):
    out = generate(model, _prompts(), None, PlannerSample(), CFG)
    replay(model, out.trajectory).sum().backward()
    assert model.mask_linear.weight.grad is not None and model.mask_linear.weight.grad.abs().sum() > 0
    assert model.model.transformer.blocks[0].q_proj.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("cache", ["none", "prefix", "dual"])
def test_replay_on_the_recorded_trunk_skips_it_and_gives_the_same_log_probs_and_head_gradients(model, cache):
    """A frozen base's replay runs only the heads, on the trunk outputs decoding recorded."""
    model.set_trainable(base=False, planner=True)
    config = DecodeConfig(gen_length=16, block_length=4, record=True, seed=2, temperature=0.5, cache=cache)
    full = generate(model, _prompts(B=4), None, PlannerSample(), config).trajectory
    light = generate(model, _prompts(B=4), None, PlannerSample(), replace(config, record_trunk=True)).trajectory
    assert full.trunk is None and torch.equal(full.completion, light.completion)
    B, S, L = 4, full.log_probs.shape[1], 6 + 16
    assert light.trunk.shape == (B, S, L, model.config.d_model)

    def head_grads(traj):
        model.zero_grad(set_to_none=True)
        calls = []
        hook = model.model.register_forward_hook(lambda *_: calls.append(1))
        log_probs = replay(model, traj)
        hook.remove()
        (log_probs * torch.linspace(-1, 1, S)).sum().backward()
        return log_probs, len(calls), [p.grad.clone() for p in model.planner_parameters()]

    full_lp, full_calls, full_grads = head_grads(full)
    light_lp, light_calls, light_grads = head_grads(light)
    assert full_calls == replay_forwards(full) and light_calls == 0
    assert replay_forwards(light) == -(-int(light.num_steps.sum()) // B)  # packed, cached or not
    assert torch.allclose(light_lp, light.log_probs, atol=1e-5) and torch.allclose(light_lp, full_lp, atol=1e-5)
    for a, b in zip(light_grads, full_grads, strict=True):
        assert torch.allclose(a, b, atol=1e-5)
    sub = light.select(torch.tensor([1, 3]))
    assert sub.trunk is light.trunk  # shared, not copied
    pairs = torch.tensor([0, 1]), torch.tensor([0, 2])
    assert torch.equal(sub.trunk_of(*pairs), light.trunk[[1, 3], [0, 2]])
    assert torch.equal(sub.select(torch.tensor([1])).trunk_of(torch.tensor([0]), torch.tensor([2])), light.trunk[[3], [2]])


def test_planner_step_log_prob_formula(model):
    """log pi = sum_revealed [log p + log q(x0)] + sum_kept log(1 - p), recomputed by hand."""
    from dultra.decoding.trajectory import step_log_prob

    z = torch.tensor([[0.3, -1.0, 2.0, 0.0]])
    logq = torch.tensor([[-0.5, -1.5, -0.1, -3.0]])
    revealed = torch.tensor([[True, False, True, False]])
    kept = torch.tensor([[False, True, False, False]])
    p = torch.sigmoid(z)[0]
    want = (p[0].log() - 0.5) + (p[2].log() - 0.1) + (1 - p[1]).log()
    assert torch.allclose(step_log_prob(z, logq, revealed, kept), want[None], atol=1e-6)
    assert torch.allclose(step_log_prob(None, logq, revealed, kept), torch.tensor([-0.6]))


@pytest.mark.parametrize("strategy", [PlannerGreedy(1.0), Threshold(0.3), EntropyBounded(1.0)], ids=lambda s: s.spec())
def test_batch_decoding_equals_decoding_each_prompt_alone(model, strategy):
    """In float64: in float32 a padded batch's matmuls round differently from a lone row's (by
    CPU kernel: AVX2 and AVX-512 differ), enough to flip a near-tie of the random model."""
    model = copy.deepcopy(model).double()
    ids, mask, prompts = padded_prompts()
    config = DecodeConfig(gen_length=16, block_length=4)
    batch = generate(model, ids, mask, strategy, config)
    for i, p in enumerate(prompts):
        alone = generate(model, p[None], None, strategy, config)
        assert torch.equal(batch.completion[i], alone.completion[0])
        assert batch.nfe[i] == alone.nfe[0]


def test_padding_with_the_mask_id_does_not_change_the_planner(model):
    ids, mask, prompts = padded_prompts()
    config = DecodeConfig(gen_length=16, block_length=4, temperature=0.5, seed=3, record=True)
    pad, masked = (generate(model, ids.masked_fill(mask == 0, fill), mask, PlannerSample(), config)
                   for fill in (PAD, MASK))
    assert torch.equal(pad.completion, masked.completion)
    assert torch.allclose(pad.trajectory.log_probs, masked.trajectory.log_probs, atol=1e-6)


def test_sampling_is_reproducible_with_a_seed(model):
    config = DecodeConfig(gen_length=16, block_length=4, temperature=1.0, seed=11)
    a = generate(model, _prompts(), None, PlannerSample(), config)
    b = generate(model, _prompts(), None, PlannerSample(), config)
    c = generate(model, _prompts(), None, PlannerSample(), DecodeConfig(gen_length=16, block_length=4, temperature=1.0, seed=12))
    assert torch.equal(a.completion, b.completion) and torch.equal(a.nfe, b.nfe)
    assert not torch.equal(a.completion, c.completion)


def _eos_model():
    return predict_eos(small_model())


def test_early_stop_ends_after_eos_and_fills_the_tail():
    model = _eos_model()
    config = DecodeConfig(gen_length=16, block_length=4)
    full = generate(model, _prompts(), None, Threshold(1.0), config)
    assert (full.nfe == 16).all() and (full.lengths == 0).all()
    early = generate(model, _prompts(), None, Threshold(1.0), DecodeConfig(gen_length=16, block_length=4, early_stop=True, record=True))
    assert (early.nfe == 1).all()
    assert (early.completion == EOS).all()
    assert (early.trajectory.unmask_step[:, 1:] == -1).all()
    assert torch.allclose(replay(model, early.trajectory), early.trajectory.log_probs, atol=1e-5)


def test_fill_after_eos_waits_for_masks_before_the_eos():
    P, M, E = 2, MASK, EOS
    x = torch.tensor([
        [5, 5, 7, E, M, M],   # EOS with everything before revealed: complete
        [5, 5, M, E, M, 7],   # a mask before the EOS: keep decoding
        [5, 5, 7, 8, M, M],   # no EOS yet
    ])
    done = _fill_after_eos(x, P, torch.tensor([E]), E, M)
    assert done.tolist() == [True, False, False]
    assert x[0].tolist() == [5, 5, 7, E, E, E] and x[1, 4] == M and x[2, 4] == M


def test_tpf_counts_tokens_before_eos():
    model = _eos_model()
    out = generate(model, _prompts(), None, PlannerGreedy(1e6), DecodeConfig(gen_length=16, block_length=4))
    assert (out.lengths == 0).all() and (out.tpf == 0).all()


def test_lengths_and_texts_stop_at_the_first_eos_mid_completion(model, tiny_tokenizer):
    config = DecodeConfig(gen_length=16, block_length=4)
    full = generate(model, _prompts(B=1), None, Threshold(0.5), config)
    row = full.completion[0].tolist()
    k = next(i for i in range(3, 16) if row[i] not in row[:i])  # a token first decoded at position k
    cut = generate(model, _prompts(B=1), None, Threshold(0.5), replace(config, eos_ids=(row[k],)))
    assert torch.equal(cut.completion, full.completion)  # an EOS id changes no decoding without early stop
    assert cut.lengths.tolist() == [k] and full.lengths.tolist() == [16]
    assert cut.tpf.tolist() == pytest.approx([k / int(cut.nfe[0])])
    assert cut.texts(tiny_tokenizer) == tiny_tokenizer.batch_decode([row[:k]], skip_special_tokens=True)


@pytest.mark.parametrize(
    "config, strategy, message",
    [
        (DecodeConfig(gen_length=30, block_length=8), Threshold(),
         r"gen_length \(30\) is not a multiple of block_length \(8\): e.g. gen_length 32 or block_length 6"),
        (DecodeConfig(gen_length=16, block_length=32), Threshold(), r"block_length \(32\) exceeds gen_length \(16\)"),
        (DecodeConfig(gen_length=0, block_length=8), Threshold(), "gen_length must be > 0, got 0"),
        (DecodeConfig(gen_length=512, block_length=8), Threshold(), "exceeds the model's context"),
        (DecodeConfig(gen_length=16, block_length=4), LowConfidence(steps=6), "low-confidence steps"),
        (DecodeConfig(gen_length=16, block_length=4, temperature=-1), Threshold(), "temperature"),
        (DecodeConfig(gen_length=16, block_length=4, temperature=float("inf")), Threshold(), "finite"),
        (DecodeConfig(gen_length=16, block_length=4, temperature=1e39), Threshold(), "finite"),  # inf in float32
        (DecodeConfig(gen_length=16, block_length=4, temperature=True), Threshold(), "temperature must be"),
        (DecodeConfig(gen_length=16, block_length=4, early_stop="yes"), Threshold(), "early_stop must be True or"),
        (DecodeConfig(gen_length=16, block_length=4, seed=1.5), Threshold(), "seed must be None or an integer"),
        (DecodeConfig(gen_length=16, block_length=4, seed=2**64), Threshold(), "seed must be None or an integer"),
        (DecodeConfig(gen_length=16, block_length=4, eos_ids=5), Threshold(), "eos_ids must be a tuple"),
        (DecodeConfig(gen_length=16, block_length=4, eos_ids=(MASK,)), Threshold(), "eos_ids hold the mask token"),
        ({"gen_length": 16}, Threshold(), "config must be a DecodeConfig, got dict"),
        (DecodeConfig(gen_length=16.0, block_length=4), Threshold(), "gen_length must be an integer, got 16.0"),
        (DecodeConfig(gen_length=16, block_length=4, max_steps=0), Threshold(), "max_steps must be None"),
        (DecodeConfig(gen_length=16, block_length=4, record_trunk=True), Threshold(), "needs record=True"),
        (DecodeConfig(gen_length=16, block_length=4, eos_ids=(10**6,)), Threshold(), r"eos_ids \[1000000\] are not"),
        (DecodeConfig(gen_length=16, block_length=4), object(), "strategy must be a Strategy or a spec"),
    ],
)
def test_clear_errors_for_bad_settings(model, config, strategy, message):
    with pytest.raises(ConfigError, match=message):
        generate(model, _prompts(), None, strategy, config)


@pytest.mark.parametrize("make, message", [
    (lambda: Threshold(tau=1.5), r"tau must be in \[0, 1\], got 1.5"),
    (lambda: parse_strategy("threshold:tau=5"), r"tau must be in \[0, 1\], got 5.0"),
    (lambda: PlannerGreedy(float("inf")), "factor must be a finite"),
    (lambda: Factor(float("nan")), "factor must be a finite"),
    (lambda: EntropyBounded(float("nan")), "gamma"),
    (lambda: Threshold("0.9"), "strategy 'threshold': tau must be a number, got '0.9'"),
    (lambda: LowConfidence(steps=16.0), "strategy 'low-confidence': steps must be an integer, got 16.0"),
    (lambda: Factor(official="yes"), "official must be true or false"),
])
def test_strategies_refuse_bad_settings_when_made(make, message):
    with pytest.raises(ConfigError, match=message):
        make()


def test_a_strategy_may_be_given_as_its_spec(model):
    assert torch.equal(generate(model, _prompts(), None, "threshold:tau=0.5", CFG).completion,
                       generate(model, _prompts(), None, Threshold(0.5), CFG).completion)


def _left_padded():
    ids = _prompts()
    mask = torch.ones_like(ids)
    mask[0, :2] = 0
    return ids, mask


@pytest.mark.parametrize("inputs, message", [
    (lambda ids, mask: (ids.float(), mask), "input_ids must be a 2-D integer tensor .* got a 2-D torch.float32"),
    (lambda ids, mask: (ids[0], None), "got a 1-D torch.int64 tensor"),
    (lambda ids, mask: (ids.tolist(), None), "got list"),
    (lambda ids, mask: (ids[:0], None), "no prompt"),
    (lambda ids, mask: (ids.to("meta"), None), "meta device"),
    (lambda ids, mask: (ids + 10**6, mask), "outside this model's vocabulary"),
    (lambda ids, mask: (ids, mask[:, 1:]), r"attention_mask must have the shape of input_ids \(3, 6\), got \(3, 5\)"),
    (lambda ids, mask: (ids, mask.flip(1)), "left-padded"),  # right padding
    (lambda ids, mask: (ids, mask * 0), "left-padded"),  # a row with no token
    (lambda ids, mask: (ids, mask * 2), "must be 0/1"),
])
def test_clear_errors_for_bad_prompts(model, inputs, message):
    with pytest.raises(ConfigError, match=message):
        generate(model, *inputs(*_left_padded()), Threshold(0.5), CFG)


def test_int32_prompts_decode_as_int64_ones(model):
    ids, mask = _left_padded()
    assert torch.equal(generate(model, ids.int(), mask.int(), Threshold(0.5), CFG).completion,
                       generate(model, ids, mask, Threshold(0.5), CFG).completion)


def test_a_decode_cut_by_max_steps_counts_only_decoded_tokens(model):
    out = generate(model, _prompts(), None, LowConfidence(16), replace(CFG, max_steps=3))
    decoded = (out.completion != MASK).sum(dim=1)
    assert (decoded == 3).all() and torch.equal(out.lengths, decoded)  # one token a step, no EOS yet


def test_planner_strategy_needs_a_planner_head():
    with pytest.raises(ConfigError, match="needs a planner head"):
        generate(small_model(num_head_layers=0), _prompts(), None, PlannerGreedy(), CFG)


def test_parse_strategy_round_trips_and_rejects_unknowns():
    for s in ALL:
        assert parse_strategy(s.spec()) == s
    assert parse_strategy("low-confidence:steps=64") == LowConfidence(64)
    with pytest.raises(ConfigError, match="unknown strategy"):
        parse_strategy("greedy")
    with pytest.raises(ConfigError, match="bad setting"):
        parse_strategy("threshold:gamma=1")
    with pytest.raises(ConfigError, match="must be a number"):
        parse_strategy("threshold:tau=high")
    with pytest.raises(ConfigError, match="sets tau twice"):
        parse_strategy("threshold:tau=0.5,tau=0.9")
    assert parse_strategy(" threshold : tau = 0.5 ") == Threshold(0.5)


def test_parse_strategy_reads_switches_and_names_them_only_when_on():
    assert Factor(1.0).spec() == "factor:factor=1.0"  # the name eval reports and resumes by
    official = parse_strategy("factor:factor=2.0,official=true")
    assert official == Factor(2.0, official=True) and official.spec() == "factor:factor=2.0,official=true"
    assert parse_strategy(official.spec()) == official
    assert parse_strategy("factor:official=1") == parse_strategy("factor:official=True") == Factor(official=True)
    assert parse_strategy("factor:official=false") == Factor()
    with pytest.raises(ConfigError, match="official must be true or false"):
        parse_strategy("factor:official=maybe")
