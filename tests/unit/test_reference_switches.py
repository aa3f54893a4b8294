"""Settings where the reference's code goes beyond dultra.md's wording: the warm start's
official Fast-dLLM labels, and the step reward of a frozen planner."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dultra.configio import load_config
from dultra.decoding.rules import factor_rule
from dultra.rewards import RewardConfig, RewardWeights
from dultra.rl.supervised import OptimConfig
from dultra.rl.trainer import GRPOTrainer, TrainConfig
from dultra.rl.warmstart import WarmstartConfig, random_states, warmstart_loss
from tests.helpers import MASK, save_small_checkpoint, small_model


@pytest.mark.parametrize("official", [False, True])
def test_warmstart_labels_follow_the_chosen_factor_rule(official):
    model = small_model()
    prompt = torch.randint(0, 60, (8, 6), generator=torch.Generator().manual_seed(2))
    targets = torch.randint(0, 60, (8, 16), generator=torch.Generator().manual_seed(3))
    loss, metrics = warmstart_loss(model, prompt, torch.ones_like(prompt), targets, 8, 1.0,
                                   torch.Generator().manual_seed(4), official=official)
    state, start = random_states(targets, 8, MASK, torch.Generator().manual_seed(4))
    x = torch.cat([prompt, state], dim=1)
    index = 6 + start[:, None] + torch.arange(8)
    cand = x.gather(1, index) == MASK
    out = model(x, logits_index=index, planner_t=1 - (x == MASK).sum(1) / 22.0,
                planner_mask=torch.zeros_like(x, dtype=torch.bool).scatter(1, index, cand))
    logits = out.logits.float()
    logits[..., MASK] = float("-inf")
    confidence = logits.softmax(-1).amax(-1)
    labels = factor_rule(confidence, cand, 1.0, official)
    assert metrics["warmstart/rule_k"] == pytest.approx(labels.sum(1).float().mean().item())
    y, z = labels[cand].float(), out.planner_logits[cand]
    pw = (y.numel() - y.sum()) / y.sum()
    want = -(pw * y * F.logsigmoid(z) + (1 - y) * F.logsigmoid(-z)).mean()
    assert torch.allclose(loss, want, atol=1e-5)


def test_warmstart_factor_official_is_a_config_setting():
    assert WarmstartConfig().factor_official is False
    assert load_config(WarmstartConfig, overrides={"factor_official": True}).factor_official is True


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_tokenizer):
    return save_small_checkpoint(tmp_path_factory.mktemp("ckpt") / "small", tiny_tokenizer)


def _trainer(checkpoint, out, rewards, **kw):
    cfg = TrainConfig(model=str(checkpoint), output_dir=str(out), steps=1, prompts_per_step=1, group_size=2,
                      gen_length=16, block_length=8, train_size=8, save_every=0, rewards=rewards,
                      optim=OptimConfig(lr=1e-3), **kw)
    return cfg, GRPOTrainer(cfg)


def test_a_frozen_planner_gets_no_step_reward_unless_one_is_set(checkpoint, tmp_path, capsys):
    rewards = RewardConfig(math=RewardWeights(distill=0.0))
    cfg, frozen = _trainer(checkpoint, tmp_path / "a", rewards, train_planner=False)
    assert frozen.cfg.rewards.math.steps == 0.0 and frozen.scorer.config.math.steps == 0.0
    assert cfg.rewards.math.steps is None  # the caller's config is left as given
    assert "steps reward weight 0.0 (math) / 0.0 (code), the planner is frozen" in capsys.readouterr().out
    _, trained = _trainer(checkpoint, tmp_path / "b", rewards)
    assert trained.cfg.rewards.math.steps == 0.1 and trained.scorer.config.code.steps == 0.1
    explicit = RewardConfig(math=RewardWeights(distill=0.0, steps=0.3))
    _, kept = _trainer(checkpoint, tmp_path / "c", explicit, train_planner=False)
    assert kept.cfg.rewards.math.steps == 0.3 and kept.scorer.config.math.steps == 0.3
