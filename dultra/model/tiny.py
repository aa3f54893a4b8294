"""The embedded default: a tiny LLaDA + planner head and its tokenizer, built offline.

    dultra generate --model tiny --prompt "Compute ||||5 - 3| - 9| - 4| - 7|."
    dultra pretrain --config configs/tiny.yaml --model tiny:n_layers=6   # a deeper variant

`tiny_checkpoint()` builds the checkpoint once (seeded, so every machine gets the same
weights) and caches it under $DULTRA_CACHE (default ~/.cache/dultra). A spec
`tiny:key=value,...` changes fields of TINY_ARCH (those in TUNABLE) and is cached apart.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from dultra.errors import ConfigError
from dultra.model.config import LLaDAConfig
from dultra.model.modeling import LLaDAModelLM
from dultra.model.tokenizer import build_tiny_tokenizer

TINY_VERSION = "tiny-v1"
TINY_ARCH = dict(
    d_model=128, n_heads=4, n_layers=4, mlp_hidden_size=384, max_sequence_length=1024, num_head_layers=1
)
TUNABLE = ("d_model", "n_heads", "n_layers", "mlp_hidden_size")  # what a `tiny:...` spec may change


def parse_spec(spec: str) -> dict[str, int] | None:
    """`tiny` -> {}; `tiny:n_layers=6,d_model=256` -> {"n_layers": 6, "d_model": 256};
    anything not starting with `tiny:` (a checkpoint path) -> None."""
    if spec == "tiny":
        return {}
    if not spec.startswith("tiny:"):
        return None
    arch = {}
    for item in spec[len("tiny:"):].split(","):
        key, sep, value = item.partition("=")
        if key not in TUNABLE or not sep:
            raise ConfigError(f"bad tiny model spec {spec!r}: items are key=value with key in {', '.join(TUNABLE)}")
        if not value.isdigit() or int(value) < 1:
            raise ConfigError(f"bad tiny model spec {spec!r}: {key} must be a positive integer, got {value!r}")
        arch[key] = int(value)
    return arch  # LLaDAConfig checks how the fields fit together (heads dividing d_model)


def cache_dir() -> Path:
    return Path(os.environ.get("DULTRA_CACHE", Path.home() / ".cache" / "dultra"))


def build_tiny(seed: int = 0, **arch: int) -> tuple[LLaDAModelLM, object]:
    """A freshly initialised tiny model (with planner head) and its tokenizer; `arch`
    overrides fields of TINY_ARCH."""
    tokenizer = build_tiny_tokenizer()
    config = LLaDAConfig(
        vocab_size=len(tokenizer),
        mask_token_id=tokenizer.mask_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **{**TINY_ARCH, **arch},
    )
    torch.manual_seed(seed)
    return LLaDAModelLM(config), tokenizer


def tiny_checkpoint(root: Path | None = None, **arch: int) -> Path:
    """Directory of the tiny default checkpoint (`arch`: overrides of TINY_ARCH), built on
    first use (atomic: no half-written cache)."""
    name = "-".join([TINY_VERSION, *(f"{k}{v}" for k, v in sorted(arch.items()))])
    path = (root or cache_dir()) / name
    if (path / "config.json").exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    model, tokenizer = build_tiny(**arch)
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
