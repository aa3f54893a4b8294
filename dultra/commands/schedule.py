"""`dultra schedule`: scheduled retraining as Kubeflow Pipelines recurring runs.

    dultra schedule create --host http://localhost:8080 --cron "0 0 3 * * *" \\
        --pipeline-file pipelines/dultra_pipeline.yaml --param s3_destination=s3://my-bucket/dultra/gsm8k \\
        --param task=gsm8k --param grpo_steps=200
    dultra schedule list --host http://localhost:8080
    dultra schedule delete --host http://localhost:8080 --name dultra-retraining

Crons have 6 fields, SECONDS FIRST, evaluated in UTC: "0 0 3 * * *" is 03:00:00 UTC
daily, "0 30 2 * * MON" 02:30 UTC on Mondays, "0 0 */6 * * *" every six hours. A 5-field
cron is refused (KFP would silently read its first field as seconds).

create: a recurring run of the pipeline named --pipeline (default `dultra`; uploaded from
--pipeline-file if it does not exist yet) or --pipeline-id, with at most one run at a time,
no catch-up after downtime, enabled, in --experiment (created if missing), and no pipeline
version: each trigger runs the pipeline's latest version (KFP >= 2.5). --param key=value
sets a pipeline parameter (the value is read as JSON when it parses, else as a string);
an unknown, missing or mistyped one is refused, checked against --pipeline-file and, unless
that file is uploaded, against the pipeline's latest version on the server.
Prints the recurring run's id, then its UI URL.

Connection: --host or KF_PIPELINES_ENDPOINT (the KFP API: a port-forward of ml-pipeline-ui,
or https://<kubeflow>/pipeline). Credentials: --token / KF_PIPELINES_TOKEN (bearer),
--token-file / KF_PIPELINES_SA_TOKEN_PATH (re-read per request; the in-pod default
/var/run/secrets/kubeflow/pipelines/token is used when present), --cookie /
KF_PIPELINES_COOKIE (e.g. "oauth2_proxy_kubeflow=..." behind Dex + oauth2-proxy).
Multi-user Kubeflow: pass --namespace (your profile namespace).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

from dultra.schedule import (
    ClientConfig,
    KfpAuth,
    KfpClient,
    PipelineSource,
    ScheduleSettingsError,
    ScheduleSpec,
    create_schedule,
    delete_schedule,
    next_trigger,
    parse_cron,
    pipeline_names,
)
from dultra.schedule.models import format_time

HOST_ENV = "KF_PIPELINES_ENDPOINT"  # the kfp SDK's variable for the same thing


def register(subparsers) -> None:
    p = subparsers.add_parser("schedule", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    c = actions.add_parser("create", help="create a recurring run (6-field UTC cron)", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("--cron", required=True,
                   help='6 fields, seconds first, UTC: "0 0 3 * * *" = daily at 03:00:00 UTC')
    c.add_argument("--name", default="dultra-retraining", help="recurring run name (default dultra-retraining)")
    which = c.add_mutually_exclusive_group()
    which.add_argument("--pipeline", default="dultra", help="pipeline name (default dultra)")
    which.add_argument("--pipeline-id", default=None, help="pipeline id (instead of --pipeline)")
    c.add_argument("--pipeline-file", type=Path, default=None,
                   help="compiled pipeline YAML, uploaded as --pipeline if no pipeline has that name")
    c.add_argument("--experiment", default="Default", help="experiment name, created if missing (default Default)")
    c.add_argument("--service-account", default="dultra-pipeline",
                   help="service account of the runs, which creates TrainJobs for nodes > 1 (default dultra-pipeline, "
                        "of manifests/base; empty: the server's default)")
    c.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="pipeline parameter; VALUE is JSON if it parses (3, 1e-5, true), else a string")
    c.add_argument("--start", default=None, help="no trigger before this time (ISO 8601; no zone = UTC)")
    c.add_argument("--end", default=None, help="no trigger after this time (ISO 8601; no zone = UTC)")
    c.add_argument("--replace", action="store_true",
                   help="replace recurring runs with the same name (created first, then the old deleted)")
    _connection_arguments(c)
    c.set_defaults(run=run_create)

    ls = actions.add_parser("list", help="list recurring runs", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    ls.add_argument("--json", action="store_true", help="one JSON array instead of a table")
    _connection_arguments(ls)
    ls.set_defaults(run=run_list)

    d = actions.add_parser("delete", help="delete a recurring run by id or --name", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    d.add_argument("id", nargs="?", default=None, help="recurring run id")
    d.add_argument("--name", default=None, help="delete the recurring run with this (unique) name instead")
    _connection_arguments(d)
    d.set_defaults(run=run_delete)


def _connection_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default=None, help=f"KFP API base URL (default: ${HOST_ENV})")
    p.add_argument("--namespace", default=None, help="Kubeflow profile namespace (multi-user Kubeflow)")
    p.add_argument("--token", default=None, help="bearer token (default: $KF_PIPELINES_TOKEN)")
    p.add_argument("--token-file", default=None,
                   help="file holding a bearer token, re-read per request (default: $KF_PIPELINES_SA_TOKEN_PATH)")
    p.add_argument("--cookie", default=None, help="Cookie header value (default: $KF_PIPELINES_COOKIE)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for each response (default 60)")


def _client(args: argparse.Namespace) -> KfpClient:
    host = args.host or os.environ.get(HOST_ENV)
    if not host:
        raise ScheduleSettingsError(f"give --host (the KFP API URL) or set {HOST_ENV}")
    if not 0 < args.timeout < float("inf"):
        raise ScheduleSettingsError(f"--timeout {args.timeout:g}: must be a positive number of seconds")
    auth = KfpAuth.resolve(token=args.token, token_file=args.token_file, cookie=args.cookie)
    config = ClientConfig(read_timeout_s=args.timeout, connect_timeout_s=min(10.0, args.timeout))
    return KfpClient(host, auth=auth, config=config)


def parse_params(items: list[str]) -> dict:
    """`key=value` strings -> parameters; values parse as JSON when they can."""
    params: dict = {}
    for item in items:
        key, eq, text = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise ScheduleSettingsError(f"--param {item!r}: expected KEY=VALUE")
        if key in params:
            raise ScheduleSettingsError(f"--param {key} is given twice")
        try:
            params[key] = json.loads(text)
        except ValueError:
            params[key] = text  # s3://..., gsm8k, 007: strings as typed
        try:
            json.dumps(params[key], allow_nan=False)
        except ValueError:  # NaN, Infinity, 1e999: Python reads them, JSON cannot carry them
            raise ScheduleSettingsError(f"--param {item!r}: not a finite number; KFP parameters are JSON") from None
    return params


def parse_time(text: str | None, flag: str) -> datetime | None:
    """ISO 8601 date or date-time; a time without a zone is UTC, like the cron."""
    if text is None:
        return None
    try:
        t = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ScheduleSettingsError(f"{flag} {text!r}: expected ISO 8601, e.g. 2030-01-31 or "
                                    f"2030-01-31T03:00:00Z") from None
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def run_create(args: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    schedule = parse_cron(args.cron, now=now)
    start, end = parse_time(args.start, "--start"), parse_time(args.end, "--end")
    if start and end and end <= start:
        raise ScheduleSettingsError(f"--end {format_time(end)} is not after --start {format_time(start)}")
    if end and end <= now:
        raise ScheduleSettingsError(f"--end {format_time(end)} is in the past: the schedule would never run")
    begin = max(now, start) if start else now
    if end and schedule.every is None and ((first := schedule.next_after(begin)) is None or first > end):
        raise ScheduleSettingsError(f"cron {schedule.expression!r} never fires between {format_time(begin)} and "
                                    f"--end {format_time(end)}")
    if args.pipeline_file is not None and args.pipeline_id:
        raise ScheduleSettingsError("--pipeline-file uploads a pipeline by --pipeline name; not with --pipeline-id")
    params = parse_params(args.param)
    if "s3_destination" in params:  # the dultra pipeline's first step would refuse it, every night
        from dultra.storage.uri import parse_base_uri

        parse_base_uri(str(params["s3_destination"]))
    spec = ScheduleSpec(name=args.name, cron=schedule.expression, parameters=params,
                        start_time=start, end_time=end, service_account=args.service_account)
    source = PipelineSource(name=args.pipeline, pipeline_id=args.pipeline_id, file=args.pipeline_file)
    with _client(args) as kfp:
        result = create_schedule(kfp, spec, source, namespace=args.namespace, experiment=args.experiment,
                                 replace=args.replace)
    run, pipeline = result.recurring_run, result.pipeline
    if result.uploaded:
        print(f"uploaded {args.pipeline_file} as pipeline {pipeline.name!r} ({pipeline.pipeline_id})", file=sys.stderr)
    elif args.pipeline_file is not None:
        print(f"pipeline {pipeline.name!r} exists ({pipeline.pipeline_id}); {args.pipeline_file} was not uploaded "
              f"(upload a new version to change what runs)", file=sys.stderr)
    if result.unchecked:
        print(f"dultra: note: --param not checked ({result.unchecked}); a wrong or missing one fails each run "
              f"when it triggers", file=sys.stderr)
    if result.replaced:
        print(f"deleted the recurring run(s) it replaces: {', '.join(result.replaced)}", file=sys.stderr)
    upcoming = schedule.next_times(begin, 3)
    if end:
        upcoming = [t for t in upcoming if t <= end]
    print(f"created recurring run {run.display_name!r} ({run.recurring_run_id}): cron {schedule.expression!r} (UTC), "
          f"pipeline {pipeline.name!r} latest version, experiment {result.experiment.display_name!r}, "
          f"max concurrency 1, no catch-up; next: "
          f"{', '.join(format_time(t) for t in upcoming) if upcoming else '-'}", file=sys.stderr)
    print(run.recurring_run_id)
    print(result.url)
    return 0


def run_list(args: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    with _client(args) as kfp:
        runs = kfp.list_recurring_runs(namespace=args.namespace)
        names = pipeline_names(kfp, runs)
    rows = []
    for r in runs:
        upcoming = next_trigger(r, now)
        trigger = r.cron if r.cron is not None else (f"every {r.interval_s}s" if r.interval_s else "-")
        rows.append({
            "id": r.recurring_run_id, "name": r.display_name, "cron": trigger, "status": r.status,
            "pipeline": names.get(r.pipeline_id, r.pipeline_id or "-"), "pipeline_id": r.pipeline_id,
            "version": r.pipeline_version_id or "latest",
            "next_trigger": format_time(upcoming) if upcoming else None,
        })
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no recurring runs", file=sys.stderr)
        return 0
    columns = [("ID", "id"), ("NAME", "name"), ("CRON (UTC)", "cron"), ("STATUS", "status"),
               ("PIPELINE", "pipeline"), ("VERSION", "version"), ("NEXT (UTC)", "next_trigger")]
    table = [[h for h, _ in columns]] + [[str(row[k] or "-") for _, k in columns] for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    for line in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip())
    return 0


def run_delete(args: argparse.Namespace) -> int:
    with _client(args) as kfp:
        deleted = delete_schedule(kfp, recurring_run_id=args.id, name=args.name, namespace=args.namespace)
    print(f"deleted recurring run {deleted}", file=sys.stderr)
    print(deleted)
    return 0
