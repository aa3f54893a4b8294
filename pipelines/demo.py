"""The embedded default, end to end on this machine (what `make demo` runs).

    python -m pipelines.demo [--workdir runs/demo] [--grpo-steps N ...]

1. starts an S3-compatible server on loopback (moto_server) with a bucket;
2. runs the dUltra pipeline with kfp.local on the tiny default on CPU: synthetic data ->
   tiny base -> planner warm start -> GRPO -> evaluation -> publish to that server;
3. prints where the checkpoint went and the evaluation table;
4. pulls the checkpoint back (`dultra pull`) and decodes a prompt with it (`dultra generate`).
Settings come from configs/tiny.yaml; the flags override the step counts.
"""

import argparse
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUCKET = "dultra-demo"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_s3(log_path: Path) -> tuple[subprocess.Popen, str]:
    """moto_server on a free loopback port, with demo credentials in the environment."""
    exe = Path(sys.executable).with_name("moto_server")
    if not exe.exists():
        exe = shutil.which("moto_server")
        if exe is None:
            raise SystemExit("moto_server not found: install the dev extra (`make install`)")
    port = free_port()
    log = log_path.open("w")
    proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.update(AWS_ACCESS_KEY_ID="demo", AWS_SECRET_ACCESS_KEY="demo", AWS_DEFAULT_REGION="us-east-1")
    for _ in range(100):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            time.sleep(0.1)
    else:
        proc.terminate()
        raise SystemExit(f"moto_server did not start; see {log_path}")
    from dultra.storage.s3 import S3Options, make_client

    make_client(S3Options(endpoint_url=endpoint)).create_bucket(Bucket=BUCKET)
    return proc, endpoint


def run_pipeline(args: argparse.Namespace, endpoint: str) -> None:
    from kfp import local

    from pipelines.dultra_pipeline import build_pipeline

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(args.workdir / "kfp"))
    build_pipeline(workspace=str(args.workdir / "workspace"))(
        base_model="tiny", task="synthetic-math", config=str(ROOT / "configs" / "tiny.yaml"),
        eval_size=args.eval_size, pretrain_steps=args.pretrain_steps, warmstart_steps=args.warmstart_steps,
        grpo_steps=args.grpo_steps, eval_strategies=args.strategies,
        s3_destination=f"s3://{BUCKET}/tiny", s3_endpoint_url=endpoint,
    )


def show_results(args: argparse.Namespace, endpoint: str, seconds: float) -> None:
    """Pull the published checkpoint back, print its evaluation, decode a prompt with it."""
    from dultra.cli import main as dultra
    from dultra.storage import S3Options, pull

    uri, pulled = f"s3://{BUCKET}/tiny/latest", args.workdir / "pulled"
    print(f"\npipeline finished in {seconds / 60:.1f} min; checkpoint published to s3://{BUCKET}/tiny "
          f"on the S3-compatible server at {endpoint}")
    print(f"\n$ dultra pull {uri} {pulled} --force --endpoint-url {endpoint}")
    result = pull(uri, pulled, force=True, options=S3Options(endpoint_url=endpoint))
    print(f"verified {len(result.manifest.files)} files of run {result.run_id}")
    print(f"\n{'strategy':<26}{'accuracy %':>11}{'mean NFE':>10}{'TPF':>8}   (held-out synthetic-math)")
    for name, row in result.manifest.metrics.items():
        print(f"{name:<26}{row['accuracy']:>11.1f}{row['nfe']:>10.1f}{row['tpf']:>8.2f}")
    report = next((args.workdir / "workspace" / "runs").iterdir()) / "eval" / "report.html"
    print(f"report with the accuracy-vs-NFE plot: {report}")
    cmd = ["generate", "--model", str(pulled), "--prompt", "Compute ||||5 - 3| - 9| - 4| - 7|.", "--strategy", "planner",
           "--gen-length", str(args.gen_length), "--block-length", str(args.block_length), "--json"]
    print("\n$ dultra " + shlex.join(cmd))
    dultra(cmd)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, default=ROOT / "runs" / "demo", help="where everything is written")
    p.add_argument("--pretrain-steps", type=int, default=0, help="0: configs/tiny.yaml's")
    p.add_argument("--warmstart-steps", type=int, default=0, help="0: configs/tiny.yaml's")
    p.add_argument("--grpo-steps", type=int, default=0, help="0: configs/tiny.yaml's")
    p.add_argument("--eval-size", type=int, default=1000, help="held-out examples evaluated")
    p.add_argument("--strategies", default="threshold:tau=0.99;threshold:tau=0.9;planner:factor=1.0;planner:factor=1.001",
                   help="semicolon-separated strategies evaluated")
    p.add_argument("--gen-length", type=int, default=16, help="decode length of the final generate call")
    p.add_argument("--block-length", type=int, default=16, help="block length of the final generate call")
    args = p.parse_args()
    args.workdir = args.workdir.resolve()
    if (args.workdir / "workspace").exists():
        shutil.rmtree(args.workdir / "workspace")  # a fresh run: no resuming from an older demo
    args.workdir.mkdir(parents=True, exist_ok=True)
    server, endpoint = start_s3(args.workdir / "moto_server.log")
    try:
        start = time.perf_counter()
        run_pipeline(args, endpoint)
        show_results(args, endpoint, time.perf_counter() - start)
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
