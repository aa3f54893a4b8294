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


def small_model(seed: int = 0, **overrides) -> LLaDAModelLM:
    torch.manual_seed(seed)
    return LLaDAModelLM(small_config(**overrides)).eval()
