"""Per-NFE cost of every decoding strategy, relative to one bare forward of the same batch.

    python benchmarks/decode_speed.py                                   # CPU, tiny default
    python benchmarks/decode_speed.py --model llada-8b --compile \\
        --out benchmarks/results/decode_speed_h100.json                 # GPU, LLaDA-8B shape
    python benchmarks/decode_speed.py --cache none prefix dual          # also with KV caches

The bare forward is the transformers-style call the reference sampler makes every step:
`model(x)` over prompt + completion, logits for every position. A strategy's cost is the
wall time of a decode divided by its steps (batch forward passes). Random weights make
confidence-based rules reveal one token per step, so decodes are capped at `--max-steps`
steps; the per-step cost does not depend on how many masks remain. On a GPU the bare
forward is also compared with its floors: weight bytes / measured copy bandwidth, and
FLOPs / measured bf16 matmul throughput.

With `--cache prefix dual` every strategy also runs with that KV cache. A block's first
step is a full forward that refreshes the cache, so with one token per step the cached
cost is that of (block_length - 1) cached steps and one refresh, averaged. With
`--compile` each step's model work is replayed from a captured CUDA graph
(dultra/decoding/graphs.py); the warm-up decodes compile and capture every layout.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch

# The GPU machine runs these scripts from a copied tree where dultra is not installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dultra.commands.generate import device_arg  # noqa: E402
from dultra.decoding import DecodeConfig, generate, parse_strategy  # noqa: E402
from dultra.decoding.generate import CACHES  # noqa: E402
from dultra.model import LLaDAConfig, LLaDAModelLM  # noqa: E402
from dultra.model.loading import load  # noqa: E402
from dultra.model.tiny import parse_spec  # noqa: E402

STRATEGIES = (
    "planner:factor=1.0", "planner-sample", "threshold:tau=0.9", "factor:factor=1.0",
    "low-confidence:steps={gen}", "entropy:gamma=0.1",
)
ROLLOUT = "rollout"  # planner-sample at T=0.1 with trajectory and log-probs recorded (issue 7, item 2)


def build(name: str, device: str, dtype: torch.dtype = torch.bfloat16, layers: int = 32) -> LLaDAModelLM:
    """`tiny` or `tiny:n_layers=32,...` (float32) or the LLaDA-8B shape with a planner head, random weights in `dtype`.

    layers < 32 keeps every width of LLaDA-8B but fewer blocks: the full-scale code path,
    checked on a CPU before a GPU run.
    """
    if parse_spec(name) is not None:
        return load(name, device=device)[0]
    if name != "llada-8b":
        raise SystemExit(f"unknown model {name!r}: tiny or llada-8b")
    # LLaDA-8B shape (dultra.md section 1) with a dUltra planner head, random weights.
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LLaDAModelLM(LLaDAConfig(n_layers=layers, num_head_layers=1))
    finally:
        torch.set_default_dtype(torch.float32)
    return model.eval()


def random_prompt(name: str, config: LLaDAConfig, batch: int, length: int, generator: torch.Generator) -> torch.Tensor:
    """(batch, length) random ordinary token ids on the CPU: for the tiny model, 20 ids past
    its 6 special ones (pad, eos, mask, chat roles); for LLaDA-8B, any id below the mask id."""
    if parse_spec(name) is not None:
        return torch.randint(0, 20, (batch, length), generator=generator) + 6
    return torch.randint(0, config.mask_token_id, (batch, length), generator=generator)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        out.append(time.perf_counter() - start)
    return out


def forward_flops(cfg: LLaDAConfig, batch: int, length: int) -> float:
    d, kv = cfg.d_model, cfg.n_kv_heads * cfg.head_dim
    per_token = cfg.n_layers * (2 * d * d + 2 * d * kv + 3 * d * cfg.mlp_hidden_size) + d * cfg.vocab_size
    attention = cfg.n_layers * 4 * length * length * d
    return 2.0 * batch * length * per_token + batch * attention


def weight_bytes_read(model: LLaDAModelLM, batch: int, length: int) -> int:
    """Bytes of weights one bare forward reads: the base model's, but of the embedding only the
    rows of its batch * length tokens (at most the whole table), and nothing of the planner head."""
    head = {id(p) for p in model.planner_parameters()}
    table = model.get_input_embeddings().weight
    rows = min(table.shape[0], batch * length)
    return rows * table[0].numel() * table.element_size() + sum(
        p.numel() * p.element_size() for p in model.parameters() if id(p) not in head and p is not table)


def gpu_floors(model: LLaDAModelLM, batch: int, length: int) -> dict:
    """Measured copy bandwidth and matmul throughput, and the bare forward's floors from them."""
    src = torch.empty(2 << 30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    copy = statistics.median(timed(lambda: dst.copy_(src), "cuda", 10))
    bandwidth = 2 * src.numel() / copy
    a = torch.randn(8192, 8192, dtype=torch.bfloat16, device="cuda")
    mm = statistics.median(timed(lambda: a @ a, "cuda", 10))
    peak = 2 * 8192**3 / mm
    weight_bytes = weight_bytes_read(model, batch, length)
    flops = forward_flops(model.config, batch, length)
    return {
        "copy_bandwidth_TBps": bandwidth / 1e12, "matmul_TFLOPs": peak / 1e12,
        "weight_GB": weight_bytes / 1e9, "forward_TFLOP": flops / 1e12,
        "memory_floor_ms": weight_bytes / bandwidth * 1e3, "compute_floor_ms": flops / peak * 1e3,
    }


def run(args: argparse.Namespace, save) -> dict:
    device = args.device
    model = build(args.model, device, layers=args.layers)
    if args.fuse or args.compile:
        model.fuse_projections()
    # The bare forward gets the same treatment as decoding: one compiled CUDA graph per call.
    bare_forward = lambda x: model(x).logits  # noqa: E731
    if args.compile:
        bare_forward = torch.compile(bare_forward, mode="reduce-overhead", dynamic=False)
    cfg = model.config
    gen = torch.Generator().manual_seed(0)
    results = {"batches": {}}
    for batch in args.batch:
        prompt = random_prompt(args.model, cfg, batch, args.prompt_len, gen).to(device)
        x = torch.cat([prompt, torch.full((batch, args.gen), cfg.mask_token_id, device=device)], dim=1)
        with torch.no_grad():
            forward = lambda x=x: bare_forward(x)  # noqa: E731
            # reduce-overhead's CUDA graph trees run a new shape eagerly, then record it on the
            # next call: only the third call on is a replay.
            timed(forward, device, max(args.warmup, 3) if args.compile else args.warmup)
            bare = statistics.median(timed(forward, device, args.repeat))
        row = results["batches"][str(batch)] = {"bare_forward_ms": bare * 1e3, "strategies": {}}
        save(results)
        print(f"\nbatch {batch}: bare forward {bare * 1e3:.2f} ms  (L = {x.shape[1]})", flush=True)
        settings = [(s.format(gen=args.gen), False, 0.0, cache)
                    for cache in args.cache for s in args.strategies if s != ROLLOUT]
        settings += [("planner-sample", True, 0.1, cache) for cache in args.cache if ROLLOUT in args.strategies]
        for spec, record, temperature, cache in settings:
            name = spec + (" +record T=0.1 (rollout)" if record else "") + ("" if cache == "none" else f" cache={cache}")
            strategy = parse_strategy(spec)
            config = DecodeConfig(
                gen_length=args.gen, block_length=args.block, temperature=temperature, record=record,
                seed=0, max_steps=args.max_steps, compile=args.compile, cache=cache,
            )
            outs = []
            def decode(prompt=prompt, strategy=strategy, config=config, outs=outs):
                out = generate(model, prompt, None, strategy, config)
                outs.append((out.steps, out.refreshes))

            try:
                warm = sum(timed(decode, device, args.warmup))
                outs.clear()
                times = timed(decode, device, args.repeat)
            except Exception as e:  # one failing setting must not cost the others their GPU time
                traceback.print_exc()
                row["strategies"][name] = {"error": f"{type(e).__name__}: {e}"}
                save(results)
                if device.startswith("cuda"):
                    torch.cuda.empty_cache()
                continue
            per_step = statistics.median(t / n for t, (n, _) in zip(times, outs))
            steps, refreshes = outs[0]
            # With a cache, a setting's cost depends on its share of refreshing full forwards.
            row["strategies"][name] = {
                "ms_per_nfe": per_step * 1e3, "ratio_to_bare": per_step / bare, "steps": steps,
                "refreshes": refreshes, "warmup_s": warm,
            }
            print(f"  {name:<42} {per_step * 1e3:9.2f} ms/NFE  {per_step / bare:5.2f}x bare  ({steps} steps, "
                  f"{refreshes} refreshes)", flush=True)
            save(results)  # a run cut short keeps every setting it finished
        if device.startswith("cuda"):
            row["floors"] = gpu_floors(model, batch, x.shape[1])
            f = row["floors"]
            print(f"  floors: memory {f['memory_floor_ms']:.2f} ms ({f['weight_GB']:.1f} GB at "
                  f"{f['copy_bandwidth_TBps']:.2f} TB/s), compute {f['compute_floor_ms']:.2f} ms "
                  f"({f['forward_TFLOP']:.2f} TFLOP at {f['matmul_TFLOPs']:.0f} TFLOP/s); "
                  f"bare forward reaches {f['forward_TFLOP'] / bare:.0f} TFLOP/s", flush=True)
        save(results)
    return results


def write_json(path: Path, data: dict) -> None:
    """`data` as `path`, whole or not at all: a step the GPU session cuts off mid-write keeps its last rows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    part.write_text(json.dumps(data, indent=2))
    os.replace(part, path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny", help="tiny | tiny:n_layers=32,... | llada-8b (random weights)")
    p.add_argument("--layers", type=int, default=32, help="llada-8b blocks (fewer: a quick check of the 8B path)")
    p.add_argument("--device", type=device_arg, default="cuda" if torch.cuda.is_available() else "cpu",
                   help="torch device; cuda where torch sees none is refused, rather than timing the CPU")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 12])
    p.add_argument("--prompt-len", type=int, default=128)
    p.add_argument("--gen", type=int, default=256)
    p.add_argument("--block", type=int, default=32)
    p.add_argument("--max-steps", type=int, default=32, help="steps timed per decode")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--cache", nargs="+", default=["none"], choices=CACHES,
                   help="KV cache settings to time each strategy with (default: none)")
    p.add_argument("--strategies", nargs="+", default=[*STRATEGIES, ROLLOUT], metavar="SPEC",
                   help=f"strategies to time (default: all; '{ROLLOUT}' is the recorded RL rollout)")
    p.add_argument("--fuse", action="store_true", help="fuse q/k/v and gate/up projections")
    p.add_argument("--compile", action="store_true",
                   help="decode with compiled, captured steps; the bare forward compiled with CUDA graphs (implies --fuse)")
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    args = p.parse_args()
    torch.manual_seed(0)
    if args.device == "cpu":
        torch.set_num_threads(max(1, torch.get_num_threads()))
    meta = dict(
        command=" ".join(sys.argv), date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        device=torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu",
        torch=torch.__version__, settings=vars(args) | {"out": str(args.out)},
    )

    def save(results: dict) -> None:
        if args.out:
            write_json(args.out, meta | results)

    run(args, save)
    if args.out:
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
