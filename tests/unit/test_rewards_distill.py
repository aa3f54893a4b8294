"""Distillation reward with a tiny Llama teacher built from a config (no downloads)."""

from __future__ import annotations

import pytest
import torch

from dultra.data import generate
from dultra.errors import CheckpointError, ConfigError
from dultra.rewards import DistillReward, Teacher, completion_log_likelihood, load_teacher
from tests.reward_helpers import tiny_llama


@pytest.fixture
def teacher(tiny_tokenizer) -> Teacher:
    return Teacher(tiny_llama(len(tiny_tokenizer)), tiny_tokenizer, batch_size=2)


def slow_reference(teacher: Teacher, messages, completion: str) -> float:
    """One forward per completion token on the unpadded prefix: obviously right, slow."""
    tok = teacher.tokenizer
    ctx = tok(tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False),
              add_special_tokens=False)["input_ids"]
    comp = tok(completion, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    total = 0.0
    with torch.no_grad():
        for j, token in enumerate(comp):
            logits = teacher.model(input_ids=torch.tensor([ctx + comp[:j]])).logits[0, -1]
            total += torch.log_softmax(logits, -1)[token].item()
    return total / len(comp)


def test_batched_scores_match_the_slow_reference(teacher):
    examples = generate("synthetic-math", "test", n=3)
    # Different lengths, so the batch of 2 pads its rows.
    completions = [examples[0].solution, "12", examples[2].solution + " extra words"]
    messages = [e.messages() for e in examples]
    got = completion_log_likelihood(teacher, completions, messages)
    want = [slow_reference(teacher, m, c) for m, c in zip(messages, completions)]
    assert got == pytest.approx(want, abs=1e-4)
    single = Teacher(teacher.model, teacher.tokenizer, batch_size=1)
    assert completion_log_likelihood(single, completions, messages) == pytest.approx(got, abs=1e-4)
    assert DistillReward(teacher)(completions, messages=messages, answer=["unused"] * 3) == got


def test_trained_teacher_prefers_what_it_learned(tiny_tokenizer):
    tok = tiny_tokenizer
    model = tiny_llama(len(tok))
    train = generate("synthetic-math", "train", n=64)
    texts = [tok.apply_chat_template(e.messages(), add_generation_prompt=True, tokenize=False) + e.solution
             + tok.eos_token for e in train]
    batch = tok(texts, add_special_tokens=False, padding=True, return_tensors="pt")
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    held_out = generate("synthetic-math", "test", n=8)
    # The same characters in a scrambled order: right tokens, wrong structure.
    scrambled = ["".join(sorted(e.solution)) for e in held_out]
    messages = [e.messages() for e in held_out]

    def scores():
        teacher = Teacher(model.eval(), tok, batch_size=4)
        good = completion_log_likelihood(teacher, [e.solution for e in held_out], messages)
        return sum(good) / 8, sum(completion_log_likelihood(teacher, scrambled, messages)) / 8

    before, _ = scores()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(60):
        loss = model(**batch, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    after, after_scrambled = scores()
    assert after > before + 1.0
    assert after > after_scrambled + 1.0


def test_empty_completions_and_missing_context(teacher, tiny_tokenizer):
    [empty] = completion_log_likelihood(teacher, [""], [[{"role": "user", "content": "Compute 1 + 1."}]])
    assert empty is not None and empty < 0  # log p(EOS | prompt)
    bare = Teacher(teacher.model, tiny_tokenizer, append_eos=False)
    # No prompt and no BOS: the first token has no prediction, a 1-token text has nothing to score.
    assert tiny_tokenizer.bos_token_id is None
    scored = completion_log_likelihood(bare, ["7", "Compute 1 + 1."])
    assert scored[0] is None and scored[1] < 0


def test_teacher_without_tokenizer_is_refused(tmp_path, tiny_tokenizer):
    model = tiny_llama(len(tiny_tokenizer))
    with pytest.raises(ConfigError, match="teacher has no tokenizer"):
        Teacher(model, None)
    model.save_pretrained(tmp_path / "no-tokenizer")
    with pytest.raises(CheckpointError, match="the teacher .*no-tokenizer has no tokenizer files"):
        load_teacher(tmp_path / "no-tokenizer", dtype=torch.float32)
    with pytest.raises(CheckpointError, match="the teacher nonexist is neither a directory nor a Hub id"):
        load_teacher("nonexist")
    tiny_tokenizer.save_pretrained(tmp_path / "no-weights")
    with pytest.raises(CheckpointError, match="the teacher .*no-weights cannot be loaded as a causal LM"):
        load_teacher(tmp_path / "no-weights", dtype=torch.float32)
    model.save_pretrained(tmp_path / "full")
    tiny_tokenizer.save_pretrained(tmp_path / "full")
    loaded = load_teacher(tmp_path / "full", dtype=torch.float32)
    ref = Teacher(model, tiny_tokenizer)
    assert completion_log_likelihood(loaded, ["12 + 7 = 19."]) == pytest.approx(
        completion_log_likelihood(ref, ["12 + 7 = 19."]), abs=1e-5)
