"""How well a synthetic-math checkpoint decodes in a fixed unmasking order (issue 4 diagnostics).

    python benchmarks/unmask_orders.py --model runs/tiny/grpo/final --eval-size 1000 [--data test.jsonl]

A completion "2 then 3, 8 and 0.\n#### 0" has its running values v1..v4 at block positions 0, 3,
6, 9 and the final answer at 14 (single digits, so the layout is fixed). Each order below
reveals, step by step, everything except the positions it still holds back; the last step
reveals the rest. Its accuracy at a fixed NFE is the most that order allows, so it shows
how many sequential steps the model needs: a planner can only choose among such orders,
per problem, using the model's state. Prints a table; nothing is written.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

# The GPU machine runs these scripts from a copied tree where dultra is not installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dultra.data.mixture import load_examples  # noqa: E402
from dultra.decoding import DecodeConfig, rules  # noqa: E402
from dultra.decoding.strategies import BlockView, Strategy  # noqa: E402
from dultra.eval.accuracy import evaluate  # noqa: E402
from dultra.model.loading import load  # noqa: E402

V1, V2, V3, V4, ANSWER = 0, 3, 6, 9, 14
# name -> positions held back at step 0, 1, ... (the step after the list reveals the rest)
ORDERS: dict[str, list[list[int]]] = {
    "all at once": [],
    "v1 | rest": [[V2, V3, V4, ANSWER]],
    "v1 v2 | rest": [[V3, V4, ANSWER]],
    "v1 v2 v3 | rest": [[V4, ANSWER]],
    "v1..v4 | answer": [[ANSWER]],
    "v1 v2 | v3 v4 | answer": [[V3, V4, ANSWER], [ANSWER]],
    "v1 | v2 | v3 | v4 answer": [[V2, V3, V4, ANSWER], [V3, V4, ANSWER], [V4, ANSWER]],
    "one value per step": [[V2, V3, V4, ANSWER], [V3, V4, ANSWER], [V4, ANSWER], [ANSWER]],
}


@dataclass(frozen=True)
class FixedOrder(Strategy):
    """Reveal every mask except those `ORDERS[order]` holds back at this step of the block."""

    order: str = "all at once"
    name: ClassVar[str] = "fixed-order"

    def select(self, view: BlockView) -> torch.Tensor:
        held_back = ORDERS[self.order]
        # (steps + 1, N): row s is what step s holds back; the last row (all False) is every later step.
        table = torch.zeros(len(held_back) + 1, view.candidates.shape[1], dtype=torch.bool)
        for step, positions in enumerate(held_back):
            table[step, positions] = True
        held = table.to(view.candidates.device)[view.block_step.clamp(max=len(held_back))]
        return rules.ensure_one(view.candidates & ~held, view.confidence, view.candidates)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="runs/tiny/grpo/final", help="a synthetic-math checkpoint")
    p.add_argument("--eval-size", type=int, default=1000, help="held-out problems")
    p.add_argument("--data", default=None, help="a JSONL file of test examples (default: generated)")
    p.add_argument("--batch-size", type=int, default=100)
    args = p.parse_args()
    model, tokenizer = load(args.model)
    model.eval()
    examples = load_examples("synthetic-math", args.data, "test", limit=args.eval_size)[: args.eval_size]
    decode = DecodeConfig(gen_length=16, block_length=16)
    print(f"{'order':28s} {'accuracy':>8s} {'NFE':>5s}")
    for order in ORDERS:
        result = evaluate(model, tokenizer, examples, FixedOrder(order), decode, batch_size=args.batch_size)
        print(f"{order:28s} {100 * result.accuracy:7.1f}% {result.mean_nfe:5.2f}", flush=True)


if __name__ == "__main__":
    main()
