"""Decoding trajectories and their log-probabilities (dultra.md section 4).

A trajectory is stored compactly: since a revealed token is never re-masked, the final
completion plus the step at which each position was revealed determines every
intermediate state. `replay` re-runs the steps (with gradients when enabled) and returns
the same per-step log-probabilities that decoding recorded.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F

from dultra.decoding.step import block_index, model_config, score_block, token_log_prob


@dataclass
class Trajectory:
    """One decoded batch, replayable step by step.

    prompt_ids: (B, P) left-padded prompts. prompt_mask: (B, P) 1 for tokens, 0 for padding.
    completion: (B, G) final completion tokens. unmask_step: (B, G) step at which each
    position was revealed, -1 where early stop filled it with EOS after the last step.
    num_steps: (B,) steps (NFE) of each row. log_probs: (B, S) per-step log pi, 0 after a
    row's last step. block_length: semi-autoregressive block size. uses_planner: whether
    log pi includes the planner's Bernoulli terms.
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    completion: torch.Tensor
    unmask_step: torch.Tensor
    num_steps: torch.Tensor
    log_probs: torch.Tensor
    block_length: int
    uses_planner: bool

    def revealed_before(self, rows: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        """rows, steps (R,) -> (R, G) bool: positions of row rows[i] revealed when step steps[i] starts."""
        unmask_step = self.unmask_step[rows]
        return (unmask_step >= 0) & (unmask_step < steps[:, None])

    def select(self, rows: torch.Tensor) -> Trajectory:
        """The trajectory of a subset of rows (a replay micro-batch), steps trimmed to theirs."""
        steps = int(self.num_steps[rows].max()) if len(rows) else 0
        return Trajectory(
            prompt_ids=self.prompt_ids[rows], prompt_mask=self.prompt_mask[rows],
            completion=self.completion[rows], unmask_step=self.unmask_step[rows],
            num_steps=self.num_steps[rows], log_probs=self.log_probs[rows, :steps],
            block_length=self.block_length, uses_planner=self.uses_planner,
        )

    def sequence_log_prob(self) -> torch.Tensor:
        """(B,) log-probability of the whole trajectory."""
        return self.log_probs.sum(dim=1)


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
    using log p = logsigmoid(z), log(1 - p) = logsigmoid(-z) for accuracy near 0 and 1.
    """
    zero = torch.zeros((), dtype=logq_x0.dtype, device=logq_x0.device)
    total = torch.where(revealed, logq_x0, zero).sum(dim=1)
    if planner_logits is not None:
        total = total + torch.where(revealed, F.logsigmoid(planner_logits), zero).sum(dim=1)
        total = total + torch.where(kept, F.logsigmoid(-planner_logits), zero).sum(dim=1)
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
    """One forward of a replay: log pi (R,) of the (row, step) pairs rows (R,), steps (R,)."""

    rows: torch.Tensor
    steps: torch.Tensor
    log_prob: torch.Tensor
    last: bool


def replay_forwards(traj: Trajectory) -> int:
    """Forwards `replay_steps` takes for a trajectory: ceil(sum(num_steps) / B)."""
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
    """
    mask_id = model_config(model).mask_token_id
    B, P = traj.prompt_ids.shape
    padded = not bool(traj.prompt_mask.all())
    valid = torch.cat([traj.prompt_mask, torch.ones_like(traj.completion)], dim=1)
    seq_len = valid.sum(dim=1)
    taken = torch.arange(traj.log_probs.shape[1], device=valid.device) < traj.num_steps[:, None]  # (B, S)
    all_steps, all_rows = taken.T.nonzero(as_tuple=True)  # step-major
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
        shown = traj.revealed_before(rows, steps)
        completion = torch.where(shown, traj.completion[rows], mask_id)
        x = torch.cat([traj.prompt_ids[rows], completion], dim=1)
        index = block_index(current_block_start(~shown, P, traj.block_length), traj.block_length)
        candidates = x.gather(1, index) == mask_id
        logits, planner = score_block(
            model, x, valid[rows] if padded else None, seq_len[rows], index, candidates, traj.uses_planner
        )
        tokens = traj.completion[rows].gather(1, index - P)
        revealed = (traj.unmask_step[rows].gather(1, index - P) == steps[:, None]) & candidates
        log_prob = step_log_prob(planner, token_log_prob(logits, tokens), revealed, candidates & ~revealed)
        yield ReplayPack(rows[:n], steps[:n], log_prob[:n], last=k == total - 1)


def replay(model: torch.nn.Module, traj: Trajectory, forwards: int = 0) -> torch.Tensor:
    """Every step's log pi of a recorded trajectory, (B, S) like `traj.log_probs` (0 after a row's last step).

    forwards: as in `replay_steps` (processes of a sharded model replay as many forwards).
    """
    out = torch.zeros_like(traj.log_probs)
    for pack in replay_steps(model, traj, forwards):
        out = out.index_put((pack.rows, pack.steps), pack.log_prob.to(out.dtype))
    return out
