"""The loop shared by the supervised stages (tiny-base pretraining, planner warm start).

    run_supervised(cfg, lambda: load(cfg.model), loss_fn, accelerator, name="pretrain")

loss_fn(model, ids, mask, targets, generator) -> (loss, metrics): a batch of prompts (B, P)
and their reference completions (B, gen_length), on the accelerator's device. The generator
is seeded from (seed, step), so a resumed run draws exactly the masks an uninterrupted run would.
Checkpoints every `save_every` steps; `resume` continues from the newest one, and a fresh
run refuses an output_dir that holds checkpoints (dultra.rl.checkpoint.start_point).
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType

from dultra.configio import config_dict
from dultra.data import encode_examples
from dultra.data.mixture import load_examples
from dultra.data.prompts import prompts_too_long
from dultra.errors import ConfigError
from dultra.model.precision import store_frozen_linears
from dultra.rl.checkpoint import start_point
from dultra.rl.config import OptimConfig
from dultra.rl.data import ExampleStream, encode_targets, torch_seed
from dultra.rl.loop import run_steps

# Parameters AdamW does not decay, by name, as the Hugging Face Trainer the reference trains
# with: biases and norm gains (attn_norm, ff_norm, the planner's AdaLN biases). ln_f's name
# matches none of these, so it is decayed there too.
_NO_DECAY = re.compile(r"bias|layernorm|rmsnorm|(?:^|\.)norm(?:$|\.)|_norm(?:$|\.)")


def decay_groups(named_params: Iterable[tuple[str, torch.nn.Parameter]], weight_decay: float, **group) -> list[dict]:
    """AdamW param groups of (name, parameter) pairs: `weight_decay` on weight matrices and
    embeddings, none on biases and norm gains (one group when weight_decay is 0, the layout
    of checkpoints saved before this split). `group` (e.g. lr=...) goes into each; empty
    groups are left out."""
    named = list(named_params)
    if weight_decay == 0:
        groups = [{"params": [p for _, p in named], "weight_decay": 0.0}]
    else:
        groups = [{"params": [p for n, p in named if not _NO_DECAY.search(n)], "weight_decay": weight_decay},
                  {"params": [p for n, p in named if _NO_DECAY.search(n)], "weight_decay": 0.0}]
    return [{**g, **group} for g in groups if g["params"]]


def build_optimizer(params, cfg: OptimConfig, total_steps: int):
    """AdamW over `params` (tensors, or param groups with their own "lr") and its LambdaLR
    schedule over `total_steps` optimizer updates (step it once per update; see `prepare`)."""
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)

    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.schedule == "cosine":
            progress = min(1.0, (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps))
            return 0.1 + 0.9 * 0.5 * (1 + torch.cos(torch.tensor(progress * torch.pi)).item())
        return 1.0

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def prepare(accelerator: Accelerator, model: torch.nn.Module, optimizer, scheduler):
    """accelerate's `prepare` for the model and optimizer; the scheduler stays as it is.

    A prepared scheduler steps num_processes times per call (accelerate assumes schedules
    written in per-process batches), which ran warmup and cosine 8x too fast on 8 GPUs; ours
    count optimizer updates. Registered for checkpointing, so save_state / load_state keep it.
    """
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    return model, optimizer, scheduler


def store_frozen_weights(model: torch.nn.Module, accelerator: Accelerator, name: str) -> None:
    """Frozen linears in the autocast dtype of `accelerator` (dultra.model.precision), before
    `prepare`. Not under FSDP: its shards are gathered in one dtype per unit."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(accelerator.mixed_precision)
    if dtype is None or accelerator.distributed_type == DistributedType.FSDP:
        return
    if freed := store_frozen_linears(model, dtype):
        accelerator.print(f"{name}: frozen linear weights stored in {dtype}, {freed / 1e9:.2f} GB freed")


def step_seed(seed: int, step: int, rank: int = 0) -> int:
    """A seed that depends only on (seed, step, rank): resumable randomness, distinct per process."""
    if rank >= 101:  # the formula below would give (step, rank) the seed of (step + 1, rank - 101)
        return torch_seed(int.from_bytes(hashlib.sha256(f"{seed}/{step}/{rank}".encode()).digest()[:8], "little"))
    return torch_seed((seed * 1_000_003 + step) * 101 + rank)


def step_generator(seed: int, step: int, rank: int = 0) -> torch.Generator:
    """A CPU generator seeded with step_seed."""
    return torch.Generator().manual_seed(step_seed(seed, step, rank))


def run_supervised(
    cfg,
    load_model: Callable[[], tuple[torch.nn.Module, object]],
    loss_fn: Callable,
    accelerator: Accelerator,
    name: str,
) -> Path:
    """Train for cfg.steps; returns the final checkpoint directory (cfg.output_dir/final).

    cfg needs: tasks, data, train_size, batch_size, gen_length, steps, optim (OptimConfig),
    seed, output_dir, save_every, resume. load_model() -> (model, tokenizer), called once the
    output_dir, resume and data have been checked (an 8B model takes minutes to load).
    """
    output_dir = Path(cfg.output_dir)
    config = config_dict(cfg)
    done, ckpt = start_point(accelerator, name, name, output_dir, cfg.resume, config)
    if done is not None:
        return done
    examples = load_examples(cfg.tasks, cfg.data, "train", cfg.train_size)
    model, tokenizer = load_model()
    stream = ExampleStream(examples, cfg.batch_size, cfg.seed, accelerator.process_index, accelerator.num_processes)
    eos = model.config.eos_token_id
    encode_targets(tokenizer, examples, cfg.gen_length, eos)  # fail before training if any is too long
    if too_long := prompts_too_long(tokenizer, examples, model.config.max_sequence_length, cfg.gen_length):
        raise ConfigError(too_long)  # positions past the context were trained on in silence
    store_frozen_weights(model, accelerator, name)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    optimizer, scheduler = build_optimizer(decay_groups(named, cfg.optim.weight_decay), cfg.optim, cfg.steps)
    model, optimizer, scheduler = prepare(accelerator, model, optimizer, scheduler)
    model.train()

    def step_fn(step: int) -> dict[str, float]:
        began = time.perf_counter()
        batch = stream.next()
        ids, mask = encode_examples(tokenizer, batch)
        targets = encode_targets(tokenizer, batch, cfg.gen_length, eos)
        loss, metrics = loss_fn(model, *(t.to(accelerator.device) for t in (ids, mask, targets)),
                                step_generator(cfg.seed, step, accelerator.process_index))
        accelerator.backward(loss)
        grad_norm = accelerator.clip_grad_norm_(params, cfg.optim.grad_clip) if cfg.optim.grad_clip > 0 else None
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if metrics and accelerator.num_processes > 1:  # the loss function's, means over the processes
            means = accelerator.reduce(torch.tensor(list(metrics.values()), device=accelerator.device), "mean")
            metrics = dict(zip(metrics, means.tolist(), strict=True))
        metrics = {f"{name}/loss": accelerator.reduce(loss.detach(), "mean").item(), **metrics,
                   "lr": scheduler.get_last_lr()[0], "seconds/step": time.perf_counter() - began}
        if grad_norm is not None:
            metrics["grad_norm"] = float(grad_norm)
        return metrics

    return run_steps(accelerator, name, name, cfg, stream, config, ckpt, step_fn,
                     lambda m: {"loss": f"{m[f'{name}/loss']:.4f}"}, model, tokenizer)
