"""`dultra compare`: decode one prompt under every strategy; print each one's completion, NFE and TPF.

    dultra compare --model tiny --prompt "Compute ||||5 - 3| - 9| - 4| - 7|." --gen-length 64 --block-length 16
    dultra compare --model ./LLaDA-8B-Instruct --prompt "..." --gen-length 256 --block-length 32 --device cuda

A quick look at a checkpoint; `make demo` runs the whole pipeline.
"""

from __future__ import annotations

import argparse
import sys
import time

from dultra.commands.generate import add_device_arguments, device_and_dtype

STRATEGIES = (
    "planner:factor=1.0", "planner:factor=2.0", "planner-sample", "threshold:tau=0.9",
    "threshold:tau=0.5", "factor:factor=1.0", "low-confidence:steps={gen}", "entropy:gamma=0.1",
)


def register(subparsers) -> None:
    p = subparsers.add_parser("compare", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny", help="`tiny`, a checkpoint directory or a Hub id")
    p.add_argument("--prompt", default="Compute ||||5 - 3| - 9| - 4| - 7|.", help="the user message")
    p.add_argument("--gen-length", type=int, help="completion length (default: as a dultra-trained checkpoint "
                                                  "was trained, else 64)")
    p.add_argument("--block-length", type=int, help="block size (default: as a dultra-trained checkpoint "
                                                    "was trained, else 16)")
    add_device_arguments(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from dultra.decoding import DecodeConfig, generate, parse_strategy
    from dultra.decoding.generate import check_given_lengths, check_layout, lengths_for
    from dultra.model.loading import (
        load_model,
        load_tokenizer,
        read_config,
        resolve,
        stop_token_ids,
        untrained_planner,
    )
    from dultra.model.tokenizer import encode_prompts

    # Everything that can be checked without the weights is checked before loading them, as in generate.
    check_given_lengths(args.gen_length, args.block_length)
    path = resolve(args.model)
    gen, block, note = lengths_for(path, args.gen_length, args.block_length, defaults=(64, 16))
    model_config = read_config(path)
    tokenizer = load_tokenizer(path, model_config.mask_token_id)
    config = DecodeConfig(gen_length=gen, block_length=block, seed=0,
                          eos_ids=stop_token_ids(path, tokenizer, model_config))  # as generate and eval stop
    strategies = [parse_strategy(spec.format(gen=gen)) for spec in STRATEGIES]
    if not model_config.has_planner:  # a base model (LLaDA-8B-Instruct): the planner rows need a head
        strategies = [s for s in strategies if not s.uses_planner]
        print(f"dultra: {args.model} has no planner head: its strategies are left out", file=sys.stderr)
    elif untrained_planner(path):
        print(f"dultra: warning: the planner head of {path} is untrained (a pretraining checkpoint): its rows "
              "are noise until `dultra warmstart`", file=sys.stderr)
    ids, mask = encode_prompts(tokenizer, [args.prompt], pad_token_id=model_config.pad_token_id)
    for strategy in strategies:
        check_layout(model_config, ids.shape[1], config, strategy)
    device, dtype = device_and_dtype(args)
    model = load_model(path, dtype=dtype, device=device)
    ids, mask = ids.to(device), mask.to(device)
    print(f"{args.model} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, {device}), "
          f"prompt {args.prompt!r}, gen {gen}, block {block}{f' ({note})' if note else ''}\n")
    print(f"{'strategy':<26}{'NFE':>5}{'TPF':>7}{'ms':>8}  completion")
    for strategy in strategies:
        start = time.perf_counter()
        out = generate(model, ids, mask, strategy, config)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        ms = (time.perf_counter() - start) * 1e3
        text = out.texts(tokenizer)[0]
        print(f"{strategy.spec():<26}{int(out.nfe[0]):>5}{float(out.tpf[0]):>7.2f}{ms:>8.0f}  {text[:48]!r}")
    return 0
