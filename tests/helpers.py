"""Tiny models built from configs, shared by the tests (no downloads)."""

from __future__ import annotations

import torch

from dultra.model import LLaDAConfig, LLaDAModelLM

MASK, EOS, PAD = 61, 62, 63


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


def save_small_checkpoint(path, tokenizer, seed: int = 0, **overrides):
    """A 2-layer model with the tiny tokenizer's vocabulary and special ids, saved with it."""
    model = small_model(
        seed, vocab_size=len(tokenizer), embedding_size=len(tokenizer), mask_token_id=tokenizer.mask_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **overrides,
    )
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
