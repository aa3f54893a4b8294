"""Decoding trajectories and their log-probabilities (dultra.md section 4).

A trajectory is stored compactly: since a revealed token is never re-masked, the final
completion plus the step at which each position was revealed determines every
intermediate state. `replay` re-runs the steps (with gradients when enabled) and returns
the same per-step log-probabilities that decoding recorded.

A trajectory decoded with a KV cache is replayed with the same cache: block by block, a
refresh forward then the block's cached steps, all kept in one autograd graph, since a
cached step's log pi depends on the weights through the refresh's keys and values too.

A trajectory recorded with its trunk outputs (`DecodeConfig(record_trunk=True)`) replays
only the heads, on exactly the hidden states decoding saw: with a frozen base the trunk
carries no gradient, and recomputing it would cost a whole forward per pack for the
planner's one block. Its (row, step) pairs pack freely, cached or not.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F

from dultra.decoding.step import (
    attention_inputs,
    block_index,
    model_config,
    score_block,
    token_log_prob,
)
from dultra.model.kv_cache import KVCache, fresh_columns


@dataclass
class Trajectory:
    """One decoded batch, replayable step by step.

    prompt_ids: (B, P) left-padded prompts. prompt_mask: (B, P) 1 for tokens, 0 for padding.
    completion: (B, G) final completion tokens. unmask_step: (B, G) step at which each
    position was revealed, -1 where early stop filled it with EOS after the last step.
    taken: (B, S) bool, the steps in which a row had masks in its block (its NFE; not those
    where it was done, or waited for the batch's block with a cache). log_probs: (B, S)
    per-step log pi, 0 where not taken. block_length: semi-autoregressive block size.
    uses_planner: whether log pi includes the planner's Bernoulli terms. cache: the KV cache
    decoding used ("none", "prefix", "dual"); refreshes: the steps that refreshed it (the
    first step of each block of the batch). trunk: (B', S', L, D) the trunk output of every
    step when recorded, else None; trunk_rows: (B,) the row of `trunk` that holds each row's
    (a selection shares its batch's record: at 8B a group's is gigabytes), None for row i.
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    completion: torch.Tensor
    unmask_step: torch.Tensor
    taken: torch.Tensor
    log_probs: torch.Tensor
    block_length: int
    uses_planner: bool
    cache: str = "none"
    refreshes: tuple[int, ...] = ()
    trunk: torch.Tensor | None = None
    trunk_rows: torch.Tensor | None = None

    @property
    def num_steps(self) -> torch.Tensor:
        """(B,) steps (NFE) of each row."""
        return self.taken.sum(dim=1)

    def revealed_before(self, rows: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        """rows, steps (R,) -> (R, G) bool: positions of row rows[i] revealed when step steps[i] starts."""
        unmask_step = self.unmask_step[rows]
        return (unmask_step >= 0) & (unmask_step < steps[:, None])

    def select(self, rows: torch.Tensor) -> Trajectory:
        """The trajectory of a subset of rows (a replay micro-batch). Steps are trimmed to
        theirs, except for a cached replay without the trunk: it follows the batch's blocks."""
        steps = self.log_probs.shape[1]
        if self.packs_freely:
            used = self.taken[rows].any(dim=0).nonzero()
            steps = int(used.max()) + 1 if len(used) else 0
        return Trajectory(
            prompt_ids=self.prompt_ids[rows], prompt_mask=self.prompt_mask[rows],
            completion=self.completion[rows], unmask_step=self.unmask_step[rows],
            taken=self.taken[rows, :steps], log_probs=self.log_probs[rows, :steps],
            block_length=self.block_length, uses_planner=self.uses_planner,
            cache=self.cache, refreshes=self.refreshes,
            trunk=self.trunk, trunk_rows=None if self.trunk is None else self._trunk_row(rows),
        )

    def _trunk_row(self, rows: torch.Tensor) -> torch.Tensor:
        return rows if self.trunk_rows is None else self.trunk_rows[rows]

    def trunk_of(self, rows: torch.Tensor, steps: torch.Tensor) -> torch.Tensor | None:
        """rows, steps (R,) -> (R, L, D): the recorded trunk output of each (row, step) pair."""
        return None if self.trunk is None else self.trunk[self._trunk_row(rows), steps]

    @property
    def packs_freely(self) -> bool:
        """Whether any (row, step) pairs can share a replay forward: not for a cached
        trajectory without its trunk outputs, which replays block by block as decoded."""
        return self.cache == "none" or self.trunk is not None


class Recorder:
    """What `generate` records at each step to build its Trajectory (DecodeConfig.record)."""

    def __init__(self, batch: int, gen_length: int, prompt_len: int, device, with_trunk: bool):
        self.unmask_step = torch.full((batch, gen_length), -1, dtype=torch.long, device=device)
        self.prompt_len, self.with_trunk = prompt_len, with_trunk
        self.log_probs: list[torch.Tensor] = []
        self.taken: list[torch.Tensor] = []
        self.trunks: list[torch.Tensor] = []

    def add(self, step: int, index: torch.Tensor, revealed: torch.Tensor, candidates: torch.Tensor,
            planner_logits: torch.Tensor | None, logq_x0: torch.Tensor, trunk: torch.Tensor) -> None:
        """One step: index (B, N) block columns of the sequence; revealed, candidates (B, N)."""
        columns = index - self.prompt_len
        current = self.unmask_step.gather(1, columns)
        self.unmask_step.scatter_(1, columns, torch.where(revealed, step, current))
        self.log_probs.append(step_log_prob(planner_logits, logq_x0, revealed, candidates & ~revealed))
        self.taken.append(candidates.any(dim=1))
        if self.with_trunk:
            self.trunks.append(trunk.clone())  # captured steps overwrite their outputs

    def trajectory(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, completion: torch.Tensor,
                   block_length: int, uses_planner: bool, cache: str, refreshes: tuple[int, ...]) -> Trajectory:
        return Trajectory(
            prompt_ids=prompt_ids, prompt_mask=prompt_mask, completion=completion, unmask_step=self.unmask_step,
            taken=torch.stack(self.taken, dim=1), log_probs=torch.stack(self.log_probs, dim=1),
            block_length=block_length, uses_planner=uses_planner, cache=cache, refreshes=refreshes,
            trunk=torch.stack(self.trunks, dim=1) if self.trunks else None,
        )


def step_log_prob(
    planner_logits: torch.Tensor | None,
    logq_x0: torch.Tensor,
    revealed: torch.Tensor,
    kept: torch.Tensor,
) -> torch.Tensor:
    """log pi of one step, per row.

    planner_logits: (B, N) float32 logits z of the planner (p = sigmoid(z)), or None for
    strategies without a planner (then only the token terms count). logq_x0: (B, N) base
    model log-prob of the revealed tokens. revealed / kept: (B, N) bool, the block's masks
    revealed this step / left masked. Returns (B,):
        sum_revealed [log p + log q(x0)] + sum_kept log(1 - p)
    using log p = logsigmoid(z), log(1 - p) = logsigmoid(-z) for accuracy near 0 and 1, in
    float32 at least (bf16 inputs are upcast: a bf16 sum over a block is off by ~0.1).
    """
    dtype = torch.promote_types(logq_x0.dtype, torch.float32)  # at least float32 sums
    zero = torch.zeros((), dtype=dtype, device=logq_x0.device)
    total = torch.where(revealed, logq_x0.to(dtype), zero).sum(dim=1)
    if planner_logits is not None:
        z = planner_logits.to(torch.promote_types(planner_logits.dtype, dtype))
        total = total + torch.where(revealed, F.logsigmoid(z), zero).sum(dim=1)
        total = total + torch.where(kept, F.logsigmoid(-z), zero).sum(dim=1)
    return total


def current_block_start(masked: torch.Tensor, prompt_len: int, block_length: int) -> torch.Tensor:
    """masked: (B, G) completion masks -> (B,) first column of the first block that has one.

    Rows without masks get the last block (they are inactive anyway).
    """
    B, G = masked.shape
    has_mask = masked.view(B, G // block_length, block_length).any(dim=2)
    first = torch.where(has_mask.any(dim=1), has_mask.long().argmax(dim=1), G // block_length - 1)
    return prompt_len + first * block_length


class ReplayPack(NamedTuple):
    """One backward's worth of a replay: log pi (R,) of the (row, step) pairs rows (R,),
    steps (R,), computed by `forwards` model forwards."""

    rows: torch.Tensor
    steps: torch.Tensor
    log_prob: torch.Tensor
    last: bool
    forwards: int = 1


def replay_forwards(traj: Trajectory) -> int:
    """Forwards `replay_steps` takes for a trajectory: ceil(sum(num_steps) / B), or every
    step of the batch for a cached one (without its trunk outputs)."""
    if not traj.packs_freely:
        return traj.log_probs.shape[1]
    return -(-int(traj.num_steps.sum()) // traj.prompt_ids.shape[0])


def replay_steps(model: torch.nn.Module, traj: Trajectory, forwards: int = 0) -> Iterator[ReplayPack]:
    """Re-run every step a row took, packed B (row, step) pairs to a forward.

    Runs under the caller's grad mode, one forward at a time, so a trainer can
    backpropagate each pack's loss before the next and hold one forward's activations.
    Each pair sees exactly the inputs decoding saw (same masks, same block). Pairs are
    taken step by step, and a row that finished early leaves its slot to a later step of
    another row: `replay_forwards(traj)` forwards instead of max(num_steps). The last pack
    is filled up with repeats of its last pair (computed, not yielded), so every forward
    has the rollout's shape and reproduces its numbers. With `forwards` above that, the
    extra packs repeat the last pair and yield no pairs (their log_prob is an empty slice
    of the graph, so a backward still runs): sharded processes stay in step.

    A cached trajectory without its trunk outputs yields one pack per block of the batch
    (`_cached_packs`).
    """
    if not traj.packs_freely:
        if forwards > replay_forwards(traj):
            raise ValueError("a cached replay follows the batch's blocks and cannot be padded")
        yield from _cached_packs(model, traj)
        return
    B = traj.prompt_ids.shape[0]
    valid, seq_len = attention_inputs(traj.prompt_mask, traj.completion.shape[1])
    all_steps, all_rows = traj.taken.T.nonzero(as_tuple=True)  # step-major
    pairs = len(all_rows)
    total = max(-(-pairs // B), forwards)
    if total == 0:
        return
    if pairs == 0:  # nothing taken: the extra packs replay row 0's first step
        all_steps, all_rows = all_steps.new_zeros(1), all_rows.new_zeros(1)
    fill = total * B - len(all_rows)
    all_rows = torch.cat([all_rows, all_rows[-1:].expand(fill)])
    all_steps = torch.cat([all_steps, all_steps[-1:].expand(fill)])
    for k in range(total):
        rows, steps = all_rows[k * B:(k + 1) * B], all_steps[k * B:(k + 1) * B]
        n = min(max(pairs - k * B, 0), B)
        log_prob = _replayed(model, traj, valid, seq_len, rows, steps)
        yield ReplayPack(rows[:n], steps[:n], log_prob[:n], last=k == total - 1)


def _cached_packs(model: torch.nn.Module, traj: Trajectory) -> Iterator[ReplayPack]:
    """Replay a cached decoding as it ran: for each block of the batch, a refresh forward of
    every row, then the block's cached steps (`traj.cache` columns recomputed), in one graph."""
    (B, P), G, N = traj.prompt_ids.shape, traj.completion.shape[1], traj.block_length
    S = traj.log_probs.shape[1]
    valid, seq_len = attention_inputs(traj.prompt_mask, G)
    rows = torch.arange(B, device=seq_len.device)
    bounds = [s for s in traj.refreshes if s < S] + [S]
    for block, (first, end) in enumerate(zip(bounds, bounds[1:])):
        start = min(P + block * N, P + G - N)
        index = block_index(torch.full((B,), start, device=seq_len.device), N)
        cache, log_probs = KVCache(), []
        for step in range(first, end):
            fresh = None if step == first else fresh_columns(traj.cache, index, start, P + G)
            steps = torch.full((B,), step, device=seq_len.device)
            log_probs.append(_replayed(model, traj, valid, seq_len, rows, steps, index, traj.taken[:, step],
                                       cache, fresh))
        steps, pair_rows = traj.taken[:, first:end].T.nonzero(as_tuple=True)
        log_prob = torch.stack(log_probs, dim=1)[pair_rows, steps]
        yield ReplayPack(pair_rows, steps + first, log_prob, last=end == S, forwards=end - first)


def _replayed(
    model: torch.nn.Module,
    traj: Trajectory,
    valid: torch.Tensor | None,
    seq_len: torch.Tensor,
    rows: torch.Tensor,
    steps: torch.Tensor,
    index: torch.Tensor | None = None,
    active: torch.Tensor | None = None,
    cache: KVCache | None = None,
    fresh: torch.Tensor | None = None,
) -> torch.Tensor:
    """log pi (R,) of the (row, step) pairs rows, steps (R,), from the inputs decoding saw.

    valid, seq_len: `attention_inputs(traj.prompt_mask, G)`. index: (R, N) block columns, None for each pair's
    first block with masks. active: (R,) bool, False for pairs whose row had no step then
    (it waited for the batch). cache, fresh: as in `score_block`.
    """
    mask_id = model_config(model).mask_token_id
    P = traj.prompt_ids.shape[1]
    shown = traj.revealed_before(rows, steps)
    x = torch.cat([traj.prompt_ids[rows], torch.where(shown, traj.completion[rows], mask_id)], dim=1)
    if index is None:
        index = block_index(current_block_start(~shown, P, traj.block_length), traj.block_length)
    candidates = x.gather(1, index) == mask_id
    if active is not None:
        candidates &= active[:, None]
    logits, planner, _ = score_block(model, x, None if valid is None else valid[rows], seq_len[rows], index,
                                     candidates, traj.uses_planner, cache, fresh, traj.trunk_of(rows, steps))
    tokens = traj.completion[rows].gather(1, index - P)
    revealed = (traj.unmask_step[rows].gather(1, index - P) == steps[:, None]) & candidates
    return step_log_prob(planner, token_log_prob(logits, tokens), revealed, candidates & ~revealed)


def replay(model: torch.nn.Module, traj: Trajectory, forwards: int = 0) -> torch.Tensor:
    """Every step's log pi of a recorded trajectory, (B, S) like `traj.log_probs` (0 after a row's last step).

    forwards: as in `replay_steps` (processes of a sharded model replay as many forwards).
    """
    out = torch.zeros_like(traj.log_probs)
    for pack in replay_steps(model, traj, forwards):
        out = out.index_put((pack.rows, pack.steps), pack.log_prob.to(out.dtype))
    return out
