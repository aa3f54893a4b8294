"""The torch device a user names, checked against this machine before anything loads.

    check_device("cuda:1")    # ConfigError on a machine with one GPU
"""

from __future__ import annotations

import torch

from dultra.errors import ConfigError


def check_device(name: str) -> torch.device:
    """`name` as a torch.device this machine has (cpu, cuda[:i], mps), else a ConfigError."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"{name!r} is not a torch device (cpu, cuda, cuda:1, ...)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{name!r}: this machine has no CUDA GPU (torch {torch.__version__})")
        if (device.index or 0) >= torch.cuda.device_count():
            raise ConfigError(f"{name!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"{name!r}: this machine has no Apple GPU (MPS)")
    elif device.type != "cpu":
        raise ConfigError(f"{name!r}: dultra runs on cpu, cuda or mps devices")
    return device
