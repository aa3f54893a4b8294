"""Building blocks of the LLaDA transformer and the dUltra planner head.

Module and parameter names follow the official checkpoints (`attn_norm`, `q_proj`,
`attn_out`, `ff_proj`, `up_proj`, `ff_out`, ...), because they are the state-dict keys.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dultra.model.config import LLaDAConfig
from dultra.model.kv_cache import KVSlot


class RMSNorm(nn.Module):
    """RMSNorm computed in float32 and cast back, then scaled (as LLaDA)."""

    def __init__(self, size: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


def rope_cos_sin(
    position_ids: torch.Tensor, head_dim: int, theta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotary tables for the given positions.

    position_ids: (B, L) or (L,) integer positions. Returns cos, sin of shape (B or 1, 1, L,
    head_dim) in float32, laid out as two halves (LLaDA/LLaMA "rotate half" convention).
    """
    inv_freq = 1.0 / (
        theta ** (torch.arange(0, head_dim, 2, device=position_ids.device).float() / head_dim)
    )
    pos = position_ids.float()
    if pos.dim() == 1:
        pos = pos[None]
    freqs = pos[..., None] * inv_freq  # (B, L, head_dim / 2)
    angles = torch.cat((freqs, freqs), dim=-1)[:, None]  # (B, 1, L, head_dim)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (B, H, L, hd) -> same shape; rotation in float32 (LLaDA's `rope_full_precision`)."""
    xf = x.float()
    x1, x2 = xf.chunk(2, dim=-1)
    rotated = torch.cat((-x2, x1), dim=-1)
    return (xf * cos + rotated * sin).to(x.dtype)


class LLaDABlock(nn.Module):
    """Bidirectional pre-norm block: `x + attn(attn_norm(x))`, then `x + swiglu(ff_norm(x))`.

    After `fuse_projections()` the q/k/v and gate/up matrices are stored concatenated
    (`qkv_proj`, `gate_up_proj`): one GEMM instead of three (two) per block, which keeps
    the GPU busy at batch 1. Fused blocks are for inference; `unfuse_projections()`
    restores the checkpoint layout before saving.
    """

    def __init__(self, config: LLaDAConfig):
        super().__init__()
        d, hd = config.d_model, config.head_dim
        self.n_heads, self.n_kv_heads, self.head_dim = config.n_heads, config.n_kv_heads, hd
        self.attn_norm = RMSNorm(d, config.rms_norm_eps)
        self.q_proj = nn.Linear(d, config.n_heads * hd, bias=False)
        self.k_proj = nn.Linear(d, config.n_kv_heads * hd, bias=False)
        self.v_proj = nn.Linear(d, config.n_kv_heads * hd, bias=False)
        self.attn_out = nn.Linear(d, d, bias=False)
        self.ff_norm = RMSNorm(d, config.rms_norm_eps)
        self.ff_proj = nn.Linear(d, config.mlp_hidden_size, bias=False)
        self.up_proj = nn.Linear(d, config.mlp_hidden_size, bias=False)
        self.ff_out = nn.Linear(config.mlp_hidden_size, d, bias=False)
        self.qkv_proj: nn.Linear | None = None
        self.gate_up_proj: nn.Linear | None = None

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        attn_mask: torch.Tensor | None = None,
        query_index: torch.Tensor | None = None,
        kv: KVSlot | None = None,
        fresh: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x: (B, L, D) -> (B, L, D), or (B, Q, D) when `query_index` (B, Q) is given.

        rope: cos, sin of shape (B or 1, 1, L, hd) for the positions of x. attn_mask: (B, 1,
        1, L) bool over the keys, True where a key may be attended (padding is False); None
        attends everywhere (fastest kernels). query_index: positions whose outputs are
        wanted; keys and values still cover all L positions, so the result equals the full
        block's output at those positions. kv: this block's cache; with `fresh` (B, F), x
        holds only those columns (B, F, D) and attends over all cached keys (kv_cache.py).
        """
        h = self.attn_norm(x)
        q, k, v = self._qkv(h)
        B, L, _ = x.shape
        cos, sin = rope
        k = apply_rope(k.view(B, L, self.n_kv_heads, self.head_dim).transpose(1, 2), cos, sin)
        v = v.view(B, L, self.n_kv_heads, self.head_dim).transpose(1, 2)
        if kv is not None:
            k, v = kv.update(k, v, fresh)
        if query_index is not None:
            x = _gather_rows(x, query_index)
            q = _gather_rows(q, query_index)
            cos, sin = _gather_rope(cos, query_index), _gather_rope(sin, query_index)
        Q = q.shape[1]
        q = apply_rope(q.view(B, Q, self.n_heads, self.head_dim).transpose(1, 2), cos, sin)
        if self.n_kv_heads != self.n_heads:
            rep = self.n_heads // self.n_kv_heads
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=False)
        x = x + self.attn_out(att.transpose(1, 2).reshape(B, Q, -1))
        h = self.ff_norm(x)
        if self.gate_up_proj is not None:
            gate, up = self.gate_up_proj(h).chunk(2, dim=-1)
        else:
            gate, up = self.ff_proj(h), self.up_proj(h)
        return x + self.ff_out(F.silu(gate) * up)

    def _qkv(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.qkv_proj is None:
            return self.q_proj(h), self.k_proj(h), self.v_proj(h)
        kv = self.n_kv_heads * self.head_dim
        return self.qkv_proj(h).split([self.n_heads * self.head_dim, kv, kv], dim=-1)

    @torch.no_grad()
    def fuse_projections(self) -> None:
        if self.qkv_proj is not None:
            return
        self.qkv_proj = _concat_linears(self.q_proj, self.k_proj, self.v_proj)
        self.gate_up_proj = _concat_linears(self.ff_proj, self.up_proj)
        del self.q_proj, self.k_proj, self.v_proj, self.ff_proj, self.up_proj

    @torch.no_grad()
    def unfuse_projections(self) -> None:
        if self.qkv_proj is None:
            return
        kv = self.n_kv_heads * self.head_dim
        q, k, v = self.qkv_proj.weight.split([self.n_heads * self.head_dim, kv, kv])
        gate, up = self.gate_up_proj.weight.chunk(2)
        for name, w in (("q_proj", q), ("k_proj", k), ("v_proj", v), ("ff_proj", gate), ("up_proj", up)):
            lin = nn.Linear(w.shape[1], w.shape[0], bias=False, device=w.device, dtype=w.dtype)
            lin.weight.copy_(w)
            setattr(self, name, lin)
        self.qkv_proj = self.gate_up_proj = None


def _concat_linears(*linears: nn.Linear) -> nn.Linear:
    w = torch.cat([lin.weight for lin in linears])
    fused = nn.Linear(w.shape[1], w.shape[0], bias=False, device=w.device, dtype=w.dtype)
    fused.weight.copy_(w)
    return fused


def _gather_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x: (B, L, C), index: (B, Q) -> (B, Q, C)."""
    return x.gather(1, index[..., None].expand(-1, -1, x.shape[-1]))


def _gather_rope(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """table: (B or 1, 1, L, hd), index: (B, Q) -> (B, 1, Q, hd)."""
    table = table.expand(index.shape[0], -1, -1, -1)
    return table.gather(2, index[:, None, :, None].expand(-1, -1, -1, table.shape[-1]))


def timestep_features(t: torch.Tensor, dim: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of a per-sequence timestep (cos half, then sin half).

    t: (B,) floats in [0, 1] -> (B, dim) float32.
    """
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half
    )
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class TimestepEmbedder(nn.Module):
    """t (B,) -> (B, D): sinusoidal features, Linear, SiLU, Linear (keys `mlp.0`, `mlp.2`)."""

    def __init__(self, hidden_size: int, frequency_size: int = 256):
        super().__init__()
        self.frequency_size = frequency_size
        self.mlp = nn.Sequential(
            nn.Linear(frequency_size, hidden_size),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size),
        )

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        feats = timestep_features(t, self.frequency_size).to(self.mlp[0].weight.dtype)
        return self.mlp(feats)


class AdaLayerNorm(nn.Module):
    """`LayerNorm_noaffine(x) * (1 + scale) + shift`, (scale, shift) = modulation(c).

    x: (B, L, D), c: (B, L, D) or (B, D) -> (B, L, D). Key `modulation.{weight,bias}`.
    """

    def __init__(self, hidden_size: int, eps: float = 1e-4):
        super().__init__()
        self.eps = eps
        self.modulation = nn.Linear(hidden_size, 2 * hidden_size)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        scale, shift = self.modulation(c).chunk(2, dim=-1)
        if scale.dim() == 2:
            scale, shift = scale[:, None], shift[:, None]
        return F.layer_norm(x, x.shape[-1:], eps=self.eps) * (1 + scale) + shift
