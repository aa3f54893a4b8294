"""`dultra publish`, `dultra runs` and `dultra pull`: checkpoints to and from S3 (or an S3-compatible server).

    dultra publish ./ckpt s3://bucket/dultra/llada-math --metrics metrics.json --base-model GSAI-ML/LLaDA-8B-Instruct
    dultra runs s3://bucket/dultra/llada-math                           # what was published there
    dultra pull s3://bucket/dultra/llada-math ./ckpt                    # the run `latest` names
    dultra pull s3://bucket/dultra/llada-math/runs/20250131T120000Z-a1b2c3 ./ckpt --force

Credentials, region and endpoint come from the standard AWS environment and config
(AWS_ENDPOINT_URL, AWS_PROFILE, ~/.aws/config, instance roles); --endpoint-url and
--profile override them. The run URI (publish), the table of runs (runs) or the directory
(pull) is printed on stdout.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import yaml

from dultra.errors import yaml_problem
from dultra.storage import RunInfo, S3Options, list_runs, publish, pull
from dultra.storage.errors import StorageError
from dultra.storage.progress import GiB
from dultra.storage.s3 import MiB
from dultra.storage.uri import MANIFEST_NAME, RUNS_DIR


def register(subparsers) -> None:
    p = subparsers.add_parser("publish", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("directory", type=Path, help="checkpoint directory (config.json, model.safetensors, tokenizer)")
    p.add_argument("uri", help="base prefix, s3://bucket/prefix; the run goes to <uri>/runs/<run-id>/")
    p.add_argument("--run-id", default=None, help="run id (default: UTC time + random suffix)")
    p.add_argument("--metrics", type=Path, default=None, help="JSON file of metrics to record in the manifest")
    p.add_argument("--config", type=Path, default=None, help="training config (YAML or JSON) to record in the manifest")
    p.add_argument("--base-model", default=None, help="the model this checkpoint was trained from")
    _add_s3_arguments(p)
    p.set_defaults(run=run_publish)

    p = subparsers.add_parser("runs", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("uri", help="base prefix, s3://bucket/prefix (as given to publish)")
    p.add_argument("--json", action="store_true", help="one JSON object per run, a line each")
    _add_endpoint_arguments(p)
    p.set_defaults(run=run_runs)

    p = subparsers.add_parser("pull", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("uri", help="s3://bucket/prefix (its latest), s3://bucket/prefix/latest, or .../runs/<run-id>")
    p.add_argument("directory", type=Path, help="where to put the checkpoint (must be empty or absent)")
    p.add_argument("--force", action="store_true", help="replace an existing checkpoint directory, once the new one verified "
                        "(any other non-empty path is refused)")
    _add_s3_arguments(p)
    p.set_defaults(run=run_pull)


def _add_endpoint_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--endpoint-url", default=None, help="S3 endpoint (default: AWS_ENDPOINT_URL, the profile's, or AWS)")
    p.add_argument("--profile", default=None, help="AWS profile (default: AWS_PROFILE or the default chain)")


def _add_s3_arguments(p: argparse.ArgumentParser) -> None:
    _add_endpoint_arguments(p)
    p.add_argument("--part-size-mb", type=int, default=64,
                   help="multipart part size and threshold in MiB (default 64; S3 minimum 5)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (default: shown on a terminal)")


def _options(args: argparse.Namespace) -> S3Options:
    if args.part_size_mb < 5:
        raise StorageError(f"--part-size-mb {args.part_size_mb}: S3 parts are at least 5 MiB")
    return S3Options(endpoint_url=args.endpoint_url, profile=args.profile, part_size=args.part_size_mb * MiB,
                     progress=False if args.no_progress else None)


def _read_mapping(path: Path | None, what: str) -> dict | None:
    if path is None:
        return None
    try:
        data = yaml.safe_load(path.read_text())  # YAML is a superset of JSON: one reader for both
    except (OSError, yaml.YAMLError) as err:
        raise StorageError(f"cannot read {what} file {path}: {yaml_problem(err)}") from None
    if not isinstance(data, dict):
        raise StorageError(f"{what} file {path} must hold a mapping (a JSON object), not {type(data).__name__}")
    try:  # YAML reads 2024-06-01 as a date: the manifest keeps its text
        return json.loads(json.dumps(data, default=_iso_date, allow_nan=False))  # .nan, .inf: not JSON
    except (TypeError, ValueError) as err:
        raise StorageError(f"{what} file {path} holds a value JSON cannot: {err}") from None


def _iso_date(value: object) -> str:
    if isinstance(value, datetime.date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} {value!r}")


def run_publish(args: argparse.Namespace) -> int:
    result = publish(
        args.directory, args.uri, run_id=args.run_id, config=_read_mapping(args.config, "--config"),
        metrics=_read_mapping(args.metrics, "--metrics"), base_model=args.base_model, options=_options(args),
    )
    m = result.manifest
    print(f"published {len(m.files)} files ({m.total_bytes / MiB:.1f} MiB) as run {result.run_id}; "
          f"latest -> {result.pointer.run_id} (generation {result.pointer.generation})", file=sys.stderr)
    print(result.run_uri)
    return 0


def run_pull(args: argparse.Namespace) -> int:
    result = pull(args.uri, args.directory, force=args.force, options=_options(args))
    m = result.manifest
    print(f"pulled run {result.run_id}: {len(m.files)} files ({m.total_bytes / MiB:.1f} MiB) verified; "
          f"base model {m.base_model or '-'}, commit {(m.git_commit or '-')[:12]}, "
          f"metrics {json.dumps(m.metrics) if m.metrics else '-'}", file=sys.stderr)
    print(result.directory)
    return 0


def run_runs(args: argparse.Namespace) -> int:
    runs = list_runs(args.uri, options=S3Options(endpoint_url=args.endpoint_url, profile=args.profile))
    if not runs:
        print(f"no runs published under {args.uri.rstrip('/')}/{RUNS_DIR}/", file=sys.stderr)
    elif args.json:
        for run in runs:
            print(json.dumps(_run_record(run), sort_keys=True))
    else:
        print(_runs_table(runs))
    return 0


def _run_record(run: RunInfo) -> dict:
    m = run.manifest
    return {"run_id": run.run_id, "uri": run.uri, "status": run.status, "latest": run.latest,
            "problem": run.problem, "created": m and m.created, "files": m and len(m.files),
            "total_bytes": m and m.total_bytes, "base_model": m and m.base_model,
            "git_commit": m and m.git_commit, "metrics": m and m.metrics}


def _runs_table(runs: list[RunInfo]) -> str:
    rows = [("RUN", "STATUS", "PUBLISHED", "SIZE", "BASE MODEL", "DETAILS")]
    for run in runs:
        status = f"{run.status}, latest" if run.latest else run.status
        if (m := run.manifest) is None:
            detail = run.problem or f"no {MANIFEST_NAME}: killed, or still publishing"
            rows.append((run.run_id, status, "-", "-", "-", detail))
        else:
            rows.append((run.run_id, status, m.created, _size(m.total_bytes), m.base_model or "-",
                         " ".join(f"{k}={_value(v)}" for k, v in (m.metrics or {}).items()) or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1]]).rstrip()
                     for row in rows)


def _size(n: int) -> str:
    return f"{n / GiB:.1f} GiB" if n >= GiB else f"{n / MiB:.1f} MiB"


def _value(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else json.dumps(v) if isinstance(v, dict | list) else str(v)
