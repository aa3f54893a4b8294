"""Keys, values and trunk output kept between decoding steps (Fast-dLLM's prefix and dual caches).

    cache = KVCache()
    model(x, cache=cache)                  # refresh: a full forward that fills the cache
    model(x, cache=cache, fresh=columns)   # recompute only `columns`; every other key is read back

A refresh stores every trunk block's rotated keys and values and the trunk output for the
whole sequence. A cached forward runs the trunk only on the `fresh` columns (B, F): their
keys and values overwrite the cached ones, and their queries attend over all L cached
columns. The result is exact for the fresh columns when nothing outside them changed since
the refresh; otherwise the other columns are stale (the approximation Fast-dLLM makes). The
planner head reads the trunk output of the whole sequence, so it gets the cached states for
stale columns and is recomputed in full (it is one block, and its timestep changes every step).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


def _scatter_columns(buffer: torch.Tensor, dim: int, fresh: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """buffer with values written along `dim` at the per-row columns fresh (B, F).

    buffer: (B, ..., L, ...) with L at `dim`; values: the same shape with F at `dim`. In
    place when decoding; under autograd (a cached replay) a new tensor, so the refresh's
    keys and values stay as the backward pass needs them, and every later step of the block
    reads the refresh again (the same numbers: each step rewrites all the columns an earlier
    step wrote).
    """
    shape = [1] * buffer.dim()
    shape[0], shape[dim] = fresh.shape
    index = fresh.view(shape).expand_as(values)
    if torch.is_grad_enabled():
        return buffer.scatter(dim, index, values)
    return buffer.scatter_(dim, index, values)


def _refill(buffer: torch.Tensor | None, values: torch.Tensor) -> torch.Tensor:
    """A refresh's new contents: copied into the buffer it replaces when decoding (captured
    CUDA graphs read the cache at fixed addresses, dultra/decoding/graphs.py), else the
    values themselves (under autograd the replay's graph keeps them)."""
    if buffer is None or torch.is_grad_enabled() or buffer.shape != values.shape or buffer.dtype != values.dtype:
        return values.contiguous()
    return buffer.copy_(values)


@dataclass
class KVSlot:
    """One trunk block's cache: keys and values (B, H_kv, L, head_dim), rotary already applied."""

    keys: torch.Tensor | None = None
    values: torch.Tensor | None = None

    def update(
        self, keys: torch.Tensor, values: torch.Tensor, fresh: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """keys, values (B, H_kv, F, hd) of the fresh columns -> all L keys and values.

        fresh None means a refresh: F == L and the inputs become the cache.
        """
        if fresh is None:
            self.keys, self.values = _refill(self.keys, keys), _refill(self.values, values)
            return self.keys, self.values
        return _scatter_columns(self.keys, 2, fresh, keys), _scatter_columns(self.values, 2, fresh, values)


@dataclass
class KVCache:
    """Every trunk block's KVSlot plus the trunk output (B, L, D) after the final norm."""

    slots: list[KVSlot] = field(default_factory=list)
    hidden: torch.Tensor | None = None

    def slot(self, layer: int) -> KVSlot:
        while len(self.slots) <= layer:
            self.slots.append(KVSlot())
        return self.slots[layer]

    def update_hidden(self, hidden: torch.Tensor, fresh: torch.Tensor | None) -> torch.Tensor:
        """hidden (B, F, D) of the fresh columns -> the trunk output of all L columns."""
        if fresh is None:
            self.hidden = _refill(self.hidden, hidden)
            return self.hidden
        return _scatter_columns(self.hidden, 1, fresh, hidden)


def fresh_columns(kind: str, index: torch.Tensor, start: int, end: int) -> torch.Tensor:
    """The (B, F) columns a cached step recomputes: the block `index` (B, N) for "dual", or
    every column from the block's `start` to the sequence `end` for "prefix"."""
    if kind == "dual":
        return index
    return torch.arange(start, end, device=index.device).expand(index.shape[0], -1)
