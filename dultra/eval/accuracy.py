"""Accuracy and parallelism of one model + strategy on a list of examples, sample by sample.

    result = evaluate(model, tokenizer, examples, Threshold(0.9), DecodeConfig(gen_length=64, block_length=16))
    result.accuracy, result.mean_nfe, result.mean_tpf, result.records

Greedy decoding (temperature 0) by default, so results are reproducible and do not depend
on the batch size. NFE counts the forward passes in which a sample still had masks
(dultra.decoding.generate); TPF is a sample's tokens before the first EOS divided by its
NFE. A math answer is correct when math-verify matches it; a code answer when every unit
test passes in the sandbox (pass@1). A malformed completion is simply wrong; a sample the
sandbox could not run is unscored (None), never wrong.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch
from transformers import PreTrainedTokenizerBase

from dultra.data import Example, encode_examples, extract_answer, extract_code
from dultra.decoding import DecodeConfig, Strategy, generate
from dultra.errors import ConfigError, DataError
from dultra.model.tokenizer import pad_left
from dultra.rewards import CodeReward, CodeRunner, math_correct_reward

# Compiled decoding captures one step layout per batch shape: prompts padded to a multiple
# of this many tokens share a few (batch, width) shapes instead of one per longest prompt.
COMPILED_PROMPT_MULTIPLE = 64


@dataclass
class SampleRecord:
    """One decoded example: what was produced, how it was judged, what it cost."""

    strategy: str
    id: str
    completion: str
    extracted: str | None  # the answer or program the verdict is about
    reference: str | None  # math: the reference answer
    score: float | None  # math: 1/0; code: fraction of tests passed; None: unscored
    correct: bool | None  # math: score == 1; code: every test passed; None: unscored
    nfe: int
    tokens: int  # generated tokens before the first EOS
    latency_s: float  # wall time of its batch / batch size
    batch_size: int

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class EvalResult:
    """Per-sample records of one strategy and their means."""

    strategy: str
    records: list[SampleRecord] = field(default_factory=list)

    @property
    def correct(self) -> list[float | None]:
        return [None if r.correct is None else float(r.correct) for r in self.records]

    @property
    def nfe(self) -> list[int]:
        return [r.nfe for r in self.records]

    @property
    def completions(self) -> list[str]:
        return [r.completion for r in self.records]

    @property
    def accuracy(self) -> float:
        scored = [c for c in self.correct if c is not None]
        return sum(scored) / len(scored) if scored else float("nan")

    @property
    def mean_nfe(self) -> float:
        return sum(self.nfe) / len(self.nfe)

    @property
    def mean_tpf(self) -> float:
        return tokens_per_forward(self.records)


def tokens_per_forward(records: Sequence[SampleRecord]) -> float:
    """TPF of a set of samples: their tokens over their forward passes (report.TPF_RULE)."""
    return sum(r.tokens for r in records) / max(sum(r.nfe for r in records), 1)


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[Example],
    strategy: Strategy,
    decode: DecodeConfig,
    batch_size: int = 32,
    code_runner: CodeRunner | None = None,
    on_batch: Callable[[list[SampleRecord]], None] | None = None,
) -> EvalResult:
    """Decode every example once and judge it; `on_batch` sees each batch's records as they finish.
    Code examples need a `code_runner` (dultra.rewards.sandbox_client.SandboxClient)."""
    if not examples:
        raise DataError("no examples to evaluate")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if code_runner is None and any(ex.kind == "code" for ex in examples):
        raise ConfigError("code examples are scored by running them: pass code_runner=SandboxClient(url), or "
                          "SandboxClient(None) for in-process workers (dultra.rewards.sandbox_client)")
    device = next(model.parameters()).device
    result = EvalResult(strategy.spec())
    for start in range(0, len(examples), batch_size):
        batch = list(examples[start:start + batch_size])
        ids, mask = encode_examples(tokenizer, batch)
        if decode.compile:
            ids, mask = pad_left(ids, mask, _compiled_width(ids.shape[1], model.config.max_sequence_length,
                                                            decode.gen_length), model.config.pad_token_id)
        began = time.perf_counter()
        out = generate(model, ids.to(device), mask.to(device), strategy, decode)
        if device.type == "cuda":
            torch.cuda.synchronize()
        latency = (time.perf_counter() - began) / len(batch)
        texts = out.texts(tokenizer)
        scores = _scores(texts, batch, code_runner)
        records = [
            SampleRecord(
                strategy=result.strategy, id=ex.id, completion=text,
                extracted=extract_answer(text) if ex.kind == "math" else extract_code(text),
                reference=ex.answer, score=score,
                correct=None if score is None else score == 1.0,
                nfe=int(nfe), tokens=int(n), latency_s=latency, batch_size=len(batch),
            )
            for ex, text, score, nfe, n in zip(batch, texts, scores, out.nfe.tolist(), out.lengths.tolist())
        ]
        result.records += records
        if on_batch is not None:
            on_batch(records)
    return result


def _compiled_width(width: int, context: int, gen_length: int) -> int:
    """`width` rounded up to COMPILED_PROMPT_MULTIPLE, within what the context leaves the prompt."""
    rounded = -(-width // COMPILED_PROMPT_MULTIPLE) * COMPILED_PROMPT_MULTIPLE
    return max(width, min(rounded, context - gen_length))


def _scores(texts: list[str], batch: list[Example], runner: CodeRunner | None) -> list[float | None]:
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
