"""Stand-alone entry point of the sandbox image (no `dultra`, so no torch).

    python -m sandbox serve --host 0.0.0.0 --port 8080 --workers 8
    python -m sandbox run solution.py --tests tests.py

Settings also come from SANDBOX_<FIELD> environment variables (see `sandbox.config`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from sandbox.config import SandboxConfig
from sandbox.files import read_text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sandbox")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the HTTP service")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int)
    serve.add_argument("--isolation", choices=("auto", "namespaces", "process"))
    run = sub.add_parser("run", help="run one program locally (no server) and print the result")
    run.add_argument("file")
    run.add_argument("--tests", help="file of test code run after the program")
    run.add_argument("--timeout", type=float)
    return parser


def config_from(args: argparse.Namespace) -> SandboxConfig:
    fields = {f.name for f in dataclasses.fields(SandboxConfig)}
    return SandboxConfig.configured(**{k: v for k, v in vars(args).items() if k in fields})


def request_from(args: argparse.Namespace, config: SandboxConfig) -> dict:
    """The checked request of `run` (ValueError for a bad file; RequestError, a ValueError
    naming the limits, for a --timeout outside (0, max_timeout_s])."""
    from sandbox.protocol import normalize

    raw = {"code": read_text(args.file, "program")}
    if args.tests is not None:
        raw["tests"] = [read_text(args.tests, "tests")]
    if args.timeout is not None:  # 0 too: refused, not read as "the default"
        raw["timeout_s"] = args.timeout
    return normalize(raw, config)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = config_from(args)
        request = request_from(args, config) if args.command == "run" else None
    except ValueError as err:  # a bad flag, SANDBOX_* value, file or request: one line, not a traceback
        print(f"sandbox: error: {err}", file=sys.stderr)
        return 2
    if args.command == "serve":
        from sandbox.server import serve

        serve(config)
        return 0
    from sandbox.pool import WorkerPool

    pool = WorkerPool(dataclasses.replace(config, workers=1))
    try:
        result = pool.run(request)
    finally:
        pool.close()
    print(json.dumps(result, indent=2))
    return 0 if result["status"] == "passed" else 1


if __name__ == "__main__":
    sys.exit(main())
