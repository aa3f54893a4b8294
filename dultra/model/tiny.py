"""The embedded default: a tiny LLaDA + planner head and its tokenizer, built offline.

    dultra generate --model tiny --prompt "Compute 6 - 4 + 1 + 5 - 8."

`tiny_checkpoint()` builds the checkpoint once (seeded, so every machine gets the same
weights) and caches it under $DULTRA_CACHE (default ~/.cache/dultra).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from dultra.model.config import LLaDAConfig
from dultra.model.modeling import LLaDAModelLM
from dultra.model.tokenizer import build_tiny_tokenizer

TINY_VERSION = "tiny-v1"
TINY_ARCH = dict(
    d_model=128, n_heads=4, n_layers=4, mlp_hidden_size=384, max_sequence_length=1024, num_head_layers=1
)


def cache_dir() -> Path:
    return Path(os.environ.get("DULTRA_CACHE", Path.home() / ".cache" / "dultra"))


def build_tiny(seed: int = 0) -> tuple[LLaDAModelLM, object]:
    """A freshly initialised tiny model (with planner head) and its tokenizer."""
    tokenizer = build_tiny_tokenizer()
    config = LLaDAConfig(
        vocab_size=len(tokenizer),
        mask_token_id=tokenizer.mask_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **TINY_ARCH,
    )
    torch.manual_seed(seed)
    return LLaDAModelLM(config), tokenizer


def tiny_checkpoint(root: Path | None = None) -> Path:
    """Directory of the tiny default checkpoint, built on first use (atomic: no half-written cache)."""
    path = (root or cache_dir()) / TINY_VERSION
    if (path / "config.json").exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    model, tokenizer = build_tiny()
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            os.rename(tmp, path)
        except OSError:  # another process won the race; its copy is identical
            if not (path / "config.json").exists():
                raise
        os.makedirs(tmp, exist_ok=True)  # TemporaryDirectory cleans up the (renamed) name
    return path
