"""Cost of scoring math completions on CPU (math-verify parses both sides of every pair).

    .venv/bin/python benchmarks/bench_math_reward.py [--n 512]

GRPO scores B * G completions per step (12 per prompt in the reference), on the trainer's
CPU while the GPU waits, so this must stay far below a decoding step. Reports the mean
milliseconds per completion for GSM8K reference solutions, wrong answers and completions
without an answer, and for the synthetic math task.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from dultra.data import generate, load_task
from dultra.rewards import format_reward, math_correct_reward

GSM8K = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "gsm8k"


def per_completion_ms(completions: list[str], answers: list[str]) -> float:
    start = time.perf_counter()
    math_correct_reward(completions, answer=answers)
    format_reward(completions, kind="math")
    return (time.perf_counter() - start) * 1e3 / len(completions)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=512, help="completions per case")
    args = parser.parse_args()
    gsm = load_task("gsm8k", "test", path=GSM8K, limit=args.n)
    answers = [e.answer for e in gsm]
    synth = generate("synthetic-math", "test", n=args.n)
    cases = {
        "gsm8k reference solution": ([e.solution for e in gsm], answers),
        "gsm8k wrong boxed answer": ([f"\\boxed{{{int(a) + 1}}}" for a in answers], answers),
        "gsm8k no answer": ([e.solution.rsplit("\n", 1)[0] for e in gsm], answers),
        "synthetic-math target": ([e.solution for e in synth], [e.answer for e in synth]),
    }
    print(f"{'case':<28}{'ms/completion':>14}   (n={args.n})")
    for name, (completions, refs) in cases.items():
        print(f"{name:<28}{per_completion_ms(completions, refs):>14.2f}")


if __name__ == "__main__":
    main()
