"""The LLaDA model and planner head against slow references written from dultra.md sections 1-2."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dultra.model.layers import timestep_features
from tests.helpers import padded_prompts, small_model


def ref_rope(x, positions, theta):
    """Rotation of the pairs (x[i], x[i + hd/2]) by pos * theta^(-2i/hd), as complex numbers."""
    half = x.shape[-1] // 2
    freqs = theta ** (-torch.arange(half, dtype=torch.float64) * 2 / x.shape[-1])
    angle = positions.double()[:, None] * freqs[None]  # (L, half)
    z = torch.complex(x[..., :half].double(), x[..., half:].double()) * torch.polar(torch.ones_like(angle), angle)
    return torch.cat([z.real, z.imag], dim=-1)


def ref_rms(x, w, eps):
    return w.double() * x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps)


def ref_block(blk, x, positions, cfg, key_valid=None):
    """One block with explicit per-head softmax attention, in float64."""
    L, H, hd = x.shape[0], cfg.n_heads, cfg.head_dim
    h = ref_rms(x, blk.attn_norm.weight, cfg.rms_norm_eps)
    q = (h @ blk.q_proj.weight.double().T).view(L, H, hd).transpose(0, 1)
    k = (h @ blk.k_proj.weight.double().T).view(L, H, hd).transpose(0, 1)
    v = (h @ blk.v_proj.weight.double().T).view(L, H, hd).transpose(0, 1)
    q, k = ref_rope(q, positions, cfg.rope_theta), ref_rope(k, positions, cfg.rope_theta)
    scores = q @ k.transpose(1, 2) / math.sqrt(hd)
    if key_valid is not None:
        scores = scores.masked_fill(~key_valid[None, None, :], float("-inf"))
    att = (scores.softmax(-1) @ v).transpose(0, 1).reshape(L, -1)
    x = x + att @ blk.attn_out.weight.double().T
    h = ref_rms(x, blk.ff_norm.weight, cfg.rms_norm_eps)
    gate, up = h @ blk.ff_proj.weight.double().T, h @ blk.up_proj.weight.double().T
    return x + (F.silu(gate) * up) @ blk.ff_out.weight.double().T


def ref_trunk(model, ids):
    cfg, tr = model.config, model.model.transformer
    x = tr.wte.weight.double()[ids]
    pos = torch.arange(len(ids))
    for blk in tr.blocks:
        x = ref_block(blk, x, pos, cfg)
    return ref_rms(x, tr.ln_f.weight, cfg.rms_norm_eps)


def ref_adaln(x, mod, c):
    scale, shift = (c @ mod.weight.double().T + mod.bias.double()).chunk(2, dim=-1)
    mu, var = x.mean(-1, keepdim=True), x.var(-1, unbiased=False, keepdim=True)
    return (x - mu) / torch.sqrt(var + 1e-4) * (1 + scale) + shift


def ref_planner(model, h, t, m):
    """dultra.md section 2 for one sequence: h (L, D) float64, t scalar, m (L,) bool."""
    half = 128
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float64) / half)
    feats = torch.cat([torch.cos(t * freqs), torch.sin(t * freqs)])
    mlp = model.time_embedding.mlp
    temb = F.silu(feats @ mlp[0].weight.double().T + mlp[0].bias.double()) @ mlp[2].weight.double().T + mlp[2].bias.double()
    c = temb[None, :] + model.mask_embedding.weight.double()[m.long()]
    f = ref_adaln(h, model.norm_out_1.modulation, c)
    f = ref_block(model.mask_head[0], f, torch.arange(len(h)), model.config)
    f = ref_adaln(f, model.norm_out_2.modulation, c)
    return f @ model.mask_linear.weight.double()[0] + model.mask_linear.bias.double()[0]


def test_trunk_matches_reference():
    model = small_model()
    ids = torch.randint(0, 60, (1, 23))
    got = model(ids, output_hidden_states=True).hidden_states[-1][0]
    assert torch.allclose(got.double(), ref_trunk(model, ids[0]), atol=1e-5)
    logits = model(ids).logits[0]
    want = ref_trunk(model, ids[0]) @ model.model.transformer.ff_out.weight.double().T
    assert torch.allclose(logits.double(), want, atol=1e-5)


def test_planner_matches_reference():
    model = small_model()
    ids = torch.randint(0, 60, (1, 20))
    h = model(ids, output_hidden_states=True).hidden_states[-1]
    m = torch.zeros(1, 20, dtype=torch.bool)
    m[0, 12:16] = True
    t = torch.tensor([0.35])
    got = model.planner_logits(h, t, m, model.layout(None, 20))[0]
    assert torch.allclose(got.double(), ref_planner(model, h[0].double(), 0.35, m[0]), atol=1e-5)


def test_query_index_equals_slicing_the_full_output():
    model = small_model()
    ids = torch.randint(0, 60, (2, 18))
    layout = model.layout(None, 18)
    h = model(ids, output_hidden_states=True).hidden_states[-1]
    m = torch.rand(2, 18) < 0.5
    t = torch.tensor([0.1, 0.8])
    full = model.planner_logits(h, t, m, layout)
    index = torch.tensor([[4, 5, 6, 7], [10, 11, 12, 13]])
    sliced = model.planner_logits(h, t, m, layout, query_index=index)
    assert torch.allclose(sliced, full.gather(1, index), atol=1e-6)
    out = model(ids, logits_index=index, planner_t=t, planner_mask=m)
    assert torch.allclose(out.planner_logits, sliced, atol=1e-6)
    assert torch.allclose(out.logits, model(ids).logits.gather(1, index[..., None].expand(-1, -1, 64)), atol=1e-6)


def test_left_padding_does_not_change_a_sequence():
    model = small_model()
    ids = torch.randint(0, 60, (1, 9))
    padded = torch.cat([torch.full((1, 4), 63), ids], dim=1)
    mask = torch.cat([torch.zeros(1, 4, dtype=torch.long), torch.ones(1, 9, dtype=torch.long)], dim=1)
    alone = model(ids).logits
    with_pad = model(padded, attention_mask=mask).logits[:, 4:]
    assert torch.allclose(alone, with_pad, atol=1e-5)


def test_fused_projections_give_the_same_outputs_and_keys():
    model = small_model(n_kv_heads=2)
    ids = torch.randint(0, 60, (2, 11))
    keys = set(model.state_dict())
    before = model(ids).logits
    model.fuse_projections()
    assert model.model.transformer.blocks[0].qkv_proj is not None
    assert torch.allclose(model(ids).logits, before, atol=1e-6)
    model.unfuse_projections()
    assert set(model.state_dict()) == keys
    assert torch.allclose(model(ids).logits, before, atol=1e-6)


def test_timestep_features_are_cos_then_sin():
    t = torch.tensor([0.0, 0.5])
    f = timestep_features(t, 8)
    assert torch.allclose(f[0], torch.tensor([1.0] * 4 + [0.0] * 4))
    assert torch.allclose(f[1, 0], torch.tensor(math.cos(0.5))) and torch.allclose(f[1, 4], torch.tensor(math.sin(0.5)))


def test_set_trainable_freezes_base_or_head():
    model = small_model()
    model.set_trainable(base=False, planner=True)
    assert not any(p.requires_grad for p in model.model.parameters())
    assert all(p.requires_grad for p in model.planner_parameters())
    model.set_trainable(base=True, planner=False)
    assert all(p.requires_grad for p in model.model.parameters())
    assert not any(p.requires_grad for p in model.planner_parameters())
    n = sum(p.numel() for p in model.parameters())
    assert n == sum(p.numel() for p in model.base_parameters()) + sum(p.numel() for p in model.planner_parameters())


def test_planner_init_follows_the_reference():
    model = small_model()
    for ada in (model.norm_out_1, model.norm_out_2):
        assert torch.count_nonzero(ada.modulation.bias) == 0
    assert torch.count_nonzero(model.mask_linear.bias) == 0
    assert model.model.transformer.blocks[0].q_proj.weight.std().item() == pytest.approx(0.02, rel=0.15)


def test_bf16_forward_runs_and_stays_close():
    model = small_model()
    ids = torch.randint(0, 60, (1, 16))
    ref = model(ids).logits
    got = model.to(torch.bfloat16)(ids).logits.float()
    assert (got - ref).abs().max() < 1e-2  # bf16 rounding of logits of at most ~0.35


def test_the_trunk_alone_is_the_forward_last_hidden_state_and_the_heads_take_it():
    model = small_model().eval()
    ids, mask, _ = padded_prompts()
    with torch.no_grad():
        full = model(ids, attention_mask=mask)
        trunk = model.trunk(ids, mask)
        heads = model(ids, attention_mask=mask, trunk=trunk)
    assert torch.equal(trunk, full.last_hidden_state) and torch.equal(heads.logits, full.logits)
