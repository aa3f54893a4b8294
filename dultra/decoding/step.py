"""One denoising step's model work, shared by decoding and by trajectory replay.

The trunk runs over the whole sequence; the LM head only over each row's current block
(the only positions a step may reveal), and the planner head only scores that block.
"""

from __future__ import annotations

import functools

import torch

from dultra.model import LLaDAModelLM, SeqLayout
from dultra.model.layers import _gather_rows


def block_index(block_start: torch.Tensor, block_length: int) -> torch.Tensor:
    """block_start: (B,) first column of each row's current block -> (B, N) column indices."""
    return block_start[:, None] + torch.arange(block_length, device=block_start.device)


def score_block(
    model: LLaDAModelLM,
    x: torch.Tensor,
    layout: SeqLayout,
    seq_len: torch.Tensor,
    index: torch.Tensor,
    candidates: torch.Tensor,
    use_planner: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Token logits and planner logits for the current block.

    x: (B, L) current sequence (masks included). seq_len: (B,) real tokens per row (padding
    excluded), for the planner timestep. index: (B, N) current-block columns. candidates:
    (B, N) bool masks of the block. Returns logits (B, N, V) float32 with the mask token at
    -inf, and planner logits (B, N) float32 (None without the planner).
    """
    mask_id = model.config.mask_token_id
    hidden = model.trunk(x, layout)
    logits = model.lm_logits(_gather_rows(hidden, index)).float()
    logits[..., mask_id] = float("-inf")  # in place on a fresh tensor: no host-to-device copy
    if not use_planner:
        return logits, None
    # Timestep as the reference: 1 - (masks in the whole sequence) / (sequence length).
    t = 1.0 - (x == mask_id).sum(dim=1).float() / seq_len.float()
    planner_mask = torch.zeros_like(x, dtype=torch.bool).scatter_(1, index, candidates)
    return logits, model.planner_logits(hidden, t, planner_mask, layout, index)


def gumbel_noise(shape: torch.Size, device, generator: torch.Generator | None) -> torch.Tensor:
    """Standard Gumbel noise of `shape` (float32), drawn outside compiled regions."""
    u = torch.rand(shape, device=device, generator=generator)
    return -torch.log(-torch.log(u.clamp_(min=torch.finfo(u.dtype).tiny)))


def decode_step(
    model: LLaDAModelLM,
    x: torch.Tensor,
    layout: SeqLayout,
    seq_len: torch.Tensor,
    index: torch.Tensor,
    candidates: torch.Tensor,
    use_planner: bool,
    temperature: float,
    noise: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """`score_block`, then the proposed tokens and their log-probs.

    x0 is the argmax of the logits, or with Gumbel `noise` (B, N, V) a sample of
    softmax(logits / temperature). Returns logits (B, N, V), planner logits (B, N) or None,
    x0 (B, N) and log q(x0) (B, N) without temperature.
    """
    logits, planner = score_block(model, x, layout, seq_len, index, candidates, use_planner)
    x0 = logits.argmax(dim=-1) if noise is None else (logits / temperature + noise).argmax(dim=-1)
    return logits, planner, x0, token_log_prob(logits, x0)


@functools.cache
def compiled_decode_step():
    """`decode_step` under torch.compile with CUDA graphs: one graph replay per step on GPU.

    Compiles once per batch shape and strategy kind; outputs live in graph-owned buffers
    that the next step overwrites, so callers use them within the step.
    """
    return torch.compile(decode_step, mode="reduce-overhead", dynamic=False)


def token_log_prob(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[tokens] without materialising the (B, N, V) log-softmax; -> (B, N)."""
    return logits.gather(-1, tokens[..., None]).squeeze(-1) - logits.logsumexp(dim=-1)
