"""Reward-test helpers: a tiny Llama teacher built from a config, and a test-only
CodeRunner that really executes Python, one subprocess per test.

The runner is NOT a sandbox: no isolation beyond a separate interpreter (`python -I`) in a temporary
directory and a timeout. It exists so the code reward is tested against real execution
with the same semantics the sandbox service implements (dultra.rewards.runner).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from dultra.data import CodeTest
from dultra.rewards import SandboxUnavailable


def normalize_output(text: str) -> str:
    """Trailing whitespace of each line and trailing blank lines do not matter."""
    return "\n".join(line.rstrip() for line in text.rstrip().splitlines())


class SubprocessRunner:
    def __init__(self, timeout_s: float = 10.0) -> None:
        self.timeout_s = timeout_s
        self.calls = 0  # run_tests calls, so tests can check what was (not) executed

    def _run(self, script: str, stdin: str = "") -> subprocess.CompletedProcess | None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "main.py"
            path.write_text(script)
            try:
                return subprocess.run([sys.executable, "-I", str(path)], input=stdin, cwd=tmp,
                                      capture_output=True, text=True, timeout=self.timeout_s)
            except subprocess.TimeoutExpired:
                return None

    def _passes(self, code: str, test: CodeTest) -> bool:
        if test.kind == "assert":
            done = self._run(f"{code}\n\n{test.source}")
            return done is not None and done.returncode == 0
        done = self._run(code, test.stdin)
        return (done is not None and done.returncode == 0
                and normalize_output(done.stdout) == normalize_output(test.stdout))

    def run_tests(self, code: str, tests: Sequence[CodeTest]) -> tuple[int, int]:
        self.calls += 1
        return sum(self._passes(code, t) for t in tests), len(tests)


class DownRunner:
    """A runner whose service is unreachable."""

    def run_tests(self, code: str, tests: Sequence[CodeTest]) -> tuple[int, int]:
        raise SandboxUnavailable("connection refused")


def tiny_llama(vocab_size: int, seed: int = 0) -> LlamaForCausalLM:
    """A 2-layer causal LM teacher (random weights) for any tokenizer's vocabulary."""
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    return LlamaForCausalLM(config).eval()
