"""Predicted seconds and cost of a LLaDA-8B GRPO step on 1, 8 and 64 GPUs, and what bounds each.

    python benchmarks/scaling.py --out benchmarks/results/scaling.json

A step is what `dultra train --config configs/llada-8b-math.yaml` does on every GPU: roll
out one group of 12 (prompt 128, gen 256, block 32), score it (the distillation teacher's
forward; the sandbox for code), replay it with gradients in packs of `replay_batch_size`
rows, sync gradients, AdamW. GPUs run data parallel, one group each (weak scaling).

Inputs, each printed with its source:
- measured on an H100 (benchmarks/results/decode_speed_h100*.json): the bare forward and a
  recorded planner-sample rollout step at batch 12 (compiled; eager for FSDP), HBM copy
  bandwidth;
- measured when benchmarks/results/train_step_h100.json exists (`benchmarks/train_step.py
  --model llada-8b`): rollout and replay seconds with fp32 master weights, per train mode;
  otherwise derived from FLOPs (the planner alone replays its head on the recorded trunk,
  forward and backward ~3 x head/model of a forward; the full model with activation
  checkpointing ~4 forwards), and outside FSDP the full model's fp32 weights cast to bf16
  at every forward (a frozen base is stored in bf16 instead: dultra.model.precision);
- measured on this project's CPU (sandbox_speed.json): sandbox executions per second;
- assumed, and settable: interconnect bandwidths, NFE, price per GPU-hour.
Communication is assumed to overlap with compute (FSDP prefetch), so a forward takes the
longer of the two; gradient sync and the optimizer step do not overlap.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
PARAMS = 8.319e9  # LLaDA-8B + one-block planner head (dultra.model, counted on the meta device)
HEAD_PARAMS = 0.303e9
BASE_LINEAR_PARAMS = 7.497e9  # the base's nn.Linear weights; the rest of it is embeddings and norms
TEACHER_PARAMS = 7.62e9  # Qwen2.5-Math-7B-Instruct, the math distillation teacher


@dataclass
class Inputs:
    """What one GPU's work costs; `sources` says where each figure came from."""

    forward_ms: float  # bare forward, batch 12 x 384 tokens, compiled, bf16 weights
    rollout_ms: float  # one recorded planner-sample rollout step of the batch, bf16 weights, captured CUDA graphs
    rollout_eager_ms: float  # the same step eager, as under FSDP (which cannot capture sharded weights)
    replay_x: dict[str, float]  # replay cost per 12-row pack, in bare forwards, per train mode
    hbm_TBps: float  # HBM copy bandwidth
    sandbox_per_s: float  # executions per second of one sandbox replica (8 workers, 2 CPUs)
    measured_replay: tuple[str, ...] = ()  # train modes whose replay_x was measured (cast included)
    sources: dict[str, str] = field(default_factory=dict)


@dataclass
class Cluster:
    """Assumed hardware and prices (settable from the command line)."""

    gpus_per_node: int = 8  # an HGX H100 node
    nvlink_GBps: float = 360.0  # NCCL bus bandwidth inside an H100 SXM node (NVSwitch)
    network_GBps: float = 40.0  # per GPU between nodes (8 x 400 Gb/s NICs per node)
    gpu_memory_GB: float = 80.0  # H100 SXM
    usd_per_gpu_hour: float = 3.0  # an assumed on-demand H100 price; pass yours (--usd-per-gpu-hour)


@dataclass
class Run:
    """The training setting of configs/llada-8b-math.yaml."""

    group: int = 12  # completions per prompt (group_size)
    seq_len: int = 384  # prompt 128 + gen 256
    d_model: int = 4096  # LLaDA-8B's hidden size
    replay_batch_size: int = 4  # (row, step) pairs per replay forward
    steps: int = 4800  # GRPO steps of a full run
    batch_steps_per_nfe: float = 1.14  # a batch waits for its slowest row (train_step_cache_cpu.json)


def bus_GBps(gpus: int, cluster: Cluster) -> float:
    """Collective bandwidth over `gpus` GPUs: NVLink inside a node, the NICs across nodes."""
    return cluster.nvlink_GBps if gpus <= cluster.gpus_per_node else cluster.network_GBps


def predict(inp: Inputs, cluster: Cluster, run: Run, gpus: int, train: str, nfe: float,
            hybrid: bool = False) -> dict:
    """Seconds of one step on every GPU, by phase, with memory, cost and bottleneck.

    train: "planner" (base frozen, DDP) or "full" (FSDP over all GPUs, configs/accelerate/fsdp.yaml,
    or with `hybrid` sharded inside a node and replicated across nodes, hsdp.yaml).
    nfe: mean forwards per completion.
    """
    full, sharded = train == "full", train == "full" and gpus > 1
    shard = min(gpus, cluster.gpus_per_node) if hybrid else gpus
    # Trained fp32 weights are read and written in bf16 at every forward (FSDP gathers them
    # in bf16; a frozen base is stored in bf16).
    cast_ms = 6 * PARAMS / inp.hbm_TBps / 1e9 if full and not sharded else 0.0
    gather_ms = 2 * PARAMS * (shard - 1) / shard / bus_GBps(shard, cluster) / 1e6 if sharded else 0.0

    rollout_steps = nfe * run.batch_steps_per_nfe
    step_ms = inp.rollout_eager_ms if sharded else inp.rollout_ms + cast_ms
    rollout_compute = rollout_steps * step_ms
    rollout = rollout_steps * max(step_ms, gather_ms)

    packs = math.ceil(run.group / run.replay_batch_size) * nfe
    pack_cast = 0.0 if train in inp.measured_replay else cast_ms  # a measured replay includes it
    pack_compute = inp.forward_ms * inp.replay_x[train] * run.replay_batch_size / run.group + pack_cast
    replay_compute = packs * pack_compute
    replay = packs * max(pack_compute, 2 * gather_ms)  # the forward's gather and the backward's

    if not full:  # DDP all-reduce of the head's fp32 gradients
        sync = 4 * HEAD_PARAMS * 2 * (gpus - 1) / gpus / bus_GBps(gpus, cluster) / 1e6
    elif sharded:  # one bf16 reduce-scatter per step (no_sync on every pack but the last)
        sync = 2 * PARAMS * (shard - 1) / shard / bus_GBps(shard, cluster) / 1e6
        if hybrid and gpus > shard:  # then an all-reduce of each shard across nodes
            nodes = gpus // shard
            sync += 2 * PARAMS / shard * 2 * (nodes - 1) / nodes / cluster.network_GBps / 1e6
    else:
        sync = 0.0
    trained_local = PARAMS / shard if full else HEAD_PARAMS
    optimizer = 32 * trained_local / inp.hbm_TBps / 1e9  # AdamW reads and writes ~32 bytes per parameter
    teacher = inp.forward_ms * TEACHER_PARAMS / PARAMS

    if full:  # fp32 params + grads + Adam (16 B each), sharded; unsharded bf16 grads between syncs
        states_GB = (16 * PARAMS / shard + (2 * PARAMS if sharded else 0)) / 1e9
    else:  # bf16 frozen linears, fp32 embeddings, the head's fp32 weights, grads and Adam, the fp32 trunk record
        trunk = rollout_steps * run.group * run.seq_len * run.d_model * 4
        frozen = 2 * BASE_LINEAR_PARAMS + 4 * (PARAMS - HEAD_PARAMS - BASE_LINEAR_PARAMS)
        states_GB = (frozen + 16 * HEAD_PARAMS + trunk) / 1e9
    phases = {"rollout": rollout, "teacher": teacher, "replay": replay, "grad sync": sync, "optimizer": optimizer}
    step_s = sum(phases.values()) / 1000
    comm = (rollout - rollout_compute) + (replay - replay_compute) + sync
    slowest = max(phases, key=phases.get)
    waits = {"rollout": rollout > rollout_compute, "replay": replay > replay_compute, "grad sync": True}
    bottleneck = f"{slowest} ({'network' if waits.get(slowest) else 'GPU compute'})"
    groups_per_hour = gpus * 3600 / step_s
    return {
        "gpus": gpus, "train": train + (" (hybrid shard)" if hybrid else ""), "nfe": nfe,
        "fits": states_GB < cluster.gpu_memory_GB, "states_GB": states_GB,
        "phases_s": {k: v / 1000 for k, v in phases.items()}, "communication_s": comm / 1000, "step_s": step_s,
        "bottleneck": bottleneck, "groups_per_hour": groups_per_hour,
        "usd_per_1000_groups": 1000 / groups_per_hour * gpus * cluster.usd_per_gpu_hour,
        "run_hours": run.steps * step_s / 3600,
        "run_usd": run.steps * step_s / 3600 * gpus * cluster.usd_per_gpu_hour,
        "code_sandbox_replicas": math.ceil(gpus * run.group / step_s / inp.sandbox_per_s),
    }


def load_inputs(results: Path = RESULTS) -> Inputs:
    """The recorded figures; train_step_h100.json, when there, replaces the FLOP estimates."""
    decode = json.loads((results / "decode_speed_h100.json").read_text())
    b12 = decode["batches"]["12"]
    eager = json.loads((results / "decode_speed_h100_eager.json").read_text())["batches"]["12"]
    rollout, rollout_eager = (next(v["ms_per_nfe"] for k, v in b["strategies"].items() if "record" in k)
                              for b in (b12, eager))
    sandbox = json.loads((results / "sandbox_speed.json").read_text())
    inp = Inputs(
        forward_ms=b12["bare_forward_ms"], rollout_ms=rollout, rollout_eager_ms=rollout_eager,
        replay_x={"planner": 3 * HEAD_PARAMS / PARAMS, "full": 4.0},
        hbm_TBps=b12["floors"]["copy_bandwidth_TBps"], sandbox_per_s=sandbox["throughput"]["per_s"],
        sources={"forward_ms, rollout_ms, hbm_TBps": f"measured: decode_speed_h100.json ({decode['device']})",
                 "rollout_eager_ms": "measured: decode_speed_h100_eager.json (eager, fused projections)",
                 "replay_x": "estimated from FLOPs: planner 3 x head/model (the head's forward and backward on "
                             "the recorded trunk), full 4 (forward, recompute, backward)",
                 "sandbox_per_s": "measured: sandbox_speed.json (8 workers, 2 CPUs)",
                 "teacher": "estimated: one batch-12 forward of the 7.6B teacher, forward_ms x 7.62 / 8.32"},
    )
    train_file = results / "train_step_h100.json"
    if train_file.exists():
        rows = [r for r in json.loads(train_file.read_text())["rows"]
                if r.get("cache", "none") == "none" and not {"out_of_memory", "error"} & r.keys()]
        rows.sort(key=lambda r: bool(r.get("compile")))  # a compiled row (the trainer's rollout) wins
        for r in rows:  # its packs are the whole group of 12, its weights stored as the trainer's
            inp.replay_x[r["train"]] = r["replay_s_per_forward"] * 1000 / inp.forward_ms
            if r["train"] == "planner" and r.get("compile"):  # the trainer's rollout, captured as rollout_ms is
                inp.rollout_ms = r["rollout_s_per_step"] * 1000
        inp.measured_replay = tuple(r["train"] for r in rows)
        if rows:
            inp.sources["replay_x, rollout_ms"] = f"measured: train_step_h100.json ({', '.join(r['train'] for r in rows)})"
    return inp


def table(rows: list[dict]) -> str:
    lines = ["| GPUs | train | NFE | states GB/GPU | rollout | teacher | replay | grad sync | optimizer | step s "
             "| of it communication | bottleneck | groups/h | $ / 1000 groups | 4800-step run | sandbox replicas (code) |",
             "|" + "---|" * 16]
    for r in rows:
        p = r["phases_s"]
        if not r["fits"]:
            lines.append(f"| {r['gpus']} | {r['train']} | {r['nfe']:g} | {r['states_GB']:.0f}: does not fit |"
                         + " - |" * 12)
            continue
        fits = f"{r['states_GB']:.0f}"
        lines.append(
            f"| {r['gpus']} | {r['train']} | {r['nfe']:g} | {fits} | {p['rollout']:.2f} | {p['teacher']:.2f} "
            f"| {p['replay']:.2f} | {p['grad sync']:.2f} | {p['optimizer']:.2f} | {r['step_s']:.2f} "
            f"| {r['communication_s']:.2f} | {r['bottleneck']} | {r['groups_per_hour']:.0f} "
            f"| {r['usd_per_1000_groups']:.2f} | {r['run_hours']:.1f} h, ${r['run_usd']:.0f} "
            f"| {r['code_sandbox_replicas']} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gpus", type=int, nargs="+", default=[1, 8, 64])
    p.add_argument("--nfe", type=float, nargs="+", default=[55.0, 16.0],
                   help="mean forwards per completion: a warm-started planner (Fast-dLLM's 55 on "
                        "GSM8K) and a trained one (dUltra's 16), dultra.md section 8")
    p.add_argument("--results", type=Path, default=RESULTS, help="folder of the recorded benchmark JSON files")
    for name, value in asdict(Cluster()).items():
        p.add_argument("--" + name.replace("_", "-"), type=type(value), default=value)
    p.add_argument("--out", type=Path, help="write inputs and predictions as JSON here")
    args = p.parse_args()
    try:
        inp = load_inputs(args.results)
    except FileNotFoundError as err:
        sys.exit(f"scaling: {err.filename} is missing: run the benchmark that records it first")
    cluster = Cluster(**{k: getattr(args, k) for k in asdict(Cluster())})
    rows = []
    for nfe in args.nfe:
        for gpus in args.gpus:
            rows += [predict(inp, cluster, Run(), gpus, train, nfe) for train in ("planner", "full")]
            if gpus > cluster.gpus_per_node:
                rows.append(predict(inp, cluster, Run(), gpus, "full", nfe, hybrid=True))
    for source, what in inp.sources.items():
        print(f"{source}: {what}")
    print(f"assumed: {asdict(cluster)}, {asdict(Run())}\n")
    print(table(rows))
    if args.out:
        args.out.write_text(json.dumps({"inputs": asdict(inp), "cluster": asdict(cluster), "run": asdict(Run()),
                                        "rows": rows}, indent=2))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
