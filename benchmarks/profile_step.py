"""Where a compiled decode step's GPU time goes: kernel table of a few steps under torch.profiler.

    python benchmarks/profile_step.py --strategies planner:factor=1.0 threshold:tau=0.9 --out DIR

LLaDA-8B shape, random weights, batch 1, prompt 128 + gen 256, block 32, compiled with
CUDA graphs (as benchmarks/decode_speed.py --compile). Prints per strategy the device time
and host time per step and the kernels that take the most device time.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

# The GPU machine runs these scripts from a copied tree where dultra is not installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.decode_speed import build  # noqa: E402
from dultra.decoding import DecodeConfig, generate, parse_strategy  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--strategies", nargs="+", default=["planner:factor=1.0", "threshold:tau=0.9"])
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--out", type=Path, default=Path("."))
    args = p.parse_args()
    model = build("llada-8b", "cuda").fuse_projections()
    prompt = torch.randint(0, 126000, (1, 128), device="cuda")
    for spec in args.strategies:
        config = DecodeConfig(gen_length=256, block_length=32, seed=0, max_steps=args.steps, compile=True)
        strategy = parse_strategy(spec)
        for _ in range(2):
            generate(model, prompt, None, strategy, config)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            generate(model, prompt, None, strategy, config)
            torch.cuda.synchronize()
        table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=25, max_name_column_width=70)
        name = spec.replace(":", "_").replace("=", "")
        prof.export_chrome_trace(str(args.out / f"trace_{name}.json"))
        (args.out / f"kernels_{name}.txt").write_text(table)
        events = prof.key_averages()
        device_us = sum(e.self_device_time_total for e in events)
        print(f"\n== {spec}: device time {device_us / args.steps / 1e3:.2f} ms/step over {args.steps} steps")
        print(table[:3500])


if __name__ == "__main__":
    main()
