"""Semi-autoregressive masked-diffusion decoding with any strategy.

    out = generate(model, input_ids, attention_mask, Threshold(0.9), DecodeConfig(gen_length=256))
    out.completion, out.nfe, out.tpf

The completion starts as `gen_length` masks. Each row decodes its own current block (rows
move to their next block independently, so a fast row never waits for a slow one); a step
runs the model once on the whole batch and reveals, in every unfinished row, the positions
the strategy selects. The loop has no Python iteration over rows or positions and syncs
with the device once per step (to know whether every row is done).

NFE counts, per row, the forward passes in which that row still had masks in its current
block; every such step reveals at least one token, so no counted step is empty. Rows that
are done (or, with a cache, waiting) ride along in the batch; those passes are not counted.

With `cache="prefix"` or `"dual"` (Fast-dLLM's caches, dultra/model/kv_cache.py) the first
step of every block is a full forward that refreshes the cache and decodes as any step
does (one NFE; a refresh is never an extra pass). The block's later steps recompute only
the current block and everything after it (prefix) or only the current block (dual),
reading the other keys and values from the refresh. Rows then move to the next block
together, so one refresh serves the batch and a row decodes exactly as it would alone.

With `lockstep` (distributed training) a process whose rows are done keeps stepping until
every process's rows are: under FSDP each forward gathers the sharded weights together
with the other processes, so all of them must run as many forwards. With a cache, rows of
all processes also move between blocks together, so every process refreshes at the same steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.distributed as dist

from dultra.configio import IS_KIND
from dultra.decoding.graphs import captured_steps
from dultra.decoding.step import (
    attention_inputs,
    block_index,
    decode_step,
    gumbel_noise,
    model_config,
)
from dultra.decoding.strategies import BlockView, Strategy, parse_strategy
from dultra.decoding.trajectory import Recorder, Trajectory
from dultra.errors import ConfigError
from dultra.model import LLaDAConfig
from dultra.model.kv_cache import KVCache, fresh_columns
from dultra.model.loading import TRAINING_RECORD, trained_lengths

CACHES = ("none", "prefix", "dual")


@dataclass
class DecodeConfig:
    """Settings shared by every strategy."""

    gen_length: int = 256
    """Completion length in tokens (all masks at the start)."""
    block_length: int = 32
    """Semi-autoregressive block size; must divide gen_length."""
    temperature: float = 0.0
    """Token sampling temperature; 0 takes the argmax."""
    early_stop: bool = False
    """End a row once an EOS is decoded and everything before it is revealed (fills the rest with EOS)."""
    record: bool = False
    """Keep the trajectory and per-step log-probs (needed by RL). Token log-probs are the base
    model's softmax without temperature, as the reference's policy (dultra.md section 4)."""
    record_trunk: bool = False
    """With `record`, also keep every step's trunk output (B, L, D), so the replay of a frozen
    base runs only the heads (GRPO of the planner alone)."""
    seed: int | None = None
    """Seed of the sampling generator (token sampling, planner Bernoulli draws)."""
    eos_ids: tuple[int, ...] = field(default_factory=tuple)
    """Extra token ids that end a completion, besides the model config's (stop_token_ids)."""
    compile: bool = False
    """Run each step's model work compiled and, on a GPU, replayed from one captured CUDA graph
    (inference; the first decode of each shape compiles and captures, dultra/decoding/graphs.py)."""
    max_steps: int | None = None
    """Stop after this many steps even if masks remain (timing benchmarks); None decodes fully."""
    cache: Literal["none", "prefix", "dual"] = "none"
    """Reuse keys and values between the steps of a block: none (exact), prefix (recompute the
    block and what follows it) or dual (recompute the block only); see the module docstring."""
    lockstep: bool = False
    """Step until the rows of every process in the default process group are done (needed
    under FSDP, where each forward is a collective); a no-op without a process group."""


@dataclass
class DecodeOutput:
    """sequences: (B, P + G) prompts and completions. completion: (B, G). nfe: (B,) forward
    passes per row. lengths: (B,) decoded tokens before the first EOS. trajectory: when recorded.
    steps: forward passes of the whole batch (>= every row's NFE). refreshes: how many of
    them were full forwards refreshing a KV cache (0 without a cache)."""

    sequences: torch.Tensor
    completion: torch.Tensor
    nfe: torch.Tensor
    lengths: torch.Tensor
    trajectory: Trajectory | None = None
    steps: int = 0
    refreshes: int = 0

    @property
    def tpf(self) -> torch.Tensor:
        """(B,) tokens per forward: tokens before EOS / NFE."""
        return self.lengths.float() / self.nfe.clamp(min=1).float()

    def texts(self, tokenizer) -> list[str]:
        """Each row's completion before its first EOS, as text (special tokens dropped)."""
        rows = [row[:n] for row, n in zip(self.completion.tolist(), self.lengths.tolist())]
        return tokenizer.batch_decode(rows, skip_special_tokens=True)


def lengths_for(model: str | Path, gen_length: int | None, block_length: int | None,
                defaults: tuple[int, int] = (DecodeConfig.gen_length, DecodeConfig.block_length)
                ) -> tuple[int, int, str | None]:
    """(gen_length, block_length, note): each unset (None) length is the one a local checkpoint
    was trained with by dultra (its planner only ever saw those), else its `defaults` value
    (DecodeConfig's); a checkpoint trained without blocks (pretraining) decodes in one block,
    as does an untrained one given a gen_length below the default block. note says which
    lengths came from the training record (None: none)."""
    trained = trained_lengths(model)
    gen, block = trained or defaults
    gen = gen if gen_length is None else gen_length
    if block_length is not None:
        block = block_length
    else:  # a default block over a given gen_length: one block; a trained one stays (and is refused)
        block = (block or gen) if trained else min(block, gen)
    filled = [f"{name} {value}" for name, given, value in
              (("gen_length", gen_length, gen), ("block_length", block_length, block)) if given is None]
    note = f"{' and '.join(filled)} as {model} was trained" if trained and filled else None
    if not trained and filled and (record := Path(model).expanduser() / TRAINING_RECORD).is_file():
        note = f"{record} is unreadable or holds no lengths: {' and '.join(filled)}, the defaults"
    return gen, block, note


def check_settings(config: DecodeConfig, strategy: Strategy) -> None:
    """Clear errors for settings that cannot decode any prompt (no model needed)."""
    if not isinstance(config, DecodeConfig):
        raise ConfigError(f"config must be a DecodeConfig, got {type(config).__name__}")
    if not isinstance(strategy, Strategy):
        raise ConfigError(f"strategy must be a Strategy or a spec such as 'threshold:tau=0.9', got {strategy!r}")
    for name in ("gen_length", "block_length"):
        if not IS_KIND["int"](getattr(config, name)):
            raise ConfigError(f"{name} must be an integer, got {getattr(config, name)!r}")
    check_lengths(config.gen_length, config.block_length)
    check_temperature(config.temperature)
    for name in ("early_stop", "record", "record_trunk", "compile", "lockstep"):
        if not IS_KIND["bool"](getattr(config, name)):
            raise ConfigError(f"{name} must be True or False, got {getattr(config, name)!r}")
    if config.seed is not None and not (IS_KIND["int"](config.seed) and -2**63 <= config.seed < 2**64):
        raise ConfigError(f"seed must be None or an integer that fits 64 bits, got {config.seed!r}")
    if not isinstance(config.eos_ids, tuple | list):
        raise ConfigError(f"eos_ids must be a tuple of token ids, got {config.eos_ids!r}")
    check_cache(config.cache)
    if config.max_steps is not None and not (IS_KIND["int"](config.max_steps) and config.max_steps >= 1):
        raise ConfigError(f"max_steps must be None (decode fully) or an integer >= 1, got {config.max_steps!r}")
    if config.record_trunk and not config.record:
        raise ConfigError("record_trunk keeps the trunk with the trajectory: it needs record=True")
    strategy.validate(config.gen_length, config.block_length)


def check_lengths(gen_length: int, block_length: int) -> None:
    """A clear error, naming the setting at fault, unless gen_length is a multiple of block_length > 0."""
    if gen_length <= 0:  # first: an unset block_length is min(default, gen_length)
        raise ConfigError(f"gen_length must be > 0, got {gen_length}")
    if block_length <= 0:
        raise ConfigError(f"block_length must be > 0, got {block_length}")
    if block_length > gen_length:
        raise ConfigError(f"block_length ({block_length}) exceeds gen_length ({gen_length}): use a block_length "
                          f"that divides gen_length, e.g. {gen_length}")
    if gen_length % block_length:
        fits = max(b for b in range(1, block_length + 1) if gen_length % b == 0)
        raise ConfigError(f"gen_length ({gen_length}) is not a multiple of block_length ({block_length}): e.g. "
                          f"gen_length {gen_length + block_length - gen_length % block_length} or block_length {fits}")


def check_given_lengths(gen_length: int | None, block_length: int | None) -> None:
    """check_lengths on what a user set (None: filled in from the checkpoint, `lengths_for`),
    before the checkpoint is looked up (a Hub id downloads it)."""
    for name, value in (("gen_length", gen_length), ("block_length", block_length)):
        if value is not None and value <= 0:
            raise ConfigError(f"{name} must be > 0, got {value}")
    if gen_length is not None and block_length is not None:
        check_lengths(gen_length, block_length)


def check_temperature(temperature: float) -> None:
    """A clear error unless the sampling temperature is a number >= 0 that float32 holds."""
    # The float32 logits are divided by it: inf or NaN would make every token the mask.
    if not IS_KIND["float"](temperature) or not 0 <= temperature <= torch.finfo(torch.float32).max:
        raise ConfigError(f"temperature must be a finite number >= 0, got {temperature!r}")


def check_cache(kind: str) -> None:
    """A clear error for a KV cache setting that is none of CACHES."""
    if kind not in CACHES:
        raise ConfigError(f"unknown cache {kind!r}; choose one of {', '.join(CACHES)}")


def check_layout(model_config: LLaDAConfig, prompt_len: int, config: DecodeConfig, strategy: Strategy) -> None:
    """Clear errors for a model + prompt + settings that cannot decode, before any compute."""
    check_settings(config, strategy)
    g = config.gen_length
    limit = model_config.max_sequence_length
    if prompt_len + g > limit:
        raise ConfigError(
            f"prompt ({prompt_len} tokens) + gen_length ({g}) exceeds the model's context ({limit})"
        )
    if strategy.uses_planner and not model_config.has_planner:
        raise ConfigError(f"strategy {strategy.name!r} needs a planner head; this model has none")
    if unknown := [i for i in config.eos_ids if not (IS_KIND["int"](i) and 0 <= i < model_config.vocab_size)]:
        raise ConfigError(f"eos_ids {unknown} are not token ids of this model (vocabulary {model_config.vocab_size})")
    if model_config.mask_token_id in config.eos_ids:  # every position still masked would read as an EOS
        raise ConfigError(f"eos_ids hold the mask token's id ({model_config.mask_token_id}); an EOS must be "
                          "a token the model writes")


def check_prompts(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> None:
    """Clear errors for prompts that would fail deep in the model or decode wrongly: ids (B, P)
    integers in the vocabulary on the model's device; a mask of the same shape, left-padded
    (each row 0...0 1...1, at least one 1)."""
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.is_floating_point() \
            or input_ids.dtype == torch.bool:
        what = f"a {input_ids.dim()}-D {input_ids.dtype} tensor" if isinstance(input_ids, torch.Tensor) \
            else type(input_ids).__name__
        raise ConfigError(f"input_ids must be a 2-D integer tensor (batch, prompt length), got {what}: "
                          "dultra.model.tokenizer.encode_prompts makes one")
    if input_ids.shape[0] == 0:
        raise ConfigError("input_ids holds no prompt (batch size 0)")
    if input_ids.device.type == "meta":
        raise ConfigError("input_ids are on the meta device: they hold no token ids")
    weights = next(model.parameters(), None)  # on the CPU it may be offloaded (FSDP): not checked
    if weights is not None and weights.device.type not in ("cpu", "meta") and input_ids.device != weights.device:
        raise ConfigError(f"input_ids are on {input_ids.device} but the model is on {weights.device}")
    vocab = model_config(model).vocab_size
    checks = [(input_ids < 0) | (input_ids >= vocab)]
    if attention_mask is not None:
        if not isinstance(attention_mask, torch.Tensor) or attention_mask.shape != input_ids.shape:
            shape = tuple(attention_mask.shape) if isinstance(attention_mask, torch.Tensor) else type(attention_mask)
            raise ConfigError(f"attention_mask must have the shape of input_ids {tuple(input_ids.shape)}, got {shape}")
        if attention_mask.device != input_ids.device:
            raise ConfigError(f"attention_mask is on {attention_mask.device}, input_ids on {input_ids.device}")
        m = attention_mask.long()
        checks += [(m != 0) & (m != 1), m[:, 1:] < m[:, :-1], m[:, -1:] != 1]
    bad = torch.stack([c.any() for c in checks]).tolist()  # one sync for all of them
    if bad[0]:
        raise ConfigError(f"input_ids hold ids outside this model's vocabulary (0 to {vocab - 1})")
    if any(bad[1:]):
        raise ConfigError("attention_mask must be 0/1 and left-padded, every row ending in 1 (padding first, "
                          "then the prompt), as encode_prompts makes it")


def first_eos(completion: torch.Tensor, eos_ids: torch.Tensor) -> torch.Tensor:
    """completion (B, G) -> (B,) index of the first EOS, G where there is none."""
    is_eos = torch.isin(completion, eos_ids)
    G = completion.shape[1]
    return torch.where(is_eos.any(dim=1), is_eos.long().argmax(dim=1), G)


@torch.no_grad()
def generate(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    strategy: Strategy | str,
    config: DecodeConfig,
) -> DecodeOutput:
    """Decode a batch of left-padded prompts (B, P); see the module docstring. `strategy` may
    be a spec such as "threshold:tau=0.9" (parse_strategy)."""
    if isinstance(strategy, str):
        strategy = parse_strategy(strategy)
    check_prompts(model, input_ids, attention_mask)
    B, P = input_ids.shape
    cfg, dev = model_config(model), input_ids.device
    check_layout(cfg, P, config, strategy)
    input_ids = input_ids.long()  # int32 ids would not scatter into the long completion
    mask_id, G, N = cfg.mask_token_id, config.gen_length, config.block_length
    eos_ids = torch.tensor(sorted({*cfg.stop_token_ids, *config.eos_ids}), device=dev)
    generator = None
    if config.seed is not None:
        generator = torch.Generator(device=dev).manual_seed(config.seed)

    prompt_mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask.to(input_ids.dtype)
    x = torch.cat([input_ids, torch.full((B, G), mask_id, dtype=input_ids.dtype, device=dev)], dim=1)
    valid, seq_len = attention_inputs(prompt_mask, G)
    block_start = torch.full((B,), P, device=dev)
    block_step = torch.zeros(B, dtype=torch.long, device=dev)
    done = torch.zeros(B, dtype=torch.bool, device=dev)
    nfe = torch.zeros(B, dtype=torch.long, device=dev)
    recorder = Recorder(B, G, P, dev, config.record_trunk) if config.record else None
    refreshes: list[int] = []

    step_fn = captured_steps(model) if config.compile else decode_step
    lockstep = config.lockstep and dist.is_available() and dist.is_initialized()
    cache = None
    if config.cache != "none":
        cache = step_fn.cache_for(x) if config.compile else KVCache()
    refresh, cache_start = True, P  # with a cache every row is in the block at cache_start

    def next_inputs():
        index = block_index(block_start, N)
        block = x.gather(1, index)
        candidates = (block == mask_id) & ~done[:, None]
        noise = gumbel_noise((B, N, cfg.vocab_size), dev, generator) if config.temperature > 0 else None
        return index, block, candidates, noise

    index, block, candidates, noise = next_inputs()
    step = 0
    while True:
        fresh = None if cache is None or refresh else fresh_columns(config.cache, index, cache_start, P + G)
        if cache is not None and fresh is None:
            refreshes.append(step)
        logits, planner, x0, logq_x0, trunk = step_fn(
            model, x, valid, seq_len, index, candidates, strategy.uses_planner, config.temperature, noise,
            cache, fresh,
        )
        view = BlockView(candidates, logq_x0, planner, block_step, logits, G // N, generator)
        revealed = strategy.select(view)
        x.scatter_(1, index, torch.where(revealed, x0, block))
        nfe += candidates.any(dim=1).long()
        if recorder is not None:
            recorder.add(step, index, revealed, candidates, planner, logq_x0, trunk)

        # Early stop first: a row it completes may finish the block, and with a cache the
        # refresh waits for every row's block.
        if config.early_stop:
            done |= _fill_after_eos(x, P, eos_ids, cfg.eos_token_id, mask_id)
        block_finished = ~(x.gather(1, index) == mask_id).any(dim=1)
        if cache is not None:  # rows wait for each other, so one refresh serves the whole batch
            everywhere = block_finished.all().int()
            if lockstep:  # queued on the device: no extra sync
                dist.all_reduce(everywhere, op=dist.ReduceOp.MIN)
            block_finished = everywhere.bool().expand(B)
        block_start = torch.where(block_finished, block_start + N, block_start)
        block_step = torch.where(block_finished, 0, block_step + 1)
        done |= block_start >= P + G
        block_start = block_start.clamp(max=P + G - N)
        step += 1
        # The next step's inputs are queued before the one sync per step, so after it the
        # device only waits for the model call to be launched.
        index, block, candidates, noise = next_inputs()
        flags = torch.stack((done.all(), block_finished[0])).int()
        if lockstep:  # all done only when every process is; a refresh stays local (one forward either way)
            dist.all_reduce(flags[:1], op=dist.ReduceOp.MIN)
        all_done, refresh = flags.tolist()
        if all_done or step == config.max_steps:
            break
        if refresh:
            cache_start = min(cache_start + N, P + G - N)

    completion = x[:, P:]
    trajectory = None if recorder is None else recorder.trajectory(
        input_ids, prompt_mask, completion, N, strategy.uses_planner, config.cache, tuple(refreshes))
    # Tokens before the first EOS; a decode cut by max_steps leaves masks, which are none.
    before_eos = torch.arange(G, device=dev) < first_eos(completion, eos_ids)[:, None]
    lengths = (before_eos & (completion != mask_id)).sum(dim=1)
    return DecodeOutput(x, completion, nfe, lengths, trajectory, step, len(refreshes))


def _fill_after_eos(x: torch.Tensor, P: int, eos_ids: torch.Tensor, eos: int, mask_id: int) -> torch.Tensor:
    """Early stop: rows whose first EOS has only revealed tokens before it are complete.

    Fills their remaining masks with EOS in place; returns (B,) bool of completed rows.
    """
    completion = x[:, P:]
    masked = completion == mask_id
    cut = first_eos(completion, eos_ids)
    columns = torch.arange(completion.shape[1], device=x.device)
    complete = (cut < completion.shape[1]) & ~(masked & (columns < cut[:, None])).any(dim=1)
    fill = complete[:, None] & masked
    x[:, P:] = torch.where(fill, eos, completion)
    return complete
