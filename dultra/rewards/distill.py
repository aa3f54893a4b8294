"""Distillation reward: how likely an autoregressive teacher finds the decoded completion.

    teacher = load_teacher("Qwen/Qwen2.5-Math-7B-Instruct", device="cuda")
    reward = DistillReward(teacher)
    reward(completions, messages=[ex.messages() for ex in examples_repeated])

Per completion: the prompt's chat messages go through the teacher's own chat template
(with the assistant prefix), the completion text is re-tokenized with the teacher's
tokenizer and followed by the teacher's EOS, and the reward is the mean log-probability
of those completion tokens given everything before them (as the reference: mean over
completion tokens, prompt as context). The EOS makes an empty completion well defined
(log p(EOS | prompt), usually very negative) instead of a free 0. Rows are scored in
batches of `teacher.batch_size`, right-padded, without gradients.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from dultra.errors import CheckpointError, ConfigError

Messages = list[dict[str, str]]


@dataclass
class Teacher:
    """An autoregressive LM and the tokenizer its completions are re-tokenized with."""

    model: PreTrainedModel  # a causal LM: forward(input_ids, attention_mask).logits is (B, L, V)
    tokenizer: PreTrainedTokenizerBase | None  # the teacher's own tokenizer (required)
    batch_size: int = 8  # sequences per teacher forward pass
    append_eos: bool = True  # score the teacher's EOS after the completion (see module doc)

    def __post_init__(self) -> None:
        if self.tokenizer is None:
            raise ConfigError(
                "the distillation teacher has no tokenizer: completions must be re-tokenized "
                "with the teacher's own tokenizer (load both with load_teacher)"
            )
        if self.batch_size < 1:
            raise ConfigError(f"teacher batch_size must be >= 1, got {self.batch_size}")


def load_teacher(
    name_or_path: str | Path, dtype: torch.dtype = torch.bfloat16,
    device: str | torch.device | None = None, batch_size: int = 8,
) -> Teacher:
    """A Hugging Face causal LM and its tokenizer, from the Hub or a local directory."""
    from dultra.model.hub import hub_checkpoint, is_hub_id
    from dultra.model.loading import check_tokenizer_files

    path = Path(name_or_path).expanduser()
    if not path.exists():  # a Hub id: downloaded with the Hub look-up's deadline and one-line errors
        if not is_hub_id(str(name_or_path)):
            raise CheckpointError(f"the teacher {name_or_path} is neither a directory nor a Hub id (owner/name)")
        path = hub_checkpoint(str(name_or_path))
        if not any(path.glob("*.safetensors")):  # hub_checkpoint fetches no pickled weights
            raise CheckpointError(f"the teacher {name_or_path} has no safetensors weights on the Hub (pickled .bin "
                                  "files are not downloaded): give a local directory, or a repository with safetensors")
    check_tokenizer_files(path, "the teacher")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, TypeError) as err:
        raise CheckpointError(
            f"the teacher {name_or_path} has no loadable tokenizer (it is needed to re-tokenize "
            f"completions): {err}"
        ) from None
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except (OSError, ValueError) as err:  # no weights, an unknown architecture
        raise CheckpointError(f"the teacher {name_or_path} cannot be loaded as a causal LM: {err}") from None
    if device is not None:
        model = model.to(device)
    return Teacher(model.eval(), tokenizer, batch_size=batch_size)


def _context_ids(tok: PreTrainedTokenizerBase, messages: Messages | None) -> list[int]:
    """Token ids the completion is conditioned on (the BOS alone when there is no prompt)."""
    if messages and getattr(tok, "chat_template", None):
        text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return tok(text, add_special_tokens=False)["input_ids"]
    if messages:
        return tok("\n\n".join(m["content"] for m in messages))["input_ids"]
    return [tok.bos_token_id] if tok.bos_token_id is not None else []


def _rows(teacher: Teacher, completions: Sequence[str], messages: Sequence[Messages | None]):
    """(context ids, completion ids) per completion, in the teacher's vocabulary."""
    tok = teacher.tokenizer
    eos = [tok.eos_token_id] if teacher.append_eos and tok.eos_token_id is not None else []
    for text, msgs in zip(completions, messages):
        yield _context_ids(tok, msgs), tok(text, add_special_tokens=False)["input_ids"] + eos


@torch.no_grad()
def _score_batch(model: PreTrainedModel, rows: list[tuple[list[int], list[int]]], pad_id: int) -> list[float | None]:
    """Mean log p(completion token | prefix) per row; None for a row with nothing to score."""
    seqs = [ctx + comp for ctx, comp in rows]
    width = max(len(s) for s in seqs)
    device = model.device
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros((len(seqs), width), dtype=torch.long, device=device)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, device=device)
        mask[i, : len(s)] = 1
    logits = model(input_ids=ids, attention_mask=mask).logits  # (B, width, V)
    out: list[float | None] = []
    for i, (ctx, comp) in enumerate(rows):
        # Token at position j is predicted by the logits at j - 1; with no context the
        # first completion token has no prediction and is skipped.
        start = max(len(ctx), 1)
        end = len(ctx) + len(comp)
        if end <= start:
            out.append(None)
            continue
        logp = torch.log_softmax(logits[i, start - 1 : end - 1].float(), dim=-1)  # (T, V)
        picked = logp.gather(1, ids[i, start:end, None]).squeeze(1)
        out.append(float(picked.mean()))
    return out


def completion_log_likelihood(
    teacher: Teacher, completions: Sequence[str], messages: Sequence[Messages | None] | None = None
) -> list[float | None]:
    """N completions (and their prompts' chat messages) -> N mean per-token log-likelihoods."""
    msgs = list(messages) if messages is not None else [None] * len(completions)
    if len(msgs) != len(completions):
        raise ValueError(f"{len(completions)} completions but {len(msgs)} message lists")
    tok = teacher.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    rows = list(_rows(teacher, completions, msgs))
    out: list[float | None] = []
    for b in range(0, len(rows), teacher.batch_size):
        out.extend(_score_batch(teacher.model, rows[b : b + teacher.batch_size], pad))
    return out


@dataclass
class DistillReward:
    """The reward-contract wrapper: (completions, messages=None, **fields) -> list[float | None]."""

    teacher: Teacher  # the autoregressive teacher (math or code)

    def __call__(
        self, completions: Sequence[str], messages: Sequence[Messages | None] | None = None, **_: object
    ) -> list[float | None]:
        return completion_log_likelihood(self.teacher, completions, messages)
