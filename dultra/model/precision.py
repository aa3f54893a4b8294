"""Frozen weights stored in the autocast dtype: half their memory, no cast at every forward.

    freed = store_frozen_linears(model, torch.bfloat16)   # bytes; before accelerator.prepare

Under torch.autocast an nn.Linear casts its weight to the autocast dtype at every call,
and autocast keeps no copy of a weight that needs no gradient: a frozen LLaDA-8B base in
fp32 is read (32 GB) and written in bf16 (16 GB) at every forward, about 16 ms of HBM
traffic on an H100 (benchmarks/results/scaling.md), and holds 32 GB. Stored in the
autocast dtype, the same kernels receive the same bits, so outputs and gradients are
unchanged. Only weights whose values the dtype holds exactly are converted: an official
LLaDA checkpoint is bf16, so all of its linears are, while an fp32-trained base keeps its
weights and a saved checkpoint never loses a digit. Embeddings and norms stay as they are
(autocast does not cast them, so their dtype sets the residual stream's precision).
"""

from __future__ import annotations

import torch
from torch import nn


def store_frozen_linears(model: nn.Module, dtype: torch.dtype) -> int:
    """Store every frozen nn.Linear parameter that `dtype` holds exactly in `dtype`, in place
    (the Parameter objects stay, so a later optimizer or wrapper sees the same ones).

    Returns the bytes freed. Meant for a model that runs under torch.autocast(dtype):
    outside autocast a converted Linear would receive inputs of another dtype.
    """
    freed = 0
    for module in model.modules():
        if not isinstance(module, nn.Linear):
            continue
        for p in module.parameters(recurse=False):
            if p.requires_grad or p.dtype == dtype or not p.is_floating_point():
                continue
            low = p.detach().to(dtype)
            if torch.equal(low.to(p.dtype), p.detach()):
                freed += p.numel() * (p.element_size() - low.element_size())
                p.data = low
    return freed
