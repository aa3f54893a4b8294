"""Decoding strategies: typed settings plus the rule each applies at every step.

    parse_strategy("threshold:tau=0.7")      -> Threshold(tau=0.7)
    parse_strategy("planner:factor=1.5")     -> PlannerGreedy(factor=1.5)
    parse_strategy("factor:official=true")   -> Factor(factor=1.0, official=True)

The CLI names are `planner` (planner-greedy), `planner-sample`, `threshold`, `factor`,
`low-confidence` and `entropy` (dultra.md section 3).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from dultra.configio import IS_KIND
from dultra.decoding import rules
from dultra.errors import ConfigError


@dataclass
class BlockView:
    """What a strategy sees at one step, restricted to each row's current block (N positions).

    candidates: (B, N) bool masks that may be revealed. logq_x0: (B, N) float32 log-prob of
    the proposed token under the base model (no temperature). planner_logits: (B, N) float32
    or None. block_step: (B,) steps already spent in the current block. logits: (B, N, V)
    float32 token logits (mask token at -inf). num_blocks: blocks in the completion.
    generator: RNG for sampling rules.
    """

    candidates: torch.Tensor
    logq_x0: torch.Tensor
    planner_logits: torch.Tensor | None
    block_step: torch.Tensor
    logits: torch.Tensor
    num_blocks: int
    generator: torch.Generator | None

    @property
    def confidence(self) -> torch.Tensor:
        """Probability of the proposed token, the score of confidence-based rules."""
        return self.logq_x0.exp()

    @property
    def entropy(self) -> torch.Tensor:
        """(B, N) entropy of the token distribution (nats), untempered like `confidence`: the
        EB-sampler's usual setting is greedy (temperature 0), where the two agree."""
        return torch.special.entr(self.logits.softmax(dim=-1)).sum(dim=-1)

    @property
    def planner_prob(self) -> torch.Tensor:
        return torch.sigmoid(self.planner_logits)


class Strategy:
    """Base of all strategies: `select(view) -> (B, N) bool` revealed positions."""

    name: ClassVar[str]
    uses_planner: ClassVar[bool] = False

    def __post_init__(self) -> None:
        """Settings of the wrong type fail here, when the strategy is made, and so do values no
        layout can use (check)."""
        for f in dataclasses.fields(self):
            value, kind = getattr(self, f.name), f.type  # annotations are strings (`from __future__`)
            if not IS_KIND[kind](value):
                raise ConfigError(f"strategy {self.name!r}: {f.name} must be {_KINDS[kind]}, got {value!r}")
        self.check()

    def select(self, view: BlockView) -> torch.Tensor:
        raise NotImplementedError

    def check(self) -> None:
        """Raise ConfigError for settings that cannot decode at all."""

    def validate(self, gen_length: int, block_length: int) -> None:
        """Raise ConfigError for settings that cannot decode this layout."""

    def spec(self) -> str:
        """The inverse of `parse_strategy`; a switch is named only when on (`factor:factor=1.0`)."""
        params = ",".join(f"{f.name}={str(v).lower() if isinstance(v, bool) else v}"
                          for f in dataclasses.fields(self) if (v := getattr(self, f.name)) is not False)
        return f"{self.name}:{params}" if params else self.name


@dataclass(frozen=True)
class PlannerGreedy(Strategy):
    """dUltra inference: reveal the int(sum(factor * p)) most likely positions of the planner."""

    factor: float = 1.0
    name: ClassVar[str] = "planner"
    uses_planner: ClassVar[bool] = True

    def select(self, view: BlockView) -> torch.Tensor:
        return rules.planner_greedy_rule(view.planner_prob, view.candidates, self.factor)

    def check(self) -> None:
        _positive("factor", self.factor)


@dataclass(frozen=True)
class PlannerSample(Strategy):
    """dUltra RL rollouts: each position revealed independently with probability
    min(1, factor * p) of the planner's p. A recorded trajectory's log pi is always the
    factor-1 policy's, the one GRPO trains."""

    factor: float = 1.0
    name: ClassVar[str] = "planner-sample"
    uses_planner: ClassVar[bool] = True

    def select(self, view: BlockView) -> torch.Tensor:
        c = view.candidates
        uniform = torch.rand(c.shape, device=c.device, generator=view.generator)
        return rules.planner_sample_rule(view.planner_prob, c, uniform, self.factor)

    def check(self) -> None:
        _positive("factor", self.factor)


@dataclass(frozen=True)
class Threshold(Strategy):
    """Fast-dLLM: reveal every position whose confidence is >= tau (at least one)."""

    tau: float = 0.9
    name: ClassVar[str] = "threshold"

    def select(self, view: BlockView) -> torch.Tensor:
        return rules.threshold_rule(view.confidence, view.candidates, self.tau)

    def check(self) -> None:
        if not 0.0 <= self.tau <= 1.0:
            raise ConfigError(f"threshold tau must be in [0, 1], got {self.tau}")


@dataclass(frozen=True)
class Factor(Strategy):
    """Fast-dLLM factor rule (largest n with n-th confidence >= 1 - factor / (n + 1)).

    `official=true` (`factor:factor=1.0,official=true`) follows Fast-dLLM's code, which also
    reveals the last candidate when only it fails: its published baseline numbers use it.
    """

    factor: float = 1.0
    official: bool = False
    name: ClassVar[str] = "factor"

    def select(self, view: BlockView) -> torch.Tensor:
        return rules.factor_rule(view.confidence, view.candidates, self.factor, self.official)

    def check(self) -> None:
        _positive("factor", self.factor)


@dataclass(frozen=True)
class LowConfidence(Strategy):
    """LLaDA: `steps` fixed steps in all; each reveals its scheduled count of most confident masks."""

    steps: int = 64
    name: ClassVar[str] = "low-confidence"

    def select(self, view: BlockView) -> torch.Tensor:
        n = view.candidates.shape[1]
        k = rules.schedule_count(view.block_step, n, self.steps // view.num_blocks)
        return rules.select_top_k(view.confidence, view.candidates, k)

    def validate(self, gen_length: int, block_length: int) -> None:
        blocks = gen_length // block_length
        if not blocks <= self.steps <= gen_length or self.steps % blocks:
            raise ConfigError(
                f"low-confidence steps must be a multiple of the number of blocks ({blocks}) "
                f"between {blocks} and gen_length ({gen_length}), got {self.steps}"
            )


@dataclass(frozen=True)
class EntropyBounded(Strategy):
    """EB-sampler: reveal low-entropy positions while their entropy sum, less the largest, stays <= gamma."""

    gamma: float = 0.1
    name: ClassVar[str] = "entropy"

    def select(self, view: BlockView) -> torch.Tensor:
        return rules.entropy_rule(view.entropy, view.candidates, self.gamma)

    def check(self) -> None:
        if not self.gamma >= 0:  # NaN too; inf reveals every mask at once
            raise ConfigError(f"entropy gamma must be >= 0, got {self.gamma}")


_KINDS = {"bool": "true or false", "int": "an integer", "float": "a number", "str": "a string"}

STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (PlannerGreedy, PlannerSample, Threshold, Factor, LowConfidence, EntropyBounded)
}


def parse_strategy(spec: str) -> Strategy:
    """`name[:key=value,...]` -> a strategy, with a clear error for unknown names or keys."""
    name, _, params = spec.partition(":")
    name = name.strip()
    if name not in STRATEGIES:
        raise ConfigError(f"unknown strategy {name!r}; choose from {', '.join(STRATEGIES)}")
    cls = STRATEGIES[name]
    fields = {f.name: f.type for f in dataclasses.fields(cls)}
    kwargs = {}
    for item in filter(None, (p.strip() for p in params.split(","))):
        key, sep, value = (part.strip() for part in item.partition("="))
        if not sep or key not in fields:
            allowed = ", ".join(fields) or "none"
            raise ConfigError(f"bad setting {item!r} for strategy {name!r} (settings: {allowed})")
        if key in kwargs:
            raise ConfigError(f"strategy {name!r} sets {key} twice: {spec!r}")
        kwargs[key] = _parse_value(fields[key], value, f"strategy {name!r}: {key}")
    return cls(**kwargs)


def _parse_value(kind, value: str, what: str) -> bool | int | float:
    """A setting's text as its field's type (annotations are strings under `from __future__`)."""
    if kind in (bool, "bool"):
        if value.lower() not in ("true", "false", "1", "0"):
            raise ConfigError(f"{what} must be true or false, got {value!r}")
        return value.lower() in ("true", "1")
    try:
        return int(value) if kind in (int, "int") else float(value)
    except ValueError:
        raise ConfigError(f"{what} must be a number, got {value!r}") from None


def _positive(name: str, value: float) -> None:
    if not 0 < value < math.inf:  # also false for NaN
        raise ConfigError(f"{name} must be a finite number > 0, got {value}")
