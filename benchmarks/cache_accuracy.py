"""What a KV cache costs in accuracy: cached against uncached greedy decoding of a trained checkpoint.

    python benchmarks/cache_accuracy.py --model runs/tiny/grpo/final --eval-size 1000 \\
        --out benchmarks/results/cache_accuracy_tiny.json

For every strategy and block length, decodes the same held-out synthetic-math problems
without a cache and with the prefix and dual caches (dultra/model/kv_cache.py), then
prints accuracy, mean NFE, the share of completions identical to the uncached ones and the
decode time relative to uncached (measured side by side in this run). `runs/tiny/grpo/final`
is what `python benchmarks/grpo_tiny.py` (or `make demo`) trains.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path

import torch

# The GPU machine runs these scripts from a copied tree where dultra is not installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dultra.data import load_task  # noqa: E402
from dultra.decoding import DecodeConfig, parse_strategy  # noqa: E402
from dultra.decoding.generate import CACHES  # noqa: E402
from dultra.eval.accuracy import evaluate  # noqa: E402
from dultra.model.loading import load, resolve  # noqa: E402

STRATEGIES = ("threshold:tau=0.9", "planner:factor=1.0", "factor:factor=1.0", "entropy:gamma=0.1",
              "low-confidence:steps={gen}")


def compare(model, tokenizer, examples, spec: str, gen: int, block: int, batch_size: int) -> list[dict]:
    """One row per cache setting; agreement is with the uncached completions."""
    strategy = parse_strategy(spec.format(gen=gen))
    rows, reference = [], None
    for cache in CACHES:  # "none" first: the reference
        decode = DecodeConfig(gen_length=gen, block_length=block, cache=cache)
        start = time.perf_counter()
        result = evaluate(model, tokenizer, examples, strategy, decode, batch_size=batch_size)
        seconds = time.perf_counter() - start
        if reference is None:
            reference = result
        same = sum(a == b for a, b in zip(result.completions, reference.completions)) / len(examples)
        rows.append({
            "strategy": strategy.spec(), "block_length": block, "cache": cache,
            "accuracy": result.accuracy, "mean_nfe": result.mean_nfe, "identical_to_uncached": same,
            "seconds": seconds,
        })
    for row in rows:
        row["time_vs_uncached"] = row["seconds"] / rows[0]["seconds"]
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="runs/tiny/grpo/final", help="a synthetic-math checkpoint with a planner head")
    p.add_argument("--eval-size", type=int, default=1000, help="held-out problems")
    p.add_argument("--gen-length", type=int, default=16)
    p.add_argument("--block-lengths", type=int, nargs="+", default=[16, 8, 4])
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--out", type=Path, help="write the rows as JSON here")
    args = p.parse_args()
    path = resolve(args.model)  # a clear error when the checkpoint is missing
    model, tokenizer = load(path)
    model.eval()
    examples = load_task("synthetic-math", "test", limit=args.eval_size)
    print(f"{'strategy':26s} {'block':>5s} {'cache':>6s} {'accuracy':>8s} {'NFE':>6s} {'identical':>9s} {'time':>6s}")
    rows = []
    for block in args.block_lengths:
        for spec in STRATEGIES:
            for row in compare(model, tokenizer, examples, spec, args.gen_length, block, args.batch_size):
                rows.append(row)
                print(f"{row['strategy']:26s} {block:5d} {row['cache']:>6s} {100 * row['accuracy']:7.1f}% "
                      f"{row['mean_nfe']:6.2f} {100 * row['identical_to_uncached']:8.1f}% "
                      f"{row['time_vs_uncached']:5.2f}x", flush=True)
    if args.out:
        meta = {"command": " ".join(sys.argv), "model": str(args.model), "eval_size": len(examples),
                "gen_length": args.gen_length, "device": platform.processor() or platform.machine(),
                "threads": torch.get_num_threads(), "torch": torch.__version__,
                "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(meta | {"rows": rows}, indent=2))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
