"""Planner warm start (dultra.md section 6): teach the head the Fast-dLLM factor rule.

    dultra warmstart --config configs/tiny.yaml [--model runs/pretrain/final --output-dir runs/warmstart]

The base model is frozen. Each training sequence is a reference completion in a random
decoding state: earlier blocks revealed, one current block partly masked (ratio t ~ U(0, 1],
at least one mask), later blocks masked. A current-block mask is labelled 1 if the factor
rule would reveal it now; the head's logits get a binary cross-entropy on those masks with
pos_weight = negatives / positives (class balance, as the reference).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from accelerate import Accelerator

from dultra.decoding.generate import check_lengths
from dultra.decoding.rules import factor_rule
from dultra.decoding.step import attention_inputs, block_index, model_config, score_block
from dultra.errors import ConfigError
from dultra.model.loading import load
from dultra.rl.config import WarmstartConfig, check_run
from dultra.rl.supervised import run_supervised


def random_states(
    targets: torch.Tensor, block_length: int, mask_id: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """targets (B, G) -> (completion state (B, G), current block start (B,) within the completion)."""
    B, G = targets.shape
    blocks = G // block_length
    block = torch.randint(0, blocks, (B,), generator=generator)
    ratio = 1.0 - torch.rand(B, generator=generator)  # (0, 1]
    col = torch.arange(G)
    in_block = (col >= (block * block_length)[:, None]) & (col < ((block + 1) * block_length)[:, None])
    masked = in_block & (torch.rand(B, G, generator=generator) < ratio[:, None])
    forced = block * block_length + torch.randint(0, block_length, (B,), generator=generator)
    masked[torch.arange(B), forced] = True  # at least one mask in the current block
    masked |= col >= ((block + 1) * block_length)[:, None]
    return torch.where(masked.to(targets.device), mask_id, targets), (block * block_length).to(targets.device)


def warmstart_loss(
    model: torch.nn.Module,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    targets: torch.Tensor,
    block_length: int,
    factor: float,
    generator: torch.Generator,
    official: bool = False,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Class-balanced BCE between the planner's logits and the factor rule's choices
    (`official`: Fast-dLLM's code version of the rule, dultra.decoding.rules.factor_rule)."""
    mask_id = model_config(model).mask_token_id
    P = prompt_ids.shape[1]
    state, start = random_states(targets, block_length, mask_id, generator)
    x = torch.cat([prompt_ids, state], dim=1)
    valid, seq_len = attention_inputs(prompt_mask, state.shape[1])
    index = block_index(P + start, block_length)
    candidates = x.gather(1, index) == mask_id
    logits, planner, _ = score_block(model, x, valid, seq_len, index, candidates, True)
    with torch.no_grad():
        labels = factor_rule(logits.softmax(dim=-1).amax(dim=-1), candidates, factor, official)
    z, y = planner[candidates], labels[candidates].float()
    positives = y.sum()
    negatives = y.numel() - positives
    pos_weight = (negatives / positives).detach() if positives > 0 and negatives > 0 else None
    loss = F.binary_cross_entropy_with_logits(z, y, pos_weight=pos_weight)
    with torch.no_grad():
        p = torch.sigmoid(planner).masked_fill(~candidates, 0.0)
        metrics = {
            "warmstart/label_rate": (positives / y.numel()).item(),
            "warmstart/accuracy": ((z > 0) == y.bool()).float().mean().item(),
            "warmstart/expected_k": p.sum(dim=1).mean().item(),
            "warmstart/rule_k": labels.sum(dim=1).float().mean().item(),
        }
    return loss, metrics


def warmstart(cfg: WarmstartConfig, accelerator: Accelerator | None = None):
    """Run the stage; returns the final checkpoint directory (base + trained head)."""
    check_lengths(cfg.gen_length, cfg.block_length)
    check_run(cfg.steps, cfg.save_every, cfg.batch_size, cfg.train_size)
    if not 0 < cfg.factor < float("inf"):  # the rule the head imitates; decoding refuses it too
        raise ConfigError(f"factor must be a finite number > 0, got {cfg.factor}")
    accelerator = accelerator or Accelerator()

    def load_model():
        model, tokenizer = load(cfg.model, add_planner=True)
        model.set_trainable(base=False, planner=True)
        return model, tokenizer

    return run_supervised(cfg, load_model,
                          lambda model, ids, mask, targets, generator: warmstart_loss(
                              model, ids, mask, targets, cfg.block_length, cfg.factor, generator,
                              official=cfg.factor_official),
                          accelerator, "warmstart")
