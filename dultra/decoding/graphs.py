"""Decoding steps replayed from captured CUDA graphs (`DecodeConfig(compile=True)`).

    steps = captured_steps(model)    # kept with the model; rebuilt when its weights move
    cache = steps.cache_for(x)       # with a KV cache: the static one of this batch shape
    logits, planner, x0, logq = steps(model, x, valid, seq_len, index, candidates,
                                      use_planner, temperature, noise, cache, fresh)

The arguments and results are those of `decode_step`. The first step of a new layout
(tensor shapes, planner or not, sampling or not, refresh or cached step) compiles it
with torch.compile (fused kernels, no graphs of its own) as two regions: the trunk
(`LLaDAModelLM.trunk`), which depends only on the shapes and the cache step, and the
heads and token choice (`decode_step` given the trunk). A strategy or sampling setting
new to a shape then compiles only its heads, not the 32 blocks of LLaDA-8B again (0.42x
the compile time over a sweep of strategies: benchmarks/results/compile_split_cpu.md).
The step runs on static copies of its inputs and is captured, both regions, into one
torch.cuda.CUDAGraph. Every later step of that layout copies its inputs into those
buffers and replays the graph: one launch, and none of the per-call Python of a compiled
function (guards, graph-tree bookkeeping), which at batch 1 cost more GPU idle time than
the planner head costs work (benchmarks/results/decode_speed_h100.md). Results live in
the graph's buffers and the next replay of the same layout overwrites them: callers use
them within the step.

With a KV cache, the graphs of one batch shape read and write one static cache
(`steps.cache_for(x)`; a refresh copies into its buffers rather than replacing them,
kv_cache.py), so the refresh graph fills what the cached-step graphs read.

Without a GPU nothing is captured: the compiled step runs on the same static buffers, so
this bookkeeping is exercised (and tested) on any machine.
"""

from __future__ import annotations

import functools
import itertools
import weakref
from dataclasses import dataclass

import torch

from dultra.decoding.step import decode_step
from dultra.model.kv_cache import KVCache

# Layouts per model: with a prefix cache every block of a decode has its own fresh width.
_RECOMPILE_LIMIT = 64
_STEPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _trunk(model, x, valid, cache, fresh):
    return model.trunk(x, valid, cache, fresh)


@functools.cache
def _compiled(fn):
    return torch.compile(fn, dynamic=False)


@dataclass
class _Layout:
    """One captured layout: static inputs (x, valid, seq_len, index, candidates, noise,
    fresh; None where the argument is None), the graph (None on a CPU), its outputs."""

    inputs: tuple[torch.Tensor | None, ...]
    graph: torch.cuda.CUDAGraph | None = None
    outputs: tuple | None = None


class CapturedSteps:
    """`decode_step` for one model, one CUDA graph per layout; see the module docstring."""

    def __init__(self, fingerprint: tuple[int, ...]):
        self.fingerprint = fingerprint
        self._caches: dict[tuple, KVCache] = {}
        self._layouts: dict[tuple, _Layout] = {}
        self._pool = None  # one memory pool for all graphs: they never run concurrently

    @property
    def batch_shapes(self) -> set[tuple[int, ...]]:
        """The (B, L) shapes of the layouts compiled so far."""
        return {key[3][0] for key in self._layouts}

    def cache_for(self, x: torch.Tensor) -> KVCache:
        """The static KV cache of decodes of x's shape (B, L) on x's device."""
        return self._caches.setdefault((tuple(x.shape), x.device), KVCache())

    def __call__(self, model, x, valid, seq_len, index, candidates, use_planner, temperature, noise,
                 cache=None, fresh=None):
        if cache is not None and cache is not self._caches.get((tuple(x.shape), x.device)):
            raise ValueError("captured steps read and write their own static cache: pass steps.cache_for(x)")
        tensors = (x, valid, seq_len, index, candidates, noise, fresh)
        key = (use_planner, temperature, cache is not None,
               *(None if t is None else (tuple(t.shape), t.dtype, t.device) for t in tensors))
        layout = self._layouts.get(key)
        if layout is None:
            layout = _Layout(tuple(None if t is None else t.clone() for t in tensors))
            outputs = self._first_run(model, layout, use_planner, temperature, cache)
            self._layouts[key] = layout  # only once compiled and captured: a failed first run is retried whole
            return outputs
        for buffer, value in zip(layout.inputs, tensors):
            if buffer is not None:
                buffer.copy_(value)
        if layout.graph is None:
            return self._run(model, layout, use_planner, temperature, cache)
        layout.graph.replay()  # on its capture's device, whichever is current
        return layout.outputs

    def _run(self, model, layout: _Layout, use_planner, temperature, cache, eager=False):
        x, valid, seq_len, index, candidates, noise, fresh = layout.inputs
        trunk, heads = (_trunk, decode_step) if eager else (_compiled(_trunk), _compiled(decode_step))
        # Fused kernels round low-precision intermediates as eager ops do, so a bf16 rollout
        # decodes what the eager replay of RL recomputes (else log-probs differ by ~1e-3).
        with torch._dynamo.config.patch(recompile_limit=_RECOMPILE_LIMIT), \
                torch._inductor.config.patch(emulate_precision_casts=True):
            hidden = trunk(model, x, valid, cache, fresh)
            return heads(model, x, valid, seq_len, index, candidates, use_planner, temperature, noise, trunk=hidden)

    def _first_run(self, model, layout: _Layout, use_planner, temperature, cache):
        """Compile and run the layout; on a GPU also capture it (the capture only records)."""
        if cache is not None and cache.hidden is None:
            # One eager refresh allocates the static cache, so the compiled refresh is traced
            # once, refilling it in place (as every later refresh does).
            self._run(model, layout, use_planner, temperature, cache, eager=True)
        run = functools.partial(self._run, model, layout, use_planner, temperature, cache)
        if not layout.inputs[0].is_cuda:
            return run()
        with torch.cuda.device(layout.inputs[0].device):  # not the current device: cuda:1
            return self._capture(layout, run)

    def _capture(self, layout: _Layout, run) -> tuple:
        side = torch.cuda.Stream()  # warm-up off the default stream, as graph capture wants
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):  # compiles, then runs once more with every lazy init done
                run()
        torch.cuda.current_stream().wait_stream(side)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        layout.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(layout.graph, pool=self._pool):
            layout.outputs = run()
        layout.graph.replay()
        return layout.outputs


def captured_steps(model: torch.nn.Module) -> CapturedSteps:
    """The CapturedSteps of `model`, rebuilt when any parameter or buffer has moved since
    the capture (graphs read weights at fixed addresses: `fuse_projections`, `.to(...)`)."""
    fingerprint = tuple(t.data_ptr() for t in itertools.chain(model.parameters(), model.buffers()))
    steps = _STEPS.get(model)
    if steps is None or steps.fingerprint != fingerprint:
        steps = _STEPS[model] = CapturedSteps(fingerprint)
    return steps
