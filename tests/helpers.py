"""Tiny models built from configs, shared by the tests (no downloads)."""

from __future__ import annotations

import socket

import torch

from dultra.model import LLaDAConfig, LLaDAModelLM

MASK, EOS, PAD = 61, 62, 63


def free_port() -> int:
    """A loopback port free a moment ago: for a server to listen on, or, left closed, a URL nothing answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def small_config(**overrides) -> LLaDAConfig:
    """A 2-layer LLaDA with a planner head; vocab 64 with mask/eos/pad at the top."""
    kwargs = dict(
        d_model=32, n_heads=4, n_layers=2, mlp_hidden_size=64, vocab_size=64, embedding_size=64,
        max_sequence_length=256, mask_token_id=MASK, eos_token_id=EOS, pad_token_id=PAD,
        num_head_layers=1,
    )
    kwargs.update(overrides)
    return LLaDAConfig(**kwargs)


def padded_prompts(lengths=(3, 9, 6)) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Left-padded prompts of different lengths: ids (B, P), attention mask (B, P), the prompts."""
    prompts = [torch.randint(0, 60, (n,), generator=torch.Generator().manual_seed(n)) for n in lengths]
    P = max(lengths)
    ids = torch.full((len(prompts), P), PAD)
    mask = torch.zeros(len(prompts), P, dtype=torch.long)
    for i, prompt in enumerate(prompts):
        ids[i, P - len(prompt):], mask[i, P - len(prompt):] = prompt, 1
    return ids, mask, prompts


def small_model(seed: int = 0, **overrides) -> LLaDAModelLM:
    torch.manual_seed(seed)
    return LLaDAModelLM(small_config(**overrides)).eval()


def predict_eos(model: LLaDAModelLM) -> LLaDAModelLM:
    """Rig a real model to predict EOS everywhere: blocks output zero, ff_out maps the mask to EOS."""
    cfg = model.config
    with torch.no_grad():
        for blk in model.model.transformer.blocks:
            blk.attn_out.weight.zero_()
            blk.ff_out.weight.zero_()
        tr = model.model.transformer
        tr.ff_out.weight.zero_()
        tr.ff_out.weight[cfg.eos_token_id] = tr.wte.weight[cfg.mask_token_id]
    return model


def save_small_checkpoint(path, tokenizer, seed: int = 0, **overrides):
    """A 2-layer model with the tiny tokenizer's vocabulary and special ids, saved with it."""
    model = small_model(
        seed, vocab_size=len(tokenizer), embedding_size=len(tokenizer), mask_token_id=tokenizer.mask_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **overrides,
    )
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
