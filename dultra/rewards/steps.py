"""Step penalty: fewer denoising steps, higher reward (dultra.md section 5).

    step_penalty(completions, steps=productive_steps(trajectory.unmask_step))

`steps` counts only steps that unmasked at least one token of that completion, as the
reference does; a step that revealed nothing (possible for strategies without a
"reveal at least one" rule) costs nothing here but still counts as NFE in the metrics.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

STEP_SCALE = 50.0  # the reference divides the step count by 50


def productive_steps(unmask_step: torch.Tensor) -> list[int]:
    """unmask_step: (B, G) step at which each completion position was revealed, -1 for
    positions filled with EOS after an early stop (dultra.decoding.Trajectory) -> (B,)
    number of distinct steps that revealed at least one position."""
    return [int(torch.unique(row[row >= 0]).numel()) for row in unmask_step]


def step_penalty(completions: Sequence[str], steps: Sequence[int], **_: object) -> list[float | None]:
    """-(productive steps) / 50 per completion; completions only fix the batch size."""
    if len(steps) != len(completions):
        raise ValueError(f"{len(completions)} completions but {len(steps)} step counts")
    if any(s < 0 for s in steps):
        raise ValueError(f"step counts must be >= 0, got {list(steps)}")
    return [-float(s) / STEP_SCALE for s in steps]
