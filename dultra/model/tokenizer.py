"""Tokenizer helpers: the tiny default's tokenizer, prompt encoding, special-token checks.

The tiny tokenizer is a byte-level BPE trained offline with the `tokenizers` library on a
small built-in corpus of arithmetic and Python; digits are split one per token, so
numbers are written digit by digit (the dependency between tokens that makes parallel
decoding hard). It is saved and loaded as a standard Hugging Face tokenizer with a chat
template.
"""

from __future__ import annotations

import random

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from dultra.errors import ConfigError

PAD, EOS, MASK = "<|pad|>", "<|eos|>", "<|mask|>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")
TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def _tiny_corpus(n: int = 4000, seed: int = 0) -> list[str]:
    """Deterministic training text: word problems, arithmetic chains and small functions."""
    rng = random.Random(seed)
    names = ["a", "b", "n", "x", "y", "total", "count", "result", "values", "items", "s"]
    words = ("what is the sum of and then add subtract multiply times how many are left "
             "answer compute each has gives takes more less than").split()
    lines = []
    for _ in range(n):
        a, b, c = rng.randint(0, 999), rng.randint(0, 99), rng.randint(1, 9)
        kind = rng.randrange(4)
        if kind == 0:
            lines.append(f"Compute {a} + {b} - {c}. {a} + {b} = {a + b}. {a + b} - {c} = {a + b - c}.\n#### {a + b - c}")
        elif kind == 1:
            lines.append(" ".join(rng.choice(words) for _ in range(12)) + f" {a} {b}?")
        elif kind == 2:
            f, v = rng.choice(names), rng.choice(names)
            lines.append(
                f"def {f}_{c}({v}):\n    return {v} * {c} + {b}\n\nassert {f}_{c}({a}) == {a * c + b}\n"
            )
        else:
            v = rng.choice(names)
            lines.append(f"for i in range({c}):\n    if {v} % 2 == 0:\n        {v} = {v} // 2\n    else:\n        {v} += i\n")
    return lines


def build_tiny_tokenizer(vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """Byte-level BPE with pad, eos, mask and chat-role special tokens (ids 0..5)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, EOS, MASK, *ROLE_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_tiny_corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD,
        eos_token=EOS,
        mask_token=MASK,
        additional_special_tokens=list(ROLE_TOKENS),
        chat_template=TINY_CHAT_TEMPLATE,
        padding_side="left",
        model_max_length=1 << 30,
    )


def check_tokenizer(tokenizer: PreTrainedTokenizerBase, mask_token_id: int) -> None:
    """The model's mask id must be a special token of this tokenizer."""
    if tokenizer.mask_token_id is not None and tokenizer.mask_token_id != mask_token_id:
        raise ConfigError(
            f"tokenizer mask token id {tokenizer.mask_token_id} differs from the model's "
            f"mask_token_id {mask_token_id}"
        )
    token = tokenizer.convert_ids_to_tokens(mask_token_id) if mask_token_id < len(tokenizer) else None
    if token is None or token not in tokenizer.all_special_tokens + list(tokenizer.added_tokens_encoder):
        raise ConfigError(
            f"the tokenizer has no mask token: id {mask_token_id} (the model's mask_token_id) "
            "is not one of its special tokens"
        )


def encode_prompts(
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    chat_template: bool = True,
    pad_token_id: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts -> left-padded (input_ids, attention_mask), both (B, P) int64.

    With `chat_template` (and a tokenizer that has one) each prompt becomes a user turn
    followed by the assistant prefix; otherwise the raw text is tokenized.
    """
    if isinstance(prompts, str) or not prompts:
        raise ConfigError(f"prompts must be a non-empty list of strings, got {prompts!r}")
    use_template = chat_template and getattr(tokenizer, "chat_template", None)
    rows = []
    for text in prompts:
        if use_template:
            text = tokenizer.apply_chat_template(
                [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False
            )
        rows.append(tokenizer(text, add_special_tokens=False)["input_ids"])
    if any(len(r) == 0 for r in rows):
        raise ConfigError("a prompt encodes to zero tokens")
    pad = pad_token_id if pad_token_id is not None else tokenizer.pad_token_id
    if pad is None:
        pad = tokenizer.eos_token_id
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(r)
        mask[i, width - len(r):] = 1
    return ids, mask


def pad_left(ids: torch.Tensor, mask: torch.Tensor, width: int, pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded (B, P) ids and mask -> (B, max(P, width)), padded further on the left.

    Decoding gives the same tokens (padding is masked out of attention and positions count
    from each row's first token); fewer distinct widths mean fewer compiled step layouts.
    """
    extra = width - ids.shape[1]
    if extra <= 0:
        return ids, mask
    return (torch.cat([ids.new_full((ids.shape[0], extra), pad_token_id), ids], dim=1),
            torch.cat([mask.new_zeros((mask.shape[0], extra)), mask], dim=1))
