"""Publish / pull throughput against a local moto_server, next to the sha256 rate that
bounds verification: is checking every byte the bottleneck of a pull?

    .venv/bin/python benchmarks/storage_throughput.py --size-mb 256

Loopback numbers measure this code's overhead (hashing, multipart bookkeeping, the
temporary directory and rename) plus moto_server's own (Python) speed, not a network.
Recorded on the 2-core dev machine, one run (ratios are what carry over):
    256 MiB, 64 MiB parts, loopback moto_server
    sha256 only           0.22 s     1165 MiB/s     1.0x sha256
    publish               5.49 s       47 MiB/s    25.0x sha256
    pull (verified)       2.52 s      102 MiB/s    11.4x sha256
Verifying every byte costs about a tenth of a pull even against a loopback server; on a
real network the share is smaller still.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from dultra.storage import S3Options, make_client, publish, pull
from dultra.storage.manifest import sha256_file
from dultra.storage.s3 import MiB


def start_moto() -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=1).close()
            return proc, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("moto_server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=256, help="size of the one-file checkpoint (MiB)")
    parser.add_argument("--part-size-mb", type=int, default=64, help="multipart part size (MiB)")
    args = parser.parse_args()
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
    proc, url = start_moto()
    try:
        options = S3Options(endpoint_url=url, part_size=args.part_size_mb * MiB, progress=False)
        make_client(options).create_bucket(Bucket="bench")
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "src"
            src.mkdir()
            (src / "model.safetensors").write_bytes(os.urandom(args.size_mb * MiB))
            timings = {}
            start = time.perf_counter()
            sha256_file(src / "model.safetensors")
            timings["sha256 only"] = time.perf_counter() - start
            start = time.perf_counter()
            publish(src, "s3://bench/m", options=options)
            timings["publish"] = time.perf_counter() - start
            start = time.perf_counter()
            pull("s3://bench/m", Path(tmp) / "out", options=options)
            timings["pull (verified)"] = time.perf_counter() - start
    finally:
        proc.terminate()
    print(f"{args.size_mb} MiB, {args.part_size_mb} MiB parts, loopback moto_server")
    for name, seconds in timings.items():
        print(f"{name:<18}{seconds:8.2f} s{args.size_mb / seconds:9.0f} MiB/s"
              f"{seconds / timings['sha256 only']:8.1f}x sha256")


if __name__ == "__main__":
    main()
