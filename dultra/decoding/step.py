"""One denoising step's model work, shared by decoding and by trajectory replay.

The trunk runs over the whole sequence; the LM head only over each row's current block
(the only positions a step may reveal), and the planner head only scores that block.
"""

from __future__ import annotations

import torch

from dultra.model.kv_cache import KVCache


def block_index(block_start: torch.Tensor, block_length: int) -> torch.Tensor:
    """block_start: (B,) first column of each row's current block -> (B, N) column indices."""
    return block_start[:, None] + torch.arange(block_length, device=block_start.device)


def score_block(
    model: torch.nn.Module,
    x: torch.Tensor,
    valid: torch.Tensor | None,
    seq_len: torch.Tensor,
    index: torch.Tensor,
    candidates: torch.Tensor,
    use_planner: bool,
    cache: KVCache | None = None,
    fresh: torch.Tensor | None = None,
    trunk: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Token logits and planner logits for the current block, in one model forward.

    model: an LLaDAModelLM or a wrapper of it (DDP, FSDP). x: (B, L) current sequence (masks
    included). valid: (B, L) attention mask, None without padding. seq_len: (B,) real
    tokens per row, for the planner timestep. index: (B, N) current-block columns.
    candidates: (B, N) bool masks of the block. cache, fresh: a KVCache to fill (fresh
    None) or to read, recomputing only the fresh (B, F) columns. trunk: (B, L, D) a recorded
    trunk output of x, to run the heads only. Returns logits (B, N, V) float32 with the mask
    token at -inf, planner logits (B, N) float32 (None without the planner) and the trunk
    output (B, L, D).
    """
    mask_id = model_config(model).mask_token_id
    t = planner_mask = None
    if use_planner:
        # Timestep: 1 - (masks in the sequence) / (its length), both over real tokens only.
        # The reference divides by the padded length; this way a row decodes as it would
        # alone, and padding that reuses the mask id (some tokenizers) is not counted.
        masks = x == mask_id if valid is None else (x == mask_id) & valid.bool()
        t = 1.0 - masks.sum(dim=1).float() / seq_len.float()
        planner_mask = torch.zeros_like(x, dtype=torch.bool).scatter_(1, index, candidates)
    out = model(x, attention_mask=valid, logits_index=index, planner_t=t, planner_mask=planner_mask,
                cache=cache, fresh=fresh, trunk=trunk)
    logits = out.logits.float()
    logits[..., mask_id] = float("-inf")  # in place on a fresh tensor: no host-to-device copy
    return logits, out.planner_logits, out.last_hidden_state


def model_config(model: torch.nn.Module):
    """The LLaDAConfig of a model or of the model inside a DDP/FSDP/compile wrapper."""
    while not hasattr(model, "config") and hasattr(model, "module"):
        model = model.module
    return model.config


def attention_inputs(prompt_mask: torch.Tensor, gen_length: int) -> tuple[torch.Tensor | None, torch.Tensor]:
    """prompt_mask (B, P) of left-padded prompts -> the (B, P + G) attention mask of prompts
    and completions, None without padding (then the fastest attention kernels run), and the
    (B,) real tokens per row."""
    valid = torch.cat([prompt_mask, prompt_mask.new_ones(prompt_mask.shape[0], gen_length)], dim=1)
    return (None if bool(prompt_mask.all()) else valid), valid.sum(dim=1)


def gumbel_noise(shape: torch.Size, device, generator: torch.Generator | None) -> torch.Tensor:
    """Standard Gumbel noise of `shape`, drawn outside compiled regions.

    float32, where the references draw float64: a (B, N, V) float64 tensor would be the
    step's largest buffer. The cost is a cap on the noise (u <= 1 - 2^-24 gives at most
    16.6), so a token more than about 21 tempered nats below the best is never drawn: one
    whose chance was below 1e-9 anyway.
    """
    u = torch.rand(shape, device=device, generator=generator)
    return -torch.log(-torch.log(u.clamp_(min=torch.finfo(u.dtype).tiny)))


def decode_step(
    model: torch.nn.Module,
    x: torch.Tensor,
    valid: torch.Tensor | None,
    seq_len: torch.Tensor,
    index: torch.Tensor,
    candidates: torch.Tensor,
    use_planner: bool,
    temperature: float,
    noise: torch.Tensor | None,
    cache: KVCache | None = None,
    fresh: torch.Tensor | None = None,
    trunk: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor, torch.Tensor]:
    """`score_block`, then the proposed tokens and their log-probs.

    x0 is the argmax of the logits, or with Gumbel `noise` (B, N, V) a sample of
    softmax(logits / temperature). trunk: (B, L, D) the trunk output of x, given to run the
    heads only. Returns logits (B, N, V), planner logits (B, N) or None, x0 (B, N), log q(x0)
    (B, N) without temperature, and the trunk output (B, L, D).
    """
    logits, planner, trunk = score_block(model, x, valid, seq_len, index, candidates, use_planner, cache, fresh,
                                         trunk)
    x0 = logits.argmax(dim=-1) if noise is None else (logits / temperature + noise).argmax(dim=-1)
    return logits, planner, x0, token_log_prob(logits, x0), trunk


def token_log_prob(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[tokens] without materialising the (B, N, V) log-softmax; -> (B, N)."""
    return logits.gather(-1, tokens[..., None]).squeeze(-1) - logits.logsumexp(dim=-1)
