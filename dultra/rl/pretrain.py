"""Masked-diffusion training of the tiny default base on the synthetic tasks (LLaDA objective).

    dultra pretrain --config configs/tiny.yaml [--output-dir runs/tiny-base --resume true]

Each step draws t ~ U(eps, 1) per sequence, masks every completion token with probability
t (the prompt stays visible, as in LLaDA's supervised recipe), and minimises the
cross-entropy on masked tokens weighted by 1/t, averaged over completion positions. The
completion is the reference solution followed by EOS up to gen_length, so the model
learns to end answers the way decoding expects.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from accelerate import Accelerator

from dultra.decoding.step import attention_inputs, model_config
from dultra.errors import ConfigError
from dultra.model.loading import load
from dultra.rl.config import PretrainConfig, check_run
from dultra.rl.supervised import run_supervised


def masked_diffusion_loss(
    model: torch.nn.Module,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    targets: torch.Tensor,
    generator: torch.Generator,
    eps: float = 1e-3,
) -> tuple[torch.Tensor, dict[str, float]]:
    """LLaDA loss on a batch. prompt_ids / prompt_mask: (B, P) left-padded; targets: (B, G).

    Returns the scalar loss, sum over masked (CE / t) / (B * G), and metrics.
    """
    cfg = model_config(model)
    B, G = targets.shape
    P = prompt_ids.shape[1]
    dev = prompt_ids.device
    t = (eps + (1 - eps) * torch.rand(B, generator=generator)).to(dev)
    masked = (torch.rand(B, G, generator=generator).to(dev) < t[:, None])
    x = torch.cat([prompt_ids, torch.where(masked, cfg.mask_token_id, targets)], dim=1)
    valid, _ = attention_inputs(prompt_mask, G)
    index = torch.arange(P, P + G, device=dev).expand(B, -1)
    logits = model(x, attention_mask=valid, logits_index=index).logits.float()
    ce = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
    loss = (ce * masked / t[:, None]).sum() / (B * G)
    with torch.no_grad():
        hit = (logits.argmax(-1) == targets) & masked
        acc = hit.sum().float() / masked.sum().clamp(min=1)
    return loss, {"pretrain/masked_token_accuracy": acc.item(), "pretrain/mask_ratio": masked.float().mean().item()}


def pretrain(cfg: PretrainConfig, accelerator: Accelerator | None = None):
    """Run the stage; returns the final checkpoint directory."""
    check_run(cfg.steps, cfg.save_every, cfg.batch_size, cfg.train_size)
    if cfg.gen_length < 1:
        raise ConfigError(f"gen_length must be > 0, got {cfg.gen_length}")
    if not 0 < cfg.mask_eps <= 1:
        raise ConfigError(f"mask_eps (the smallest mask ratio) must be in (0, 1], got {cfg.mask_eps}")
    accelerator = accelerator or Accelerator()

    def load_model():
        model, tokenizer = load(cfg.model)
        model.set_trainable(base=True, planner=False)
        return model, tokenizer

    return run_supervised(cfg, load_model,
                          lambda model, ids, mask, targets, generator: masked_diffusion_loss(
                              model, ids, mask, targets, generator, cfg.mask_eps),
                          accelerator, "pretrain")
