"""GPU checks (run on the GPU machine: `pytest -m gpu tests/gpu`)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from dultra.decoding import DecodeConfig, PlannerGreedy, PlannerSample, Threshold, generate, replay
from dultra.decoding.graphs import captured_steps
from tests.helpers import small_model

pytestmark = pytest.mark.gpu  # without CUDA, conftest.py fails the run
CFG = DecodeConfig(gen_length=32, block_length=8)


def _prompts():
    return torch.randint(0, 60, (4, 10), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("strategy", [PlannerGreedy(1.0), Threshold(0.3)], ids=lambda s: s.spec())
def test_cuda_float32_decoding_matches_cpu(strategy):
    cpu = generate(small_model(), _prompts(), None, strategy, CFG)
    gpu = generate(small_model().cuda(), _prompts().cuda(), None, strategy, CFG)
    assert torch.equal(cpu.completion, gpu.completion.cpu()) and torch.equal(cpu.nfe, gpu.nfe.cpu())


@pytest.mark.parametrize("cache", ["none", "prefix", "dual"])
def test_captured_cuda_graphs_match_eager(cache):
    model = small_model().cuda()
    config = DecodeConfig(gen_length=32, block_length=8, temperature=0.5, seed=1, record=True, cache=cache)
    for strategy in (PlannerGreedy(1.0), PlannerSample()):
        eager = generate(model, _prompts().cuda(), None, strategy, config)
        for _ in range(2):  # the first run captures the graphs, the second only replays them
            compiled = generate(model.fuse_projections(), _prompts().cuda(), None, strategy, replace(config, compile=True))
            assert torch.equal(eager.completion, compiled.completion)
            assert torch.allclose(eager.trajectory.log_probs, compiled.trajectory.log_probs, atol=1e-4)


@pytest.mark.parametrize("cache", ["none", "dual"])
def test_captured_cuda_graphs_read_weights_updated_in_place(cache):
    """GRPO steps the weights in place between compiled rollouts: replayed graphs must see the new values."""
    model = small_model().cuda().fuse_projections()
    config = DecodeConfig(gen_length=32, block_length=8, temperature=0.5, seed=1, record=True, cache=cache)
    compiled = replace(config, compile=True)
    before = generate(model, _prompts().cuda(), None, PlannerSample(), compiled)  # captures the graphs
    steps = captured_steps(model)
    with torch.no_grad():
        g = torch.Generator(device="cuda").manual_seed(0)
        for p in model.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=g, device=p.device))
    assert captured_steps(model) is steps  # same addresses: the old graphs replay, nothing is recaptured
    eager = generate(model, _prompts().cuda(), None, PlannerSample(), config)
    after = generate(model, _prompts().cuda(), None, PlannerSample(), compiled)
    assert not torch.allclose(before.trajectory.log_probs, eager.trajectory.log_probs, atol=1e-3)  # the update counts
    assert torch.equal(after.completion, eager.completion)
    assert torch.allclose(after.trajectory.log_probs, eager.trajectory.log_probs, atol=1e-4)


def test_bf16_replay_stays_on_policy():
    model = small_model().cuda().to(torch.bfloat16)
    config = DecodeConfig(gen_length=32, block_length=8, temperature=0.1, record=True, seed=0)
    traj = generate(model, _prompts().cuda(), None, PlannerSample(), config).trajectory
    with torch.no_grad():
        replayed = replay(model, traj)
    assert (replayed - traj.log_probs).abs().max() < 1e-3


def test_a_bf16_frozen_base_decodes_as_fp32_weights_under_autocast():
    """dultra.model.precision on the GPU: the same rollout and log-probs, half the base's memory."""
    from dultra.model.precision import store_frozen_linears

    fp32 = small_model().to(torch.bfloat16).float().cuda()  # bf16 values, as an official checkpoint
    fp32.set_trainable(base=False, planner=True)
    low = small_model().to(torch.bfloat16).float().cuda()
    low.set_trainable(base=False, planner=True)
    assert store_frozen_linears(low, torch.bfloat16) > 0
    config = DecodeConfig(gen_length=32, block_length=8, temperature=0.5, seed=1, record=True, record_trunk=True)
    with torch.autocast("cuda", torch.bfloat16):
        a, b = (generate(m, _prompts().cuda(), None, PlannerSample(), config) for m in (fp32, low))
    assert torch.equal(a.completion, b.completion)
    assert torch.allclose(a.trajectory.log_probs, b.trajectory.log_probs, atol=1e-5)
