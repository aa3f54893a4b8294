"""The tiny default's tokenizer: deterministic, standard HF files, chat template, special tokens."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from dultra.errors import ConfigError
from dultra.model.tokenizer import build_tiny_tokenizer, encode_prompts


def test_build_is_deterministic(tiny_tokenizer):
    again = build_tiny_tokenizer()
    text = "Compute 123 + 45.\ndef f(x):\n    return x * 2"
    assert again.get_vocab() == tiny_tokenizer.get_vocab()
    assert again(text)["input_ids"] == tiny_tokenizer(text)["input_ids"]


def test_digits_are_single_tokens(tiny_tokenizer):
    pieces = tiny_tokenizer.tokenize("x = 90817")
    assert [p for p in pieces if p.isdigit()] == list("90817")


def test_saved_files_load_as_a_standard_tokenizer(tiny_tokenizer, tmp_path):
    tiny_tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    text = "if n % 2 == 0:\n    n = n // 2  # ünïcode"
    assert loaded(text)["input_ids"] == tiny_tokenizer(text)["input_ids"]
    assert loaded.decode(loaded(text)["input_ids"]) == text
    for attr in ("mask_token_id", "eos_token_id", "pad_token_id"):
        assert getattr(loaded, attr) == getattr(tiny_tokenizer, attr) is not None
    assert len({loaded.mask_token_id, loaded.eos_token_id, loaded.pad_token_id}) == 3


def test_chat_template_wraps_a_user_turn(tiny_tokenizer):
    text = tiny_tokenizer.apply_chat_template(
        [{"role": "user", "content": "Compute 1 + 2."}], add_generation_prompt=True, tokenize=False
    )
    assert text == "<|user|>Compute 1 + 2.<|assistant|>"


def test_encode_prompts_left_pads(tiny_tokenizer):
    ids, mask = encode_prompts(tiny_tokenizer, ["a", "Compute 10 + 20."])
    assert ids.shape == mask.shape and mask[1].all() and not mask[0, 0]
    assert (ids[0][mask[0] == 0] == tiny_tokenizer.pad_token_id).all()
    raw, _ = encode_prompts(tiny_tokenizer, ["a"], chat_template=False)
    assert raw.shape[1] < ids.shape[1]
    for bad in ([], "a prompt"):
        with pytest.raises(ConfigError, match="prompts must be a non-empty list of strings"):
            encode_prompts(tiny_tokenizer, bad)
