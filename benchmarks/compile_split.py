"""Step cost of a decoding step compiled whole against compiled as trunk + heads (graphs.py).

    python benchmarks/compile_split.py --out benchmarks/results/compile_split_cpu.json
    python benchmarks/compile_split.py --layers 32 --d-model 64

Both forms run the same planner step (`decode_step`, batch 2, prompt 64 + one 32-token
block masked) on a random model; rounds alternate between them so that the shared
machine's drift falls on both. Outputs must be equal. On a GPU the captured graph replays
either form with one launch, so the per-call Python that the split adds (a second compiled
call and its guards) is what this measures on a CPU; the compile time over a sweep of
strategies is in decode_speed.py's `warmup_s` (benchmarks/results/compile_split_cpu.md).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

# The GPU machine runs these scripts from a copied tree where dultra is not installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dultra.decoding.step import decode_step  # noqa: E402
from dultra.model import LLaDAConfig, LLaDAModelLM  # noqa: E402


def measure(layers: int, d_model: int, rounds: int) -> dict:
    """Median ms per step of each form on a random model of `layers` blocks of width `d_model`."""
    cfg = LLaDAConfig(n_layers=layers, d_model=d_model, n_heads=4, n_kv_heads=4, mlp_hidden_size=3 * d_model,
                      vocab_size=512, mask_token_id=511, eos_token_id=510, pad_token_id=509,
                      max_sequence_length=512, num_head_layers=1)
    model = LLaDAModelLM(cfg).eval().fuse_projections()
    B, L = 2, 96
    x = torch.randint(0, 500, (B, L))
    x[:, 64:] = cfg.mask_token_id
    step = (model, x, None, torch.full((B,), L), torch.arange(64, 96).expand(B, -1),
            torch.ones(B, 32, dtype=torch.bool), True, 0.0, None)
    whole = torch.compile(decode_step, dynamic=False)
    trunk = torch.compile(lambda m, x: m.trunk(x), dynamic=False)
    heads = torch.compile(decode_step, dynamic=False)
    forms = {"whole": lambda: whole(*step), "split": lambda: heads(*step, trunk=trunk(model, x))}
    times = {name: [] for name in forms}
    with torch.no_grad():
        a, b = forms["whole"](), forms["split"]()
        assert all(u is v is None or torch.equal(u, v) for u, v in zip(a, b)), "the two forms differ"
        for r in range(rounds):
            for name in ("whole", "split") if r % 2 else ("split", "whole"):
                start = time.perf_counter()
                for _ in range(10):
                    forms[name]()
                times[name].append((time.perf_counter() - start) / 10)
    whole_ms, split_ms = (statistics.median(times[n]) * 1e3 for n in ("whole", "split"))
    return {"layers": layers, "d_model": d_model, "whole_ms": whole_ms, "split_ms": split_ms,
            "split_over_whole": split_ms / whole_ms}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, nargs="+", default=[4, 32])
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--rounds", type=int, default=30, help="alternating rounds of 10 steps each")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    torch.manual_seed(0)
    rows = []
    for layers in args.layers:
        row = measure(layers, args.d_model, args.rounds)
        rows.append(row)
        print(f"{layers} layers: whole {row['whole_ms']:.3f} ms  split {row['split_ms']:.3f} ms  "
              f"ratio {row['split_over_whole']:.3f}", flush=True)
    if args.out:
        args.out.write_text(json.dumps({"command": " ".join(sys.argv), "torch": torch.__version__, "rows": rows},
                                       indent=2))

if __name__ == "__main__":
    main()
