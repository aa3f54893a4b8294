r"""Synthetic tasks of the tiny default: multi-step arithmetic and tiny Python functions.

    from dultra.data.synthetic import generate
    train = generate("synthetic-math", "train", n=10000, seed=0)
    held_out = generate("synthetic-code", "test", n=500)

synthetic-math    prompt  "Compute ||||7 - 6| - 6| - 4| - 6|."
                  target  "1, 5 and 1 and 5.\n#### 5"   (the running value after each operation)
synthetic-code    prompt  "Write f(x) = x + 3 - 5 + 12 - 1. Check f(7)."
                  target  "```python\ndef f(x):\n    x = x + 3\n    x = x - 5\n    x = x + 12
                           \n    return x - 1\n\nassert f(7) == 16\n```"
                  tests   the function at the checked input and at three others

Why this shape: each running value is the previous one combined with the next operation
of the prompt, so the values form a chain of dependent tokens. Decoded one value per
forward pass, each is a one-step lookup the tiny model learns in minutes; unmasked all at
once, every value must be computed from the prompt alone. A distance |v - b| folds the
number line, so a chain of them is no sum over the prompt: configs/tiny.yaml's two-layer
base gets 99.7-100% one value per step and 30% in one pass
(benchmarks/results/tiny_pretrain_lr.md). Accuracy falls as a strategy unmasks more tokens
per step: the trade-off a planner has to learn. `ops="+-"` gives sums instead (and "*"
products), which a well-trained base computes in one pass: there is no trade-off then,
except on a part-trained base. Code keeps sums by default: abs(x - b) lines would not fit
its 64 tokens. The defaults (four operations, fixed prompt layout) keep the task within
reach of the tiny model on one CPU; the knobs widen it for bigger models. The code task
adds a self-check: the program's own assert must hold, which again needs the chain
evaluated in order.

`joiners` draws the word between two running values, each gap on its own (one token each,
so the values keep their positions). Several equally right words model the free choices
of a real completion: the model's confidence there stays near 1/len(joiners), so a
confidence rule spends a step on each while a learned planner need not. `joiners=(",",)`
gives the fixed-comma task of the earlier results. The free words slow the tiny base's
learning of the chain: on sums, 5000 steps where the fixed comma needed 1500
(benchmarks/results/tiny_depth.md).

Determinism and splits: the same (task, split, n, seed, config) always gives the same
examples. A problem's split is a hash of its prompt (10% held out by default), so train
and test never share a prompt whatever the seeds or sizes. Targets fit in 16 tokens of
the tiny tokenizer for math and 64 for code with the default config (one token per digit).
"""

from __future__ import annotations

import dataclasses
import hashlib
import operator
import random
from dataclasses import dataclass
from functools import partial

from dultra.data.example import CodeTest, Example
from dultra.errors import ConfigError, DataError

TASKS = ("synthetic-math", "synthetic-code")
SPLITS = ("train", "test")
OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "|": lambda a, b: abs(a - b)}  # op -> (a, b) -> result
# Code keeps sums: abs(x - b) lines would push its targets past 64 tokens.
DEFAULT_OPS = {"synthetic-math": "|", "synthetic-code": "+-"}


@dataclass(frozen=True)
class SyntheticConfig:
    """Difficulty knobs of both synthetic tasks."""

    min_steps: int = 4  # fewest operations in a problem
    max_steps: int = 4  # most operations in a problem (equal: every prompt has the same layout)
    # Operations to draw from: "|" takes |x - b|, "+" and "-" add and subtract, "*" multiplies
    # by 2..9. None: the task's default (DEFAULT_OPS).
    ops: str | None = None
    max_start: int = 9  # math: first number drawn from 0..max_start
    max_operand: int = 9  # math: +, - and | operands drawn from 1..max_operand
    max_value: int = 9  # math: every running value stays in 0..max_value
    code_max_constant: int = 19  # code: +/- constants drawn from 1..code_max_constant
    code_max_input: int = 30  # code: checked and tested inputs drawn from 0..code_max_input
    heldout_percent: int = 10  # share of the problem space that belongs to the test split
    joiners: tuple[str, ...] = (",", " then", " and")  # math: words drawn between two values, per gap

    def __post_init__(self) -> None:
        if not 1 <= self.min_steps <= self.max_steps:
            raise ConfigError(f"need 1 <= min_steps <= max_steps, got {self.min_steps}, {self.max_steps}")
        if self.ops is not None and (not self.ops or set(self.ops) - set(OPS)):
            raise ConfigError(f"ops must be a non-empty subset of {''.join(OPS)!r}, got {self.ops!r}")
        if not 0 < self.heldout_percent < 100:
            raise ConfigError(f"heldout_percent must be in 1..99, got {self.heldout_percent}")
        if not self.joiners or any("#" in j or "\n" in j for j in self.joiners):
            raise ConfigError(f"joiners must be non-empty words without '#' or newlines, got {self.joiners!r}")
        if self.max_value < max(self.max_start, 1):
            raise ConfigError("max_value must be at least max_start (and 1)")


def split_of(prompt: str, heldout_percent: int) -> str:
    """'test' for a fixed `heldout_percent`% of prompts (by a stable hash), else 'train'."""
    bucket = int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:8], "big") % 100
    return "test" if bucket < heldout_percent else "train"


def render(start: str, steps: list[tuple[str, int]]) -> str:
    """Left-to-right chain as an expression: parentheses only where precedence needs them."""
    expr, low = start, False  # low: the expression's top operator is + or -
    for op, b in steps:
        if op == "|":  # the bars group like parentheses
            expr, low = f"|{expr} - {b}|", False
            continue
        if op == "*" and low:
            expr = f"({expr})"
        expr, low = f"{expr} {op} {b}", op in "+-"
    return expr


def _math_step(rng: random.Random, value: int, cfg: SyntheticConfig) -> tuple[str, int]:
    """One operation that keeps the result in 0..max_value (only feasible ops are drawn)."""
    feasible = [op for op in cfg.ops if (op == "+" and value < cfg.max_value) or (op == "-" and value > 0)
                or (op == "*" and 2 * max(value, 1) <= cfg.max_value) or op == "|"]
    if not feasible:
        raise ConfigError(f"synthetic-math: no operation in ops={cfg.ops!r} keeps {value} within "
                          f"0..{cfg.max_value}; add '|', or both '+' and '-'")
    op = rng.choice(feasible)
    if op == "|":  # |value - b| <= max(value, b)
        return op, rng.randint(1, min(cfg.max_operand, cfg.max_value))
    if op == "+":
        return op, rng.randint(1, min(cfg.max_operand, cfg.max_value - value))
    if op == "-":
        return op, rng.randint(1, min(cfg.max_operand, value))
    return op, rng.randint(2, min(9, cfg.max_value // max(value, 1)))


def math_example(rng: random.Random, cfg: SyntheticConfig, joiner_rng: random.Random) -> Example:
    """One chain; the joiners come from their own stream, so the problems do not depend on them."""
    start = value = rng.randint(0, cfg.max_start)
    steps, values = [], []
    for _ in range(rng.randint(cfg.min_steps, cfg.max_steps)):
        op, b = _math_step(rng, value, cfg)
        value = OPS[op](value, b)
        steps.append((op, b))
        values.append(str(value))
    prompt = f"Compute {render(str(start), steps)}."
    body = values[0] + "".join(f"{joiner_rng.choice(cfg.joiners)} {v}" for v in values[1:])
    return Example(
        id="", task="synthetic-math", kind="math", prompt=prompt, answer=str(value),
        solution=f"{body}.\n#### {value}", meta={"steps": len(steps)},
    )


def code_example(rng: random.Random, cfg: SyntheticConfig) -> Example:
    steps = []
    for _ in range(rng.randint(cfg.min_steps, cfg.max_steps)):
        op = rng.choice(cfg.ops)
        steps.append((op, rng.randint(2, 9) if op == "*" else rng.randint(1, cfg.code_max_constant)))

    def f(x: int) -> int:
        for op, b in steps:
            x = OPS[op](x, b)
        return x

    inputs = rng.sample(range(cfg.code_max_input + 1), 4)
    lines = [f"abs(x - {b})" if op == "|" else f"x {op} {b}" for op, b in steps]
    body = [f"    x = {line}" for line in lines[:-1]] + [f"    return {lines[-1]}"]
    program = "def f(x):\n" + "\n".join(body) + f"\n\nassert f({inputs[0]}) == {f(inputs[0])}"
    return Example(
        id="", task="synthetic-code", kind="code",
        prompt=f"Write f(x) = {render('x', steps)}. Check f({inputs[0]}).",
        tests=tuple(CodeTest("assert", source=f"assert f({x}) == {f(x)}\n") for x in inputs),
        solution=f"```python\n{program}\n```", meta={"steps": len(steps)},
    )


def generate(
    task: str, split: str, n: int, seed: int = 0, config: SyntheticConfig | None = None
) -> list[Example]:
    """`n` distinct examples of `task` ("synthetic-math" | "synthetic-code") in `split`.

    Ids are "<task>/<12 hex of the prompt's hash>", stable across runs and sizes.
    """
    if task not in TASKS:
        raise ConfigError(f"unknown synthetic task {task!r} (expected one of {TASKS})")
    cfg = config or SyntheticConfig()
    if cfg.ops is None:
        cfg = dataclasses.replace(cfg, ops=DEFAULT_OPS[task])
    if split not in SPLITS:
        raise ConfigError(f"synthetic tasks have splits {SPLITS}, not {split!r}")
    # A string seed is hashed with SHA-512 by `random`, so it is the same on every machine.
    rng = random.Random(f"{task}/{split}/{seed}")
    joiner_rng = random.Random(f"{task}/{split}/{seed}/joiners")
    make = partial(math_example, joiner_rng=joiner_rng) if task == "synthetic-math" else code_example
    out: dict[str, Example] = {}
    for _ in range(100 * n + 1000):
        if len(out) == n:
            break
        ex = make(rng, cfg)
        if ex.prompt not in out and split_of(ex.prompt, cfg.heldout_percent) == split:
            digest = hashlib.sha256(ex.prompt.encode()).hexdigest()[:12]
            out[ex.prompt] = dataclasses.replace(ex, id=f"{task}/{digest}")
    if len(out) < n:
        raise DataError(f"{task}: only {len(out)} distinct '{split}' problems found; ask for fewer "
                        "or widen the SyntheticConfig ranges")
    return list(out.values())
