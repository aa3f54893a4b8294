"""`dultra pretrain | warmstart | train`: the training stages, each configured by one section
of a YAML file plus flags (every option: `dultra train --help`).

    dultra pretrain  --config configs/tiny.yaml
    dultra warmstart --config configs/tiny.yaml
    dultra train     --config configs/tiny.yaml [--output-dir DIR --resume true]
    accelerate launch --config_file configs/accelerate/ddp.yaml -m dultra.cli train --config configs/llada-8b-math.yaml
"""

from __future__ import annotations

import argparse

from dultra.configio import add_config_flags, load_config
from dultra.rl.stages import STAGES, config_class, stage


def register(subparsers) -> None:
    for name, about in STAGES.items():
        p = subparsers.add_parser(name, description=f"{about.help}. Settings come from the "
                                  f"`{name}` section of --config, then from the flags below.")
        p.add_argument("--config", help=f"YAML file with a `{name}` section (e.g. configs/tiny.yaml)")
        add_config_flags(p, config_class(name))
        p.set_defaults(run=run, stage=name)


def run(args: argparse.Namespace) -> int:
    # The settings first: a mistake in them is told before torch loads (seconds).
    cfg = load_config(config_class(args.stage), args.config, section=args.stage, flags=args)
    from accelerate import PartialState

    _, entry = stage(args.stage)
    final = entry(cfg)
    if PartialState().is_main_process:  # once, not once per process
        print(final)
    return 0
