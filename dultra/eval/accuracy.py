"""Accuracy and parallelism of one model + strategy on a list of examples.

    result = evaluate(model, tokenizer, examples, Threshold(0.9), DecodeConfig(gen_length=64, block_length=16))
    result.accuracy, result.mean_nfe, result.mean_tpf

Greedy decoding (temperature 0) by default, so results are reproducible. NFE counts the
forward passes in which a sample still had masks (dultra.decoding.generate); TPF is tokens
before the first EOS divided by NFE.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedTokenizerBase

from dultra.data import Example, encode_examples
from dultra.decoding import DecodeConfig, Strategy, generate
from dultra.rewards import CodeReward, CodeRunner, math_correct_reward


@dataclass
class EvalResult:
    """Per-sample records and their means; `correct` is None where a sample could not be scored."""

    strategy: str
    correct: list[float | None] = field(default_factory=list)
    nfe: list[int] = field(default_factory=list)
    tpf: list[float] = field(default_factory=list)
    completions: list[str] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        scored = [c for c in self.correct if c is not None]
        return sum(scored) / len(scored) if scored else float("nan")

    @property
    def mean_nfe(self) -> float:
        return sum(self.nfe) / len(self.nfe)

    @property
    def mean_tpf(self) -> float:
        return sum(self.tpf) / len(self.tpf)


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[Example],
    strategy: Strategy,
    decode: DecodeConfig,
    batch_size: int = 32,
    code_runner: CodeRunner | None = None,
) -> EvalResult:
    """Decode every example once and score it (math-verify for math, unit tests for code)."""
    device = next(model.parameters()).device
    result = EvalResult(strategy.spec())
    for start in range(0, len(examples), batch_size):
        batch = list(examples[start:start + batch_size])
        ids, mask = encode_examples(tokenizer, batch)
        out = generate(model, ids.to(device), mask.to(device), strategy, decode)
        texts = tokenizer.batch_decode(
            [row[:n] for row, n in zip(out.completion.tolist(), out.lengths.tolist())], skip_special_tokens=True
        )
        result.completions += texts
        result.nfe += out.nfe.tolist()
        result.tpf += out.tpf.tolist()
        result.correct += _correct(texts, batch, code_runner)
    return result


def _correct(texts: list[str], batch: list[Example], runner: CodeRunner | None) -> list[float | None]:
    out: list[float | None] = [None] * len(texts)
    math_idx = [i for i, ex in enumerate(batch) if ex.kind == "math"]
    for i, v in zip(math_idx, math_correct_reward([texts[i] for i in math_idx], [batch[i].answer for i in math_idx])):
        out[i] = v
    code_idx = [i for i, ex in enumerate(batch) if ex.kind == "code"]
    if code_idx and runner is not None:
        values = CodeReward(runner)([texts[i] for i in code_idx], [batch[i].tests for i in code_idx],
                                    [batch[i].code_prefix for i in code_idx])
        for i, v in zip(code_idx, values):
            out[i] = v
    return out
