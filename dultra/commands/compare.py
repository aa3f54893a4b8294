"""`dultra compare`: decode one prompt under every strategy; print each one's completion, NFE and TPF.

    dultra compare --model tiny --prompt "Compute 6 - 4 + 1 + 5 - 8." --gen-length 64 --block-length 16
    dultra compare --model ./LLaDA-8B-Instruct --prompt "..." --gen-length 256 --block-length 32

A quick look at a checkpoint; `make demo` runs the whole pipeline.
"""

from __future__ import annotations

import argparse
import time

from dultra.decoding import DecodeConfig, generate, parse_strategy
from dultra.decoding.generate import check_settings
from dultra.model.loading import load
from dultra.model.tokenizer import encode_prompts

STRATEGIES = (
    "planner:factor=1.0", "planner:factor=2.0", "planner-sample", "threshold:tau=0.9",
    "threshold:tau=0.5", "factor:factor=1.0", "low-confidence:steps={gen}", "entropy:gamma=0.1",
)


def register(subparsers) -> None:
    p = subparsers.add_parser("compare", help="decode one prompt under every strategy", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny", help="`tiny`, a checkpoint directory or a Hub id")
    p.add_argument("--prompt", default="Compute 6 - 4 + 1 + 5 - 8.", help="the user message")
    p.add_argument("--gen-length", type=int, default=64, help="completion length (default 64)")
    p.add_argument("--block-length", type=int, default=16, help="block size (default 16)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    config = DecodeConfig(gen_length=args.gen_length, block_length=args.block_length, seed=0)
    strategies = [parse_strategy(spec.format(gen=args.gen_length)) for spec in STRATEGIES]
    for strategy in strategies:  # before the table starts
        check_settings(config, strategy)
    model, tokenizer = load(args.model)
    ids, mask = encode_prompts(tokenizer, [args.prompt])
    print(f"{args.model} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters), "
          f"prompt {args.prompt!r}, gen {args.gen_length}, block {args.block_length}\n")
    print(f"{'strategy':<26}{'NFE':>5}{'TPF':>7}{'ms':>8}  completion")
    for strategy in strategies:
        start = time.perf_counter()
        out = generate(model, ids, mask, strategy, config)
        ms = (time.perf_counter() - start) * 1e3
        text = out.texts(tokenizer)[0].replace("\n", "\\n")
        print(f"{strategy.spec():<26}{int(out.nfe[0]):>5}{float(out.tpf[0]):>7.2f}{ms:>8.0f}  {text[:48]!r}")
    return 0
