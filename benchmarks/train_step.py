"""Seconds and memory of one GRPO step at LLaDA-8B shape: rollout, replay with gradients, update.

    python benchmarks/train_step.py --model llada-8b --train planner full --out benchmarks/results/train_step_h100.json
    python benchmarks/train_step.py --model llada-8b --train planner --max-group      # largest group on this GPU
    python benchmarks/train_step.py --cache none dual                                # CPU, tiny default
    python benchmarks/train_step.py --bf16 --train planner planner-fp32 --repeat 5   # CPU, bf16 autocast

One group at the reference setting (prompt 128, gen 256, block 32, planner-sample at
temperature 0.1, trajectories recorded) is rolled out, then replayed with gradients pack
by pack exactly as `dultra train` does (dultra.rl.trainer: fp32 weights holding bf16 values
as an official checkpoint loads, bf16 autocast on GPU or with `--bf16`, AdamW), with every
advantage non-zero so every row is replayed. `planner` trains the head only, as `dultra
train --train-base false` does: the frozen base's linears are stored in bf16 under autocast
(dultra.model.precision), the rollout records the trunk's outputs and the replay runs only
the heads on them. The ablations measure what each saves: `planner-fp32` keeps the frozen
base in fp32 (cast at every forward), `planner-rerun` replays the whole model. `full`
trains both, with activation checkpointing. Random weights: the planner's probabilities are
near 0.5, so the step count differs from a trained model's; per-forward figures carry over.
`--cache prefix dual` also measures cached rollouts, replayed block by block as decoded;
`--compile` rolls out with captured CUDA graphs as `dultra train --compile-rollouts` does.
A setting that does not fit in GPU memory is recorded as out of memory in the phase it ran
out of it (rollout, replay or optimizer), with the peak reached; one whose rollout
and replay fit but whose AdamW states do not (the full model on one GPU) keeps its rollout
and replay figures and is marked `optimizer_out_of_memory`.

`--max-group` predicts the largest group that fits on this GPU from two measured peaks, at
`--group` and twice it: every term that grows with the group (activations, the recorded
trunk, the replay's packs of one row per completion) grows linearly, so two full-length
steps fix the line. `--max-steps` caps the rollout; per-step figures do not depend on it,
but the recorded trunk does, so the prediction then holds for that many steps.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch

# The GPU machine runs these scripts from a copied tree where dultra is not installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.decode_speed import build, random_prompt, sync, write_json  # noqa: E402
from dultra.commands.generate import device_arg  # noqa: E402
from dultra.decoding import DecodeConfig, PlannerSample, generate  # noqa: E402
from dultra.decoding.generate import CACHES  # noqa: E402
from dultra.decoding.trajectory import replay_steps  # noqa: E402
from dultra.model.precision import store_frozen_linears  # noqa: E402

TRAIN_MODES = ["planner", "planner-fp32", "planner-rerun", "full"]


def one_step(model, optimizer, prompt, config: DecodeConfig, device: str, bf16: bool, progress: dict) -> dict:
    """Rollout, replay + backward of every pack, optimizer step; seconds of each and the pack count.

    `progress["phase"]` names the phase running, for a step that runs out of memory.
    """
    def autocast(cache: bool):
        if not bf16:
            return contextlib.nullcontext()
        return torch.autocast(torch.device(device).type, torch.bfloat16, cache_enabled=cache)

    progress["phase"] = "rollout"
    sync(device)
    t0 = time.perf_counter()
    model.eval()
    with autocast(cache=True):  # as `dultra train`: one bf16 copy of each weight for the whole rollout
        out = generate(model, prompt, None, PlannerSample(), config)
    sync(device)
    t1 = time.perf_counter()
    model.train()
    traj, forwards = out.trajectory, 0
    coef = torch.randn(prompt.shape[0], device=device)  # stands in for the clipped advantages
    progress["phase"] = "replay"
    # The trainer's forwards each enter accelerate's autocast, which keeps no bf16 copy of the
    # weights past a forward; one context over all packs would hold 16 GB of them at 8B.
    with autocast(cache=False):
        for pack in replay_steps(model, traj):
            (-(coef[pack.rows] * pack.log_prob).sum() / traj.completion.numel()).backward()
            forwards += pack.forwards
    sync(device)
    t2 = time.perf_counter()
    row = {"rollout_s": t1 - t0, "replay_s": t2 - t1, "rollout_steps": out.steps,
           "replay_forwards": forwards, "mean_nfe": out.nfe.float().mean().item()}
    del out, traj
    progress["phase"] = "optimizer"
    try:
        optimizer.step()
    except torch.OutOfMemoryError:  # the AdamW states: rollout and replay were measured all the same
        optimizer.state.clear()  # the states it did allocate would crowd the next step's rollout
        return row | {"optimizer_out_of_memory": True}
    finally:
        optimizer.zero_grad(set_to_none=True)
    sync(device)
    return row | {"optimizer_s": time.perf_counter() - t2}


def median_row(runs: list[dict]) -> dict:
    """Each figure's median over the steps that have it: a step whose optimizer ran out of
    memory has no optimizer_s, and marks the row."""
    row = {key: statistics.median(r[key] for r in runs if key in r) for key in dict.fromkeys(k for r in runs for k in r)}
    if "optimizer_out_of_memory" in row:
        row["optimizer_out_of_memory"] = True
    return row


def measure(args, train: str, group: int, repeat: int, cache: str, progress: dict) -> dict:
    """One setting: a warm-up step, then the median of `repeat` steps (or the warm-up alone); peak memory on GPU."""
    device, bf16 = args.device, args.bf16 or args.device.startswith("cuda")
    model = build(args.model, device, torch.bfloat16, args.layers).to(torch.bfloat16).float()  # official, in fp32
    model.set_trainable(base=train == "full", planner=True)
    if bf16 and train != "planner-fp32":
        store_frozen_linears(model, torch.bfloat16)
    if train == "full":
        model.checkpoint_activations()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-7)
    prompt = random_prompt(args.model, model.config, group, args.prompt_len, torch.Generator().manual_seed(0)).to(device)
    config = DecodeConfig(gen_length=args.gen, block_length=args.block, temperature=0.1, record=True, seed=0,
                          max_steps=args.max_steps, cache=cache, compile=args.compile,
                          record_trunk=train in ("planner", "planner-fp32"))
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    runs = [one_step(model, optimizer, prompt, config, device, bf16, progress) for _ in range(1 + repeat)]
    runs = runs[min(repeat, 1):]
    row = median_row(runs)
    row |= {"train": train, "cache": cache, "compile": args.compile, "group": group, "bf16_autocast": bf16,
            "weights_GB": sum(p.numel() * p.element_size() for p in model.parameters()) / 1e9,
            "replay_vs_rollout": row["replay_s"] / row["rollout_s"],
            "replay_s_per_forward": row["replay_s"] / row["replay_forwards"],
            "rollout_s_per_step": row["rollout_s"] / row["rollout_steps"]}
    if device.startswith("cuda"):
        row["peak_memory_GB"] = torch.cuda.max_memory_allocated() / 1e9
        row["peak_reserved_GB"] = torch.cuda.max_memory_reserved() / 1e9  # with the graphs' pools and fragments
        # What this process could hold: its allocator's pool and what the GPU has free.
        row["capacity_GB"] = (torch.cuda.mem_get_info()[0] + torch.cuda.memory_reserved()) / 1e9
    return row


def try_measure(args, train: str, group: int, repeat: int, cache: str = "none") -> dict:
    """measure(), or a row saying where it ran out of memory or failed (the next setting still runs)."""
    progress = {"phase": "model"}
    failed = {"train": train, "cache": cache, "group": group}
    try:
        return measure(args, train, group, repeat, cache, progress)
    except torch.OutOfMemoryError:
        failed |= {"out_of_memory": True, "phase": progress["phase"]}
        if args.device.startswith("cuda"):
            failed["peak_memory_GB"] = torch.cuda.max_memory_allocated() / 1e9
        return failed
    except RuntimeError as e:  # e.g. an OOM inside a CUDA graph capture surfaces as a capture error
        traceback.print_exc()
        return failed | {"error": f"{type(e).__name__}: {e}", "phase": progress["phase"]}
    finally:
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()


def fit_largest_group(group: int, peak_GB: float, double_peak_GB: float, capacity_GB: float,
                      headroom: float = 0.03) -> dict:
    """The largest group on the line through the peaks at `group` and 2 * `group`.

    `headroom` of the capacity is left for the allocator's fragmentation.
    """
    per_row = (double_peak_GB - peak_GB) / group
    fixed = peak_GB - per_row * group
    usable = (1 - headroom) * capacity_GB
    return {"largest_group": int((usable - fixed) / per_row) if per_row > 0 else None,
            "memory_fixed_GB": fixed, "memory_per_row_GB": per_row, "peak_reserved_GB_at_double": double_peak_GB}


def largest_group(args, train: str, row: dict) -> dict:
    """Measure the step at twice row's group and fit the largest group; 0 when row itself
    did not fit (AdamW states included)."""
    if {"out_of_memory", "optimizer_out_of_memory", "error"} & row.keys():
        return {"largest_group": 0}
    double = try_measure(args, train, 2 * row["group"], repeat=0)
    if {"out_of_memory", "optimizer_out_of_memory", "error"} & double.keys():
        return {"largest_group_below": 2 * row["group"]}
    # Reserved, not allocated: memory the captured graphs' pools hold stays reserved between replays.
    return fit_largest_group(row["group"], row["peak_reserved_GB"], double["peak_reserved_GB"], row["capacity_GB"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny", choices=["tiny", "llada-8b"], help="tiny or llada-8b (random weights)")
    p.add_argument("--layers", type=int, default=32, help="llada-8b blocks (fewer: a quick check of the 8B path)")
    p.add_argument("--device", type=device_arg, default="cuda" if torch.cuda.is_available() else "cpu",
                   help="torch device; cuda where torch sees none is refused, rather than timing the CPU")
    p.add_argument("--train", nargs="+", default=["planner", "full"], choices=TRAIN_MODES)
    p.add_argument("--bf16", action="store_true", help="bf16 autocast on the CPU too (always on a GPU)")
    p.add_argument("--cache", nargs="+", default=["none"], choices=CACHES, help="KV caches of the rollout")
    p.add_argument("--compile", action="store_true", help="roll out with compiled, captured steps "
                   "(`dultra train --compile-rollouts`; the warm-up step compiles)")
    p.add_argument("--group", type=int, default=12, help="completions per step (one GRPO group)")
    p.add_argument("--prompt-len", type=int, default=128)
    p.add_argument("--gen", type=int, default=256)
    p.add_argument("--block", type=int, default=32)
    p.add_argument("--repeat", type=int, default=2, help="timed steps after one warm-up step")
    p.add_argument("--max-steps", type=int, help="cap each rollout at this many steps (default: decode to the end)")
    p.add_argument("--max-group", action="store_true", help="also predict the largest group that fits (GPU)")
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    args = p.parse_args()
    if args.max_group and not args.device.startswith("cuda"):
        p.error("--max-group needs a GPU (it measures peak GPU memory)")
    torch.manual_seed(0)
    meta = dict(
        command=" ".join(sys.argv), date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        device=torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu",
        torch=torch.__version__, settings=vars(args) | {"out": str(args.out)},
    )
    results = {"rows": []}

    def save() -> None:  # a run cut short keeps the settings it finished
        if args.out:
            write_json(args.out, meta | results)

    for train in args.train:
        for cache in args.cache:
            row = try_measure(args, train, args.group, args.repeat, cache=cache)
            results["rows"].append(row)
            print(json.dumps(row), flush=True)
            save()
            if args.max_group and cache == "none":  # a second full step: the row above is safe first
                row |= largest_group(args, train, row)
                print(json.dumps(row), flush=True)
                save()


if __name__ == "__main__":
    main()
