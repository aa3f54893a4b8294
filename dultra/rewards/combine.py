"""The GRPO reward: weighted sum of the components, and dropping unscorable samples.

    weights = RewardWeights.for_kind("code").resolve(train_planner=True, has_teacher=True)  # correct x3, format, ...
    total = combine(weights, correct=c, format=f, distill=d, steps=s)
    keep = scorable_mask(total, group_size=12, max_unscorable_fraction=0.25)

r = w_correct*correct + w_format*format + w_distill*distill + w_steps*steps
(dultra.md section 5). A sample is unscorable when a component with a non-zero weight is
None for it (a sandbox outage for `correct`, most often) or not a finite number (a teacher
overflowing in half precision): its total is None and it leaves its group; it is never
counted as a 0, and a NaN never reaches its group's advantages. `RewardConfig`, a run's
reward settings, holds the weights per task kind (no torch here: training's settings import it).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from dultra.configio import doc
from dultra.errors import ConfigError

COMPONENTS = ("correct", "format", "distill", "steps")
STEPS_WEIGHT = 0.1  # the reference's step-penalty weight while the planner trains


class UnscorableBatchError(RuntimeError):
    """Too many samples of a batch could not be scored (the sandbox is probably down)."""


@dataclass(frozen=True)
class RewardWeights:
    """Weight of each reward component (reference defaults for math)."""

    correct: float = doc(1.0, "correctness: math-verify match, or the code pass fraction")
    format: float = doc(1.0, "boxed answer / code fence present")
    distill: float | None = doc(None, "mean per-token teacher log-likelihood (none: 1.0 with a teacher, as the "
                                      "reference, 0 without one)")
    steps: float | None = doc(None, "-(productive denoising steps) / 50 (none: 0.1 when the planner trains, "
                                    "0 when it is frozen, as the reference)")

    @classmethod
    def for_kind(cls, kind: str) -> RewardWeights:
        """The reference's weights for a task kind: correctness x3 for code, x1 for math."""
        if kind not in ("math", "code"):
            raise ConfigError(f"unknown task kind {kind!r} (expected 'math' or 'code')")
        return cls(correct=3.0 if kind == "code" else 1.0)

    def resolve(self, train_planner: bool, has_teacher: bool) -> RewardWeights:
        """The weights with unset ones filled in. `distill` is 1.0 with a teacher, else 0 (no
        model to score it). `steps` is 0.1, or 0 for a frozen planner: the step count then
        depends only on a head that does not learn (the reference's gen_step_reward_weight is
        0 with freeze_unmasking_head)."""
        distill = (1.0 if has_teacher else 0.0) if self.distill is None else self.distill
        steps = (STEPS_WEIGHT if train_planner else 0.0) if self.steps is None else self.steps
        return dataclasses.replace(self, distill=distill, steps=steps)


@dataclass(frozen=True)
class RewardConfig:
    """Reward settings of a GRPO run (defaults: dultra.md section 5)."""

    math: RewardWeights = doc(factory=lambda: RewardWeights.for_kind("math"), help="weights for math tasks")
    code: RewardWeights = doc(factory=lambda: RewardWeights.for_kind("code"), help="weights for code tasks")
    max_unscorable_fraction: float = doc(0.25, "fail the step if more of a batch cannot be scored")
    code_workers: int = doc(8, "concurrent sandbox requests")

    def resolve(self, train_planner: bool, has_teacher: bool) -> RewardConfig:
        """Unset weights filled in for a run whose planner trains or not, with a teacher or not
        (RewardWeights.resolve)."""
        return dataclasses.replace(self, math=self.math.resolve(train_planner, has_teacher),
                                   code=self.code.resolve(train_planner, has_teacher))

    def check(self, kinds: Iterable[str], has_teacher: bool) -> None:
        """Fail before training when a weight is negative (it would reward wrong answers or slow
        decoding), when a task kind of the data weights a reward without its model, or when
        max_unscorable_fraction is no fraction."""
        if not 0 <= self.max_unscorable_fraction <= 1:  # also false for NaN
            raise ConfigError(f"rewards.max_unscorable_fraction must be in [0, 1], got {self.max_unscorable_fraction}")
        if self.code_workers < 1:
            raise ConfigError(f"rewards.code_workers must be >= 1, got {self.code_workers}")
        for kind in ("math", "code"):
            for name, value in dataclasses.asdict(getattr(self, kind)).items():
                if value is not None and not 0 <= value < float("inf"):
                    raise ConfigError(f"rewards.{kind}.{name} must be a number >= 0 (0 turns it off), got {value}")
        for kind in sorted(set(kinds)):
            weight = getattr(self, kind).distill
            if weight and not has_teacher:  # None: resolved to 0 without a teacher
                raise ConfigError(f"rewards.{kind}.distill is {weight} but no teacher is set: "
                                  f"set --teacher, or --rewards.{kind}.distill 0")


def combine(
    weights: RewardWeights | Sequence[RewardWeights], **components: Sequence[float | None]
) -> list[float | None]:
    """Weighted sum per sample; None where a weighted component is None.

    weights: one for the batch, or one per sample (a batch mixing math and code).
    components: name -> N values, names from COMPONENTS. A component may be left out only
    when its weight is 0 for every sample, so a forgotten teacher fails loudly.
    """
    unknown = set(components) - set(COMPONENTS)
    if unknown:
        raise ConfigError(f"unknown reward components {sorted(unknown)}; expected {COMPONENTS}")
    sizes = {len(v) for v in components.values()}
    if len(sizes) > 1:
        raise ValueError(f"reward components have different lengths: { {k: len(v) for k, v in components.items()} }")
    n = sizes.pop() if sizes else (len(weights) if isinstance(weights, Sequence) else 0)
    per_sample = list(weights) if isinstance(weights, Sequence) else [weights] * n
    if len(per_sample) != n:
        raise ValueError(f"{len(per_sample)} weights for {n} samples")
    if any(w.steps is None or w.distill is None for w in per_sample):
        raise ConfigError("a weight is unset: resolve the weights first (RewardWeights.resolve)")
    for name in COMPONENTS:
        if name not in components and any(getattr(w, name) != 0 for w in per_sample):
            raise ConfigError(f"reward component {name!r} has a non-zero weight but no values")
    totals: list[float | None] = []
    non_finite: dict[str, int] = {}
    for i, w in enumerate(per_sample):
        total: float | None = 0.0
        for name, values in components.items():
            weight = getattr(w, name)
            if weight == 0:
                continue
            if values[i] is None or not math.isfinite(values[i]):
                if values[i] is not None:
                    non_finite[name] = non_finite.get(name, 0) + 1
                total = None
                break
            total += weight * values[i]
        totals.append(total)
    if non_finite:
        warnings.warn(f"reward: samples with a non-finite component left their groups: {non_finite}", stacklevel=2)
    return totals


def scorable_mask(
    totals: Sequence[float | None], group_size: int, max_unscorable_fraction: float
) -> list[bool]:
    """Which samples stay in their GRPO group (False: dropped because unscorable).

    totals: N = B * group_size rewards, groups contiguous (sample i is in group
    i // group_size). Raises UnscorableBatchError when more than `max_unscorable_fraction`
    of the N samples are None: the update would rest on too little of the batch.
    """
    if group_size < 1 or len(totals) % group_size:
        raise ValueError(f"{len(totals)} rewards do not split into groups of {group_size}")
    if not 0 <= max_unscorable_fraction <= 1:
        raise ConfigError(f"max_unscorable_fraction must be in [0, 1], got {max_unscorable_fraction}")
    keep = [t is not None for t in totals]
    dropped = len(keep) - sum(keep)
    if totals and dropped / len(totals) > max_unscorable_fraction:
        raise UnscorableBatchError(
            f"{dropped} of {len(totals)} samples could not be scored (more than "
            f"{max_unscorable_fraction:.0%}); is the code sandbox reachable?"
        )
    return keep
