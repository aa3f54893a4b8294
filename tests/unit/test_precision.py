"""Frozen linears stored in the autocast dtype compute what fp32 weights under autocast compute."""

from __future__ import annotations

import copy

import torch
from torch import nn

from dultra.model.precision import store_frozen_linears
from tests.helpers import MASK, small_model


def _bf16_exact(model):
    """The model as an official bf16 checkpoint loads in fp32: every value bf16 holds exactly."""
    return model.to(torch.bfloat16).to(torch.float32)


def _base_linears(model):
    return [m.weight for m in model.model.modules() if isinstance(m, nn.Linear)]


def _forward(model, x):
    """Token and planner logits under CPU bf16 autocast, and the planner head's gradients."""
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", torch.bfloat16):
        out = model(x, planner_t=torch.full((x.shape[0],), 0.5), planner_mask=x == MASK)
    out.planner_logits.float().square().sum().backward()
    return out.logits, out.planner_logits, [p.grad for p in model.planner_parameters()]


def test_frozen_linears_in_bf16_compute_the_same_bits_under_autocast():
    fp32 = _bf16_exact(small_model())
    fp32.set_trainable(base=False, planner=True)
    low = copy.deepcopy(fp32)
    freed = store_frozen_linears(low, torch.bfloat16)

    assert freed == 2 * sum(w.numel() for w in _base_linears(low))
    assert all(w.dtype == torch.bfloat16 for w in _base_linears(low))
    assert low.model.transformer.wte.weight.dtype == torch.float32  # autocast does not cast a lookup
    assert all(p.dtype == torch.float32 for p in low.planner_parameters())  # trained: fp32 master weights

    x = torch.randint(0, 60, (3, 12), generator=torch.Generator().manual_seed(0))
    x[:, 6:] = MASK
    (*outputs, grads), (*low_outputs, low_grads) = _forward(fp32, x), _forward(low, x)
    for a, b in zip(outputs, low_outputs, strict=True):
        assert torch.equal(a, b)
    for a, b in zip(grads, low_grads, strict=True):
        assert a is not None and torch.equal(a, b)


def test_weights_the_dtype_would_round_and_trained_weights_stay():
    model = small_model()  # random fp32 init: no weight is exactly a bf16 value
    model.set_trainable(base=False, planner=True)
    assert store_frozen_linears(model, torch.bfloat16) == 0
    rounded = _bf16_exact(small_model())
    rounded.set_trainable(base=True, planner=False)
    store_frozen_linears(rounded, torch.bfloat16)
    assert all(w.dtype == torch.float32 for w in _base_linears(rounded))
    assert any(p.dtype == torch.bfloat16 for p in rounded.planner_parameters())


def test_planner_logits_and_log_pi_stay_float32_under_autocast():
    from dultra.decoding.trajectory import step_log_prob

    model = small_model()
    x = torch.randint(0, 60, (3, 12), generator=torch.Generator().manual_seed(0))
    x[:, 6:] = MASK
    seen = {}
    model.norm_out_2.register_forward_hook(lambda _m, _i, out: seen.update(f=out.detach()))
    _, planner, _ = _forward(model, x)
    w, b = model.mask_linear.weight.detach(), model.mask_linear.bias.detach()
    assert planner.dtype == torch.float32
    assert torch.allclose(planner, seen["f"].float() @ w[0] + b[0], rtol=0, atol=1e-5)  # bf16: off by ~1e-2
    z = torch.randn(2, 64, generator=torch.Generator().manual_seed(1)) * 8
    logq = -torch.rand(2, 64, generator=torch.Generator().manual_seed(2)) * 5
    revealed = torch.rand(2, 64, generator=torch.Generator().manual_seed(3)) < 0.3
    exact = step_log_prob(z.double(), logq.double(), revealed, ~revealed)
    low = step_log_prob(z.bfloat16(), logq.bfloat16(), revealed, ~revealed)
    assert low.dtype == torch.float32 and exact.dtype == torch.float64
    # Only the inputs' rounding is left (0.09 here), not a bf16 running sum's (0.9 and 1.8).
    assert torch.allclose(low.double(), exact, rtol=0, atol=0.25), (low, exact)
