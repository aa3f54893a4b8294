r"""`dultra eval`: accuracy, NFE, TPF, speed and AUP of several strategies, with a report.

    dultra eval --model PATH --task gsm8k --data ../shared/data/gsm8k --limit 200 \
        --strategies "planner:factor=1.0,planner:factor=1.5,threshold:tau=0.9,threshold:tau=0.7" \
        --output-dir runs/eval-gsm8k
"""

from __future__ import annotations

import argparse

from dultra.configio import add_config_flags, load_config
from dultra.eval.config import EvalConfig


def register(subparsers) -> None:
    p = subparsers.add_parser("eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML file with an `eval` section")
    add_config_flags(p, EvalConfig)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # The settings first: a mistake in them is told before torch loads (seconds).
    cfg = load_config(EvalConfig, args.config, section="eval", flags=args)
    from dultra.eval.run import run_evaluation

    result = run_evaluation(cfg)
    print(f"{'strategy':<26}{'acc %':>7}{'NFE':>8}{'TPF':>7}{'tok/s':>9}  (batch {result['rows'][0]['batch_size']})")
    for r in result["rows"]:
        print(f"{r['strategy']:<26}{r['accuracy']:>7.1f}{r['nfe']:>8.1f}{r['tpf']:>7.2f}{r['tokens_per_s']:>9.1f}")
    for method, v in result["methods"].items():
        print(f"AUP {method}: {v['aup']:.1f}")
    print(f"report: {result['paths']['html']}")
    return 0
