"""Prompts go through the tokenizer's chat template, system turn included, left-padded."""

from __future__ import annotations

from dultra.data import Example, encode_examples, render_prompts
from dultra.data.prompts import MATH_SYSTEM
from dultra.model.tokenizer import encode_prompts


def test_system_turn_precedes_the_user_turn(tiny_tokenizer):
    ex = Example(id="1", task="t", kind="math", prompt="Compute 2 + 3.", system=MATH_SYSTEM, answer="5")
    [text] = render_prompts(tiny_tokenizer, [ex])
    assert text == f"<|system|>{MATH_SYSTEM}<|user|>Compute 2 + 3.<|assistant|>"


def test_encode_examples_matches_encode_prompts_without_system(tiny_tokenizer):
    examples = [Example(id=str(i), task="t", kind="math", prompt=p, answer="1")
                for i, p in enumerate(["Compute 1 + 2.", "Compute 10 + 20 - 3."])]
    ids, mask = encode_examples(tiny_tokenizer, examples)
    ref_ids, ref_mask = encode_prompts(tiny_tokenizer, [e.prompt for e in examples])
    assert ids.equal(ref_ids) and mask.equal(ref_mask)
    assert not mask[0, 0] and ids[0, 0] == tiny_tokenizer.pad_token_id


def test_without_a_chat_template_messages_are_joined(tiny_tokenizer):
    plain = tiny_tokenizer.__class__(tokenizer_object=tiny_tokenizer.backend_tokenizer)
    ex = Example(id="1", task="t", kind="math", prompt="Q", system="S", answer="1")
    assert render_prompts(plain, [ex]) == ["S\n\nQ"]
