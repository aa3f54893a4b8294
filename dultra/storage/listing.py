"""The runs published under a prefix: which are complete, which one `latest` names.

    from dultra.storage import list_runs
    for run in list_runs("s3://bucket/dultra/llada-math"):
        print(run.run_id, run.status, run.latest)

Every run's manifest is read (a few at a time), so the listing shows what `pull` would
find: a run without manifest.json is an unfinished publish (killed, or still running),
one whose manifest does not parse is invalid. Sizes are the manifest's, not re-listed.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from dultra.storage.errors import IncompleteRun, IntegrityError, InvalidURI
from dultra.storage.manifest import Manifest
from dultra.storage.pointer import read_pointer
from dultra.storage.pull import read_manifest
from dultra.storage.s3 import S3Options, make_client, translate_errors
from dultra.storage.uri import POINTER_NAME, RUNS_DIR, S3Location, check_run_id, parse_base_uri

COMPLETE, UNFINISHED, INVALID, MISSING = "complete", "unfinished", "invalid", "missing"


@dataclass(frozen=True)
class RunInfo:
    """One entry of `runs/` under a base prefix, or a `latest` that does not parse (run_id `latest`, INVALID)."""

    run_id: str  # the directory name under runs/
    uri: str  # s3://bucket/prefix/runs/<id>/, pullable as is when complete
    # COMPLETE (a valid manifest), UNFINISHED (no manifest.json), INVALID (see problem),
    # MISSING (`latest` names it but runs/<id>/ holds nothing: deleted)
    status: str
    latest: bool  # the `latest` pointer names this run
    manifest: Manifest | None = None  # set when COMPLETE
    problem: str | None = None  # why the run is INVALID


def list_runs(uri: str | S3Location, *, options: S3Options | None = None, client=None,
              max_workers: int = 8) -> list[RunInfo]:
    """Every run under the base `uri`, newest first by publish time; the runs without a valid
    manifest, which have none, come first. An empty list when nothing was published there."""
    base = uri if isinstance(uri, S3Location) else parse_base_uri(uri, "runs")
    client = client or make_client(options)
    with translate_errors(f"listing {base.uri(RUNS_DIR)}/", base.bucket):
        client.head_bucket(Bucket=base.bucket)
        prefix = base.key(RUNS_DIR) + "/"
        names = [p["Prefix"][len(prefix):].rstrip("/")
                 for page in client.get_paginator("list_objects_v2").paginate(
                     Bucket=base.bucket, Prefix=prefix, Delimiter="/")
                 for p in page.get("CommonPrefixes", [])]
    pointer, broken = None, None
    try:
        pointer = read_pointer(client, base)
    except IntegrityError as err:  # still list the runs: their ids are how to pull one now
        broken = RunInfo(POINTER_NAME, base.uri(POINTER_NAME), INVALID, False, problem=str(err))
    latest = pointer[0].run_id if pointer else None
    with ThreadPoolExecutor(max_workers=max_workers) as pool:
        runs = list(pool.map(lambda name: _inspect(client, base, name, name == latest), names))
    if latest is not None and latest not in names:
        runs.append(RunInfo(latest, base.run(latest).uri() + "/", MISSING, True,
                            problem="`latest` names it, but its objects are gone"))
    if broken:
        runs.append(broken)
    return sorted(runs, key=lambda r: (r.manifest.created if r.manifest else "~", r.run_id), reverse=True)


def _inspect(client, base: S3Location, name: str, latest: bool) -> RunInfo:
    try:
        run = base.run(check_run_id(name))
    except InvalidURI as err:
        return RunInfo(name, base.uri(RUNS_DIR, name) + "/", INVALID, latest, problem=str(err))
    try:
        return RunInfo(name, run.uri() + "/", COMPLETE, latest, manifest=read_manifest(client, run))
    except IncompleteRun:
        return RunInfo(name, run.uri() + "/", UNFINISHED, latest)
    except IntegrityError as err:
        return RunInfo(name, run.uri() + "/", INVALID, latest, problem=str(err))
