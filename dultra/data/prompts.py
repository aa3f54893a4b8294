"""Prompt templates and their encoding through the tokenizer's chat template.

    from dultra.data.prompts import encode_examples
    input_ids, attention_mask = encode_examples(tokenizer, examples)   # left-padded (B, P)

The benchmark tasks take the shape of the dUltra reference's "non-thinking" setup, in our
own words: a system message asks for step-by-step reasoning with the final answer in
\\boxed{} (math) or for the solution in one ```python block (code), and the user message is
the problem. The reference's evaluation words its prompts differently (and puts the math
instructions in the user turn), so its figures are reproduced only with its prompts: write
them into an examples file (`Example.system` / `Example.prompt`, one JSON object a line) and
pass `dultra eval --examples FILE`. The synthetic tasks of the tiny default send no system
message (their prompts must stay short).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PreTrainedTokenizerBase

from dultra.data.example import Example
from dultra.model.tokenizer import encode_prompts

MATH_SYSTEM = (
    "You are an expert mathematician. Read the problem carefully, solve it step by step, "
    "and write the final answer inside \\boxed{}."
)
CODE_SYSTEM = (
    "You are an expert Python programmer. Solve the task with correct, efficient Python "
    "and put the complete solution in a single ```python code block."
)


def humaneval_prompt(signature_and_docstring: str) -> str:
    """HumanEval: the model writes the whole function (imports included) from its stub."""
    return (
        "Complete the following Python function. Write the whole function, including the "
        f"signature, in your answer.\n```python\n{signature_and_docstring.strip()}\n```"
    )


def mbpp_prompt(text: str, tests: Sequence[str]) -> str:
    """MBPP: the task text plus its asserts, which also fix the function's name."""
    shown = "\n".join(t.strip() for t in tests)
    return f"{text.strip()}\nYour code should pass these tests:\n```python\n{shown}\n```"


def apps_prompt(question: str, starter_code: str, fn_name: str | None) -> str:
    """APPS: the statement, the starter code if any, and how the program is called."""
    parts = [question.strip()]
    if starter_code.strip():
        parts.append(f"Starter code:\n```python\n{starter_code.rstrip()}\n```")
    if fn_name:
        parts.append(f"Implement `{fn_name}` as in the starter code; it is called directly.")
    else:
        parts.append("Read the input from standard input and print the answer to standard output.")
    return "\n\n".join(parts)


def render_prompts(tokenizer: PreTrainedTokenizerBase, examples: Sequence[Example]) -> list[str]:
    """Each example's messages through the chat template, ending with the assistant prefix.

    A tokenizer without a chat template gets "system\\n\\nuser" as plain text.
    """
    if getattr(tokenizer, "chat_template", None):
        return [
            tokenizer.apply_chat_template(ex.messages(), add_generation_prompt=True, tokenize=False)
            for ex in examples
        ]
    return ["\n\n".join(m["content"] for m in ex.messages()) for ex in examples]


def encode_examples(
    tokenizer: PreTrainedTokenizerBase, examples: Sequence[Example]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Examples -> left-padded (input_ids, attention_mask), both (B, P) int64.

    The template is rendered here (system turn included) and handed to `encode_prompts`
    as raw text, so padding and special-token handling stay those of the model package.
    """
    return encode_prompts(tokenizer, render_prompts(tokenizer, examples), chat_template=False)


def prompts_too_long(tokenizer: PreTrainedTokenizerBase, examples: Sequence[Example], context: int,
                     gen_length: int) -> str | None:
    """Why some prompts, rendered as decoding sees them, do not fit the model's `context`
    beside `gen_length` tokens; None if all fit. Every prompt is checked: one that does not
    fit would stop a run at its step, and again at every resume."""
    room = context - gen_length
    if room < 1:
        return f"gen_length ({gen_length}) leaves no room for a prompt in the model's context ({context}): lower it"
    lengths = [len(ids) for ids in tokenizer(render_prompts(tokenizer, examples), add_special_tokens=False)["input_ids"]]
    over = [(n, ex.id) for n, ex in zip(lengths, examples, strict=True) if n > room]
    if not over:
        return None
    longest, name = max(over)
    return (f"{len(over)} of {len(lengths)} prompts take more than the {room} tokens the model's context leaves "
            f"beside gen_length (the longest, {name!r}, {longest}): drop them from the data, or lower gen_length")


def solutions_too_long(tokenizer: PreTrainedTokenizerBase, examples: Sequence[Example], gen_length: int,
                       sample: int = 200) -> str | None:
    """A warning when reference solutions (of the first `sample` examples that have one) do not
    fit gen_length tokens with their EOS: completions that short can rarely be right. None if all fit."""
    solutions = [ex.solution for ex in examples if ex.solution][:sample]
    lengths = [len(ids) + 1 for ids in tokenizer(solutions, add_special_tokens=False)["input_ids"]] if solutions else []
    over = [n for n in lengths if n > gen_length]
    if not over:
        return None
    return (f"{len(over)} of {len(lengths)} reference solutions take more than gen_length {gen_length} tokens "
            f"with their EOS (up to {max(over)}): raise gen_length")
