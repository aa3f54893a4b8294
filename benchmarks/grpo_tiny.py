"""The embedded-default demonstration (issue 4): train the tiny model end to end on this CPU,
then compare the GRPO-trained planner with threshold decoding and the warm-started planner.

    python benchmarks/grpo_tiny.py                              # the three stages, then the evaluation
    python benchmarks/grpo_tiny.py --reuse pretrain,warmstart   # keep those stages' finished checkpoints
    python benchmarks/grpo_tiny.py --steps-scale 0.5 --workdir runs/tiny-half --out grpo_tiny_half

The stages are those of `dultra pretrain|warmstart|train --config configs/tiny.yaml`, run in
this process with the config's settings (`--steps-scale` shortens every stage; `--workdir`
moves their outputs and re-chains each stage's `model` onto the previous one's).

Evaluation: the first `--eval-size` problems of the held-out split of synthetic-math (a hash
of the prompt puts a problem in exactly one split, so none was trained on), greedy decoding
(temperature 0), the gen/block length of the `train` section, batches of `--batch-size`.
Every method is decoded on the same problems by dultra.decoding.generate, which counts NFE
as the forward passes in which a problem still had masks (no step reveals nothing).

Targets (issue 4), checked by `check_targets`:
  1. the GRPO planner's accuracy >= that of the best threshold setting of the base (highest
     accuracy, ties to the fewer NFE), with at most half its mean NFE;
  2. at least 30% fewer mean NFE than the warm-started planner, at equal or better accuracy.
Results go to benchmarks/results/<out>.md and .json.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dultra.configio import config_dict, load_config  # noqa: E402
from dultra.data import load_task  # noqa: E402
from dultra.decoding import DecodeConfig, parse_strategy  # noqa: E402
from dultra.eval.accuracy import evaluate  # noqa: E402
from dultra.model.loading import load  # noqa: E402
from dultra.rl.pretrain import PretrainConfig, pretrain  # noqa: E402
from dultra.rl.trainer import TrainConfig, train  # noqa: E402
from dultra.rl.warmstart import WarmstartConfig, warmstart  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STAGES = {"pretrain": (PretrainConfig, pretrain), "warmstart": (WarmstartConfig, warmstart),
          "train": (TrainConfig, train)}
# Base-model references: one token per step, then Fast-dLLM thresholds from near 1 down.
BASE_STRATEGIES = ("low-confidence:steps={gen}", "threshold:tau=0.99", "threshold:tau=0.95", "threshold:tau=0.9",
                   "threshold:tau=0.8", "threshold:tau=0.7", "threshold:tau=0.5", "threshold:tau=0.3")
WARM_STRATEGIES = ("planner:factor=1.0",)
# factor 1.0 is the target's setting (fixed before any run); planner-sample is the policy
# GRPO optimised (tokens still greedy, the seed fixed); threshold decoding of the
# GRPO-trained model shows how much of the gain comes from the jointly trained base.
GRPO_STRATEGIES = ("planner:factor=1.0", "planner-sample", "threshold:tau=0.9", "threshold:tau=0.7")
TARGET_SPEC = "planner:factor=1.0"


@dataclass
class Row:
    """One (model, strategy) evaluation."""

    model: str  # "base" | "warm-start" | "grpo"
    strategy: str
    accuracy: float  # fraction correct
    nfe: float  # mean forward passes per problem
    tpf: float  # mean tokens (before EOS) per forward pass
    seconds: float  # wall time of the evaluation


def stage_configs(config: Path, workdir: Path | None, steps_scale: float) -> dict[str, object]:
    """The three stage configs, optionally moved to `workdir` and with scaled step counts."""
    configs = {name: load_config(cls, config, section=name) for name, (cls, _) in STAGES.items()}
    previous = None
    for name, cfg in configs.items():
        changes = {"steps": max(1, round(cfg.steps * steps_scale))}
        if workdir is not None:
            changes["output_dir"] = str(workdir / name)
            if previous is not None:
                changes["model"] = str(Path(previous.output_dir) / "final")
        configs[name] = previous = dataclasses.replace(cfg, **changes)
    return configs


def run_stages(configs: dict[str, object], reuse: set[str]) -> dict[str, float]:
    """Run every stage not in `reuse` (those must have a final checkpoint); returns seconds per stage."""
    seconds = {}
    for name, cfg in configs.items():
        final = Path(cfg.output_dir) / "final"
        if name in reuse:
            if not (final / "config.json").exists():
                raise SystemExit(f"--reuse {name}: no finished checkpoint at {final}")
            print(f"{name}: reusing {final}")
            continue
        began = time.perf_counter()
        STAGES[name][1](cfg)
        seconds[name] = time.perf_counter() - began
        print(f"{name}: {seconds[name]:.0f} s -> {final}", flush=True)
    return seconds


def evaluate_models(configs: dict[str, object], eval_size: int, batch_size: int) -> list[Row]:
    """Every method on the same held-out problems, greedy decoding."""
    train_cfg = configs["train"]
    decode = DecodeConfig(gen_length=train_cfg.gen_length, block_length=train_cfg.block_length)
    examples = load_task("synthetic-math", "test", limit=eval_size)
    models = {
        "base": (Path(configs["pretrain"].output_dir) / "final", BASE_STRATEGIES),
        "warm-start": (Path(configs["warmstart"].output_dir) / "final", WARM_STRATEGIES),
        "grpo": (Path(train_cfg.output_dir) / "final", GRPO_STRATEGIES),
    }
    rows = []
    for label, (path, specs) in models.items():
        model, tokenizer = load(path)
        model.eval()
        for spec in specs:
            strategy = parse_strategy(spec.format(gen=decode.gen_length))
            began = time.perf_counter()
            result = evaluate(model, tokenizer, examples, strategy, decode, batch_size=batch_size)
            row = Row(label, strategy.spec(), result.accuracy, result.mean_nfe, result.mean_tpf,
                      time.perf_counter() - began)
            rows.append(row)
            print(f"{label:<11}{row.strategy:<28}acc {row.accuracy:6.1%}  NFE {row.nfe:5.2f}  "
                  f"TPF {row.tpf:4.2f}", flush=True)
    return rows


def ci95(accuracy: float, n: int) -> float:
    """Half-width of the normal-approximation 95% interval of an accuracy measured on n problems."""
    return 1.96 * math.sqrt(accuracy * (1 - accuracy) / n)


def check_targets(rows: list[Row]) -> dict[str, object]:
    """The issue's two targets, from the rows of `evaluate_models` (pure: unit-tested)."""
    thresholds = [r for r in rows if r.model == "base" and r.strategy.startswith("threshold")]
    best = max(thresholds, key=lambda r: (r.accuracy, -r.nfe))
    warm = next(r for r in rows if r.model == "warm-start" and r.strategy == TARGET_SPEC)
    grpo = next(r for r in rows if r.model == "grpo" and r.strategy == TARGET_SPEC)
    vs_best_ok, vs_warm_ok = grpo.accuracy >= best.accuracy, grpo.accuracy >= warm.accuracy
    return {
        "best_threshold": best.strategy,
        "vs_threshold": {"accuracy_ok": vs_best_ok, "nfe_ratio": grpo.nfe / best.nfe,
                         "met": vs_best_ok and grpo.nfe <= 0.5 * best.nfe},
        "vs_warm_start": {"accuracy_ok": vs_warm_ok, "nfe_reduction": 1 - grpo.nfe / warm.nfe,
                          "met": vs_warm_ok and grpo.nfe <= 0.7 * warm.nfe},
    }


def markdown(rows: list[Row], targets: dict[str, object], meta: dict[str, object]) -> str:
    """The results table, the targets and how the run was made."""
    lines = [
        "# Embedded default: GRPO-trained planner vs threshold decoding (benchmarks/grpo_tiny.py)",
        "",
        f"{meta['eval_size']} held-out synthetic-math problems, greedy decoding, gen {meta['gen_length']} / "
        f"block {meta['block_length']}; NFE = forward passes per problem.",
        "",
        "| model | strategy | accuracy (95% CI) | mean NFE | TPF |",
        "|---|---|---:|---:|---:|",
    ]
    n = meta["eval_size"]
    lines += [f"| {r.model} | `{r.strategy}` | {r.accuracy:.1%} ± {ci95(r.accuracy, n):.1%} | {r.nfe:.2f} | "
              f"{r.tpf:.2f} |" for r in rows]
    vt, vw = targets["vs_threshold"], targets["vs_warm_start"]
    lines += [
        "",
        f"- Target 1 (GRPO planner, factor 1.0, vs the best threshold `{targets['best_threshold']}`: accuracy "
        f">= and NFE <= 50%): **{'met' if vt['met'] else 'not met'}** (accuracy "
        f"{'>=' if vt['accuracy_ok'] else '<'}, NFE ratio {vt['nfe_ratio']:.2f}).",
        f"- Target 2 (vs the warm-started planner: accuracy >= and >= 30% fewer NFE): "
        f"**{'met' if vw['met'] else 'not met'}** (accuracy {'>=' if vw['accuracy_ok'] else '<'}, "
        f"{vw['nfe_reduction']:.0%} fewer NFE).",
        "",
        f"Wall time {meta['total_seconds'] / 60:.1f} min in all: "
        + ", ".join(f"{k} {v / 60:.1f} min" for k, v in meta["stage_seconds"].items())
        + f", evaluation {meta['eval_seconds'] / 60:.1f} min. Machine: {meta['machine']}.",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, default=ROOT / "configs" / "tiny.yaml")
    p.add_argument("--reuse", default="", help="comma-separated stages whose finished checkpoint to keep "
                   "(pretrain, warmstart, train, or all)")
    p.add_argument("--workdir", type=Path, help="put the stages' outputs here instead of the config's dirs")
    p.add_argument("--steps-scale", type=float, default=1.0, help="multiply every stage's steps (shorter budgets)")
    p.add_argument("--eval-size", type=int, default=1000, help="held-out problems")
    p.add_argument("--batch-size", type=int, default=100, help="problems decoded together")
    p.add_argument("--out", default="grpo_tiny", help="results file name under benchmarks/results/")
    args = p.parse_args()
    reuse = set(STAGES) if args.reuse == "all" else {s.strip() for s in args.reuse.split(",") if s.strip()}
    if reuse - set(STAGES):
        raise SystemExit(f"--reuse: unknown stages {sorted(reuse - set(STAGES))}")

    began = time.perf_counter()
    configs = stage_configs(args.config, args.workdir, args.steps_scale)
    stage_seconds = run_stages(configs, reuse)
    eval_began = time.perf_counter()
    rows = evaluate_models(configs, args.eval_size, args.batch_size)
    eval_seconds = time.perf_counter() - eval_began
    targets = check_targets(rows)
    meta = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores, torch {torch.__version__}, "
                   f"{torch.get_num_threads()} threads",
        "eval_size": args.eval_size, "gen_length": configs["train"].gen_length,
        "block_length": configs["train"].block_length, "steps_scale": args.steps_scale,
        "reused": sorted(reuse), "stage_seconds": stage_seconds, "eval_seconds": eval_seconds,
        "total_seconds": time.perf_counter() - began,
        "configs": {name: config_dict(cfg) for name, cfg in configs.items()},
    }
    text = markdown(rows, targets, meta)
    print("\n" + text)
    out = ROOT / "benchmarks" / "results" / args.out
    out.with_suffix(".md").write_text(text)
    out.with_suffix(".json").write_text(json.dumps(
        {"rows": [dataclasses.asdict(r) for r in rows], "targets": targets, **meta}, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
