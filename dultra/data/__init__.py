"""Tasks (GSM8K, MATH500, HumanEval, MBPP, APPS, synthetic) as typed examples, and their prompts.

    from dultra.data import load_task, encode_examples
    examples = load_task("gsm8k", "test", path="../shared/data/gsm8k", limit=64)
    input_ids, attention_mask = encode_examples(tokenizer, examples)
"""

from dultra.data.answers import extract_answer, extract_boxed, extract_code, extract_hash
from dultra.data.example import CodeTest, Example, read_examples, write_examples
from dultra.data.prompts import encode_examples, render_prompts
from dultra.data.registry import TASK_NAMES, TASKS, load_task, task_kind
from dultra.data.synthetic import SyntheticConfig, generate

__all__ = [
    "TASKS", "TASK_NAMES", "CodeTest", "Example", "SyntheticConfig", "encode_examples",
    "extract_answer", "extract_boxed", "extract_code", "extract_hash", "generate", "load_task",
    "read_examples", "render_prompts", "task_kind", "write_examples",
]
