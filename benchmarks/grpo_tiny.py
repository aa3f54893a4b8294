"""The embedded-default demonstration (issue 4): train the tiny model end to end on this CPU,
then compare the GRPO-trained planner with threshold decoding and the warm-started planner.

    python benchmarks/grpo_tiny.py                              # the three stages, then the evaluation
    python benchmarks/grpo_tiny.py --reuse pretrain,warmstart   # keep those stages' finished checkpoints
    python benchmarks/grpo_tiny.py --steps-scale 0.5 --workdir runs/tiny-half --out grpo_tiny_half

The stages are those of `dultra pretrain|warmstart|train --config configs/tiny.yaml`, run in
this process with the config's settings (`--steps-scale` shortens every stage; `--workdir`
moves their outputs and re-chains each stage's `model` onto the previous one's).

Evaluation: `--eval-size` test and `--val-size` validation problems, together drawn from the
held-out split of synthetic-math (a hash of the prompt puts a problem in exactly one split,
so none was trained on) and shuffled apart; greedy decoding (temperature 0), the gen/block
length of the `train` section, batches of `--batch-size`. Every method is decoded on the
same problems by dultra.decoding.generate, which counts NFE as the forward passes in which
a problem still had masks (no step reveals nothing).

The planner's `factor` is chosen as a user would tune it, on the validation problems: the
most accurate factor within half the NFE of the base's most accurate threshold setting
there (`choose_planner`). The test problems then check the targets.

Targets (issue 4), checked by `check_targets` on the test problems:
  1. the GRPO planner's accuracy >= that of the best threshold setting of the base (highest
     test accuracy, ties to the fewer NFE), with at most half its mean NFE;
  2. at least 30% fewer mean NFE than the warm-started planner with the same factor, at
     equal or better accuracy.
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
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

# The GPU machine runs these scripts from a copied tree where dultra is not installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dultra.configio import config_dict, load_config  # noqa: E402
from dultra.data import Example, load_task  # noqa: E402
from dultra.decoding import DecodeConfig, parse_strategy  # noqa: E402
from dultra.eval.accuracy import evaluate  # noqa: E402
from dultra.model.loading import load  # noqa: E402
from dultra.rl.stages import STAGES, stage  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# Base-model references: one token per step, then Fast-dLLM thresholds from near 1 down.
BASE_STRATEGIES = ("low-confidence:steps={gen}", "threshold:tau=0.99", "threshold:tau=0.95", "threshold:tau=0.9",
                   "threshold:tau=0.8", "threshold:tau=0.7", "threshold:tau=0.5", "threshold:tau=0.3")
# k = int(sum(factor * p)) drops a token whenever the remaining p are all just below 1 (two
# at 0.999 sum to 1.998: one revealed), so factors a hair above 1 matter as much as larger ones.
PLANNER_STRATEGIES = tuple(f"planner:factor={f}" for f in (1.0, 1.001, 1.01, 1.05))
WARM_STRATEGIES = PLANNER_STRATEGIES
# planner-sample is the policy GRPO optimised (tokens still greedy, the seed fixed); threshold
# decoding of the GRPO-trained model shows how much of the gain comes from the jointly trained base.
GRPO_STRATEGIES = (*PLANNER_STRATEGIES, "planner-sample", "threshold:tau=0.9", "threshold:tau=0.7")


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
    configs = {name: load_config(stage(name)[0], config, section=name) for name in STAGES}
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
        stage(name)[1](cfg)
        seconds[name] = time.perf_counter() - began
        print(f"{name}: {seconds[name]:.0f} s -> {final}", flush=True)
    return seconds


def evaluate_models(configs: dict[str, object], examples: list[Example], batch_size: int,
                    specs_of: dict[str, tuple[str, ...]]) -> list[Row]:
    """The strategies `specs_of[model]` of each model on the same problems, greedy decoding."""
    train_cfg = configs["train"]
    decode = DecodeConfig(gen_length=train_cfg.gen_length, block_length=train_cfg.block_length)
    stage_of = {"base": "pretrain", "warm-start": "warmstart", "grpo": "train"}
    rows = []
    for label, specs in specs_of.items():
        model, tokenizer = load(Path(configs[stage_of[label]].output_dir) / "final")
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


def best_threshold(rows: list[Row]) -> Row:
    """The base's most accurate threshold setting (ties to the fewer NFE)."""
    thresholds = [r for r in rows if r.model == "base" and r.strategy.startswith("threshold")]
    return max(thresholds, key=lambda r: (r.accuracy, -r.nfe))


def choose_planner(val_rows: list[Row]) -> str:
    """On validation rows: the GRPO planner-greedy setting with the highest accuracy within half
    the NFE of the best threshold; the one with the fewest NFE if none fits (pure: unit-tested)."""
    budget = 0.5 * best_threshold(val_rows).nfe
    planners = [r for r in val_rows if r.model == "grpo" and r.strategy.startswith("planner:")]
    within = [r for r in planners if r.nfe <= budget]
    pick = max(within, key=lambda r: (r.accuracy, -r.nfe)) if within else min(planners, key=lambda r: r.nfe)
    return pick.strategy


def check_targets(rows: list[Row], planner: str) -> dict[str, object]:
    """The issue's two targets for the planner setting `planner`, from the rows of
    `evaluate_models` (pure: unit-tested)."""
    best = best_threshold(rows)
    warm = next(r for r in rows if r.model == "warm-start" and r.strategy == planner)
    grpo = next(r for r in rows if r.model == "grpo" and r.strategy == planner)
    vs_best_ok, vs_warm_ok = grpo.accuracy >= best.accuracy, grpo.accuracy >= warm.accuracy
    return {
        "planner": planner,
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
    solved = {(r.model, r.strategy): round(r.accuracy * n) for r in rows}  # exact, where percentages round
    grpo, warm = solved["grpo", targets["planner"]], solved["warm-start", targets["planner"]]
    best = solved["base", targets["best_threshold"]]
    lines += [
        "",
        f"- Target 1 (GRPO `{targets['planner']}`, its factor chosen on {meta['val_size']} validation problems, "
        f"vs the best threshold `{targets['best_threshold']}`: accuracy "
        f">= and NFE <= 50%): **{'met' if vt['met'] else 'not met'}** ({grpo} "
        f"{'>=' if vt['accuracy_ok'] else '<'} {best} of {n} solved, NFE ratio {vt['nfe_ratio']:.2f}).",
        f"- Target 2 (vs the warm-started planner, same factor: accuracy >= and >= 30% fewer NFE): "
        f"**{'met' if vw['met'] else 'not met'}** ({grpo} {'>=' if vw['accuracy_ok'] else '<'} {warm} "
        f"solved, {vw['nfe_reduction']:.0%} fewer NFE).",
        "",
        f"Choosing the factor ({meta['val_size']} validation problems, none of the test problems): "
        + ", ".join(f"{r['model']} `{r['strategy']}` {r['accuracy']:.1%} at {r['nfe']:.2f}"
                    for r in meta["validation"]) + f"; chosen `{targets['planner']}`.",
        "",
        f"Wall time {meta['total_seconds'] / 60:.1f} min in all: "
        + "".join(f"{k} {v / 60:.1f} min, " for k, v in meta["stage_seconds"].items())
        + "".join(f"{k} reused, " for k in meta["reused"])
        + f"evaluation {meta['eval_seconds'] / 60:.1f} min. Machine: {meta['machine']}.",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, default=ROOT / "configs" / "tiny.yaml")
    p.add_argument("--reuse", default="", help="comma-separated stages whose finished checkpoint to keep "
                   "(pretrain, warmstart, train, or all)")
    p.add_argument("--workdir", type=Path, help="put the stages' outputs here instead of the config's dirs")
    p.add_argument("--steps-scale", type=float, default=1.0, help="multiply every stage's steps (shorter budgets)")
    p.add_argument("--eval-size", type=int, default=4000, help="held-out test problems")
    p.add_argument("--val-size", type=int, default=2000, help="other held-out problems that choose the factor")
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
    # Drawn without replacement, later problems are rarer ones: shuffle so both sets are alike.
    held_out = load_task("synthetic-math", "test", limit=args.eval_size + args.val_size)
    random.Random(0).shuffle(held_out)
    test, val = held_out[: args.eval_size], held_out[args.eval_size:]
    print(f"validation ({len(val)} problems): choosing the planner's factor", flush=True)
    val_rows = evaluate_models(configs, val, args.batch_size,
                               {"base": BASE_STRATEGIES, "grpo": PLANNER_STRATEGIES})
    planner, val_best = choose_planner(val_rows), best_threshold(val_rows)
    print(f"chosen: {planner}\ntest ({len(test)} problems)", flush=True)
    rows = evaluate_models(configs, test, args.batch_size,
                           {"base": BASE_STRATEGIES, "warm-start": WARM_STRATEGIES, "grpo": GRPO_STRATEGIES})
    eval_seconds = time.perf_counter() - eval_began
    targets = check_targets(rows, planner)
    meta = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores, torch {torch.__version__}, "
                   f"{torch.get_num_threads()} threads",
        "eval_size": args.eval_size, "val_size": len(val),
        "validation": [dataclasses.asdict(r) for r in val_rows if r.model == "grpo" or r is val_best],
        "gen_length": configs["train"].gen_length,
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
