"""`dultra generate`: decode one prompt with any strategy and report NFE / TPF.

    dultra generate --model tiny --prompt "Compute ||||5 - 3| - 9| - 4| - 7|." --strategy threshold --threshold 0.9 --json
    dultra generate --model ./LLaDA-8B-Instruct --prompt "..." --strategy planner --factor 1.0
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dultra.decoding.strategies import Strategy

# The --strategy and --cache choices, written out so that `--help` and a mistyped option do
# not wait seconds for torch, which the decoding package imports (tests/unit/test_cli.py
# checks them against its STRATEGIES and CACHES). The rest is imported when a command runs.
STRATEGY_NAMES = ("planner", "planner-sample", "threshold", "factor", "low-confidence", "entropy")
CACHE_KINDS = ("none", "prefix", "dual")


def register(subparsers) -> None:
    p = subparsers.add_parser("generate", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny",
                   help="`tiny` (built offline, untrained: it writes noise), a checkpoint directory (LLaDA, dUltra, "
                        "or ours) or a Hugging Face Hub id (GSAI-ML/LLaDA-8B-Instruct, sengi/dUltra-math)")
    p.add_argument("--prompt", required=True, help="the user message")
    p.add_argument("--strategy", default="planner",
                   choices=STRATEGY_NAMES,
                   help="unmasking strategy (default: planner, the dUltra planner-greedy rule)")
    p.add_argument("--gen-length", type=int, default=None,
                   help="completion length in tokens (default: as dultra trained the checkpoint, else 256)")
    p.add_argument("--block-length", type=int, default=None,
                   help="semi-autoregressive block size (default: as dultra trained the checkpoint, else 32)")
    p.add_argument("--threshold", type=float, help="threshold: confidence tau (default 0.9)")
    p.add_argument("--factor", type=float, help="planner / planner-sample / factor: parallelism factor (default 1.0)")
    p.add_argument("--steps", type=int, help="low-confidence: total steps (default gen_length)")
    p.add_argument("--gamma", type=float, help="entropy: entropy budget per step (default 0.1)")
    p.add_argument("--temperature", type=float, default=0.0, help="token sampling temperature (default 0: argmax)")
    p.add_argument("--seed", type=int, default=0, help="seed for sampling (default 0)")
    p.add_argument("--no-chat-template", action="store_true", help="feed the prompt raw, without the chat template")
    p.add_argument("--early-stop", action="store_true",
                   help="end once an EOS is decoded and all before it is revealed (default: decode every position, as the reference)")
    p.add_argument("--cache", default="none", choices=CACHE_KINDS,
                   help="reuse keys/values within a block (Fast-dLLM): prefix recomputes the block and what "
                        "follows, dual only the block; faster, approximate (default: none, exact)")
    add_device_arguments(p)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.set_defaults(run=run)


def add_device_arguments(p: argparse.ArgumentParser) -> None:
    """--device and --dtype, read by `device_and_dtype`."""
    p.add_argument("--device", type=device_arg, default=None, help="torch device (default: cuda when there is a GPU)")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                   help="weights dtype (default: bfloat16 on GPU, float32 on CPU)")


def device_arg(name: str) -> str:
    """A torch device this machine has (argparse type)."""
    from dultra.errors import ConfigError
    from dultra.model.device import check_device

    try:
        check_device(name)
    except ConfigError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return name


def device_and_dtype(args: argparse.Namespace):
    """(device name, torch dtype) of --device and --dtype, with their defaults."""
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    return device, getattr(torch, args.dtype) if args.dtype else (
        torch.bfloat16 if device.startswith("cuda") else torch.float32)


# Each strategy option: the setting it gives, and the strategies that have that setting.
STRATEGY_OPTIONS = {
    "threshold": ("tau", ("threshold",)), "factor": ("factor", ("planner", "planner-sample", "factor")),
    "steps": ("steps", ("low-confidence",)), "gamma": ("gamma", ("entropy",)),
}


def strategy_from_args(args: argparse.Namespace) -> Strategy:
    """The strategy with its option or its default; an option of another strategy is noted as ignored."""
    from dultra.decoding.strategies import STRATEGIES

    given = {}  # unset: the strategy's default
    for option, (setting, strategies) in STRATEGY_OPTIONS.items():
        if (value := getattr(args, option)) is None:
            continue
        if args.strategy in strategies:
            given[setting] = value
        else:
            print(f"dultra: note: --{option} applies to --strategy {' / '.join(strategies)}; ignored",
                  file=sys.stderr)
    return STRATEGIES[args.strategy](**given)


def decode_lengths(path, args: argparse.Namespace) -> None:
    """Unset --gen-length / --block-length filled in (lengths_for)."""
    from dultra.decoding.generate import lengths_for

    args.gen_length, args.block_length, note = lengths_for(path, args.gen_length, args.block_length)
    if note:
        print(f"dultra: {note}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    import torch

    from dultra.decoding import DecodeConfig, generate
    from dultra.decoding.generate import (
        check_given_lengths,
        check_layout,
        check_temperature,
    )
    from dultra.model.loading import (
        load_model,
        load_tokenizer,
        read_config,
        resolve,
        stop_token_ids,
        untrained_planner,
    )
    from dultra.model.tokenizer import encode_prompts

    device, dtype = device_and_dtype(args)
    # Everything that can be checked without the weights is checked before loading them, and
    # what needs no checkpoint before looking it up (a Hub id downloads it).
    check_given_lengths(args.gen_length, args.block_length)
    check_temperature(args.temperature)
    strategy = strategy_from_args(args)
    path = resolve(args.model)
    decode_lengths(path, args)
    if args.strategy == "low-confidence" and args.steps is None:
        strategy = dataclasses.replace(strategy, steps=args.gen_length)  # one token per step
    if strategy.uses_planner and untrained_planner(path):
        print(f"dultra: warning: the planner head of {path} is untrained (a pretraining checkpoint): "
              "run `dultra warmstart`, or use another strategy", file=sys.stderr)
    model_config = read_config(path)
    tokenizer = load_tokenizer(path, model_config.mask_token_id)
    config = DecodeConfig(
        gen_length=args.gen_length, block_length=args.block_length, temperature=args.temperature,
        early_stop=args.early_stop, seed=args.seed, cache=args.cache, eos_ids=stop_token_ids(path, tokenizer, model_config),
    )
    ids, mask = encode_prompts(tokenizer, [args.prompt], chat_template=not args.no_chat_template,
                               pad_token_id=model_config.pad_token_id)
    check_layout(model_config, ids.shape[1], config, strategy)
    model = load_model(path, dtype=dtype, device=device)
    ids, mask = ids.to(device), mask.to(device)
    start = time.perf_counter()
    out = generate(model, ids, mask, strategy, config)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    n = int(out.lengths[0])
    token_ids = out.completion[0, : min(n + 1, args.gen_length)].tolist()
    result = {
        "text": out.texts(tokenizer)[0],
        "token_ids": token_ids,
        "nfe": int(out.nfe[0]),
        "tpf": round(float(out.tpf[0]), 4),
        "seconds": round(seconds, 4),
        "strategy": strategy.spec(),
        "gen_length": args.gen_length,
        "block_length": args.block_length,
        "cache": args.cache,
        "model": str(args.model),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(result["text"])
        print(f"[{result['strategy']}] NFE {result['nfe']}  TPF {result['tpf']}  {seconds:.2f}s", file=sys.stderr)
    return 0
