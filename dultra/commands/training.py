"""`dultra pretrain | warmstart | train`: the training stages, each configured by one section
of a YAML file plus flags (every option: `dultra train --help`).

    dultra pretrain  --config configs/tiny.yaml
    dultra warmstart --config configs/tiny.yaml
    dultra train     --config configs/tiny.yaml [--output-dir DIR --resume true]
    accelerate launch --config_file configs/accelerate/ddp.yaml -m dultra.cli train --config configs/llada-8b-math.yaml
"""

from __future__ import annotations

import argparse
import importlib

from dultra.configio import add_config_flags, load_config

# name -> (help, module, config class, entry point)
STAGES = {
    "pretrain": ("masked-diffusion training of a base model (the tiny default's)",
                 "dultra.rl.pretrain", "PretrainConfig", "pretrain"),
    "warmstart": ("train the planner head to imitate the Fast-dLLM factor rule",
                  "dultra.rl.warmstart", "WarmstartConfig", "warmstart"),
    "train": ("GRPO training of model and planner", "dultra.rl.trainer", "TrainConfig", "train"),
}


def register(subparsers) -> None:
    for name, (help, module, cls, _) in STAGES.items():
        config_cls = getattr(importlib.import_module(module), cls)
        p = subparsers.add_parser(name, help=help, description=f"{help}. Settings come from the `{name}` "
                                  "section of --config, then from the flags below.")
        p.add_argument("--config", help=f"YAML file with a `{name}` section (e.g. configs/tiny.yaml)")
        add_config_flags(p, config_cls)
        p.set_defaults(run=run, stage=name)


def run(args: argparse.Namespace) -> int:
    _, module, cls, entry = STAGES[args.stage]
    mod = importlib.import_module(module)
    config = load_config(getattr(mod, cls), args.config, section=args.stage, flags=args)
    print(getattr(mod, entry)(config))
    return 0
