"""Captured decoding steps (DecodeConfig.compile): the static-buffer bookkeeping, on a CPU.

The CUDA capture itself is checked on the GPU machine (tests/gpu/test_cuda.py).
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from dultra.decoding import DecodeConfig, PlannerSample, generate
from dultra.decoding.graphs import captured_steps
from dultra.model.kv_cache import KVCache
from tests.helpers import padded_prompts, small_model


@pytest.mark.parametrize("cache", ["none", "prefix", "dual"])
def test_compiled_decoding_equals_eager_decoding_call_after_call(cache):
    """Every layout is compiled on its first step and run from static buffers afterwards, so
    the second decode (other prompts, same shapes) must not see the first one's inputs."""
    model = small_model()
    ids, mask, _ = padded_prompts()
    config = DecodeConfig(gen_length=8, block_length=4, temperature=0.7, seed=3, record=True, cache=cache)
    for batch in (ids, ids.flip(0)):
        batch_mask = mask if batch is ids else mask.flip(0)
        eager = generate(model, batch, batch_mask, PlannerSample(), config)
        compiled = generate(model, batch, batch_mask, PlannerSample(), replace(config, compile=True))
        assert torch.equal(compiled.completion, eager.completion) and torch.equal(compiled.nfe, eager.nfe)
        assert torch.allclose(compiled.trajectory.log_probs, eager.trajectory.log_probs, atol=1e-5)
        assert compiled.trajectory.refreshes == eager.trajectory.refreshes


def test_captured_steps_are_kept_with_the_model_until_its_weights_move():
    model = small_model()
    steps = captured_steps(model)
    assert captured_steps(model) is steps
    model.fuse_projections()  # new weight tensors: graphs captured before would read freed memory
    assert captured_steps(model) is not steps


def test_each_batch_shape_has_its_own_static_cache_and_a_foreign_cache_is_refused():
    model = small_model()
    steps = captured_steps(model)
    x, other = torch.zeros(2, 8, dtype=torch.long), torch.zeros(3, 8, dtype=torch.long)
    assert steps.cache_for(x) is steps.cache_for(x.clone()) and steps.cache_for(other) is not steps.cache_for(x)
    with pytest.raises(ValueError, match="cache_for"):
        steps(model, x, None, torch.full((2,), 8), torch.arange(4).expand(2, -1),
              torch.ones(2, 4, dtype=torch.bool), False, 0.0, None, KVCache(), None)


def test_a_refresh_refills_the_cache_in_place_when_decoding_and_not_under_autograd():
    """Captured graphs read the cache at fixed addresses; a replay's backward needs each refresh's own keys."""
    model = small_model()
    ids, _, _ = padded_prompts()
    cache = KVCache()
    with torch.no_grad():
        model(ids, cache=cache)
        keys, hidden = cache.slot(0).keys, cache.hidden
        model(ids.flip(0), cache=cache)
    assert cache.slot(0).keys is keys and cache.hidden is hidden
    expected = KVCache()
    with torch.no_grad():
        model(ids.flip(0), cache=expected)
    assert torch.equal(keys, expected.slot(0).keys) and torch.equal(hidden, expected.hidden)
    model(ids, cache=cache)
    assert cache.slot(0).keys is not keys and cache.slot(0).keys.requires_grad



def test_a_layout_whose_first_run_failed_is_compiled_again(monkeypatch):
    """A failed compile (or capture) must not leave a layout that later steps would replay half-built."""
    model = small_model()
    ids, mask, _ = padded_prompts()
    config = DecodeConfig(gen_length=8, block_length=4, seed=0, compile=True)
    steps = captured_steps(model)
    real = steps._first_run
    calls = []

    def fail_once(*args):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("capture failed")
        return real(*args)

    monkeypatch.setattr(steps, "_first_run", fail_once)
    with pytest.raises(RuntimeError, match="capture failed"):
        generate(model, ids, mask, PlannerSample(), config)
    assert not steps.batch_shapes
    eager = generate(model, ids, mask, PlannerSample(), replace(config, compile=False))
    assert torch.equal(generate(model, ids, mask, PlannerSample(), config).completion, eager.completion)
    assert len(calls) >= 2 and steps.batch_shapes
