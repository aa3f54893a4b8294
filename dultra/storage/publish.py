"""Publish a checkpoint directory as an immutable run and move `latest` to it.

    dultra publish ./ckpt s3://bucket/dultra/llada-math --metrics metrics.json --base-model GSAI-ML/LLaDA-8B-Instruct

Order of writes, which is what makes a killed publish harmless:
1. every file to `runs/<id>/<path>` (multipart above `S3Options.part_size`);
2. `runs/<id>/manifest.json`, with `If-None-Match: *` so a run is committed exactly once;
3. the `latest` pointer, by compare-and-swap (see `dultra.storage.pointer`).
A publish stopped before 2 leaves a run without a manifest, which `pull` refuses; stopped
before 3, a complete run that `latest` does not name yet. Incomplete multipart uploads of
a killed process stay billed until aborted: give the bucket a lifecycle rule
(AbortIncompleteMultipartUpload).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from dultra.storage.errors import RunExists, StorageError
from dultra.storage.manifest import (
    Manifest,
    check_checkpoint,
    detect_git_commit,
    scan_directory,
    utc_now,
)
from dultra.storage.pointer import Pointer, lost_race, move_latest, read_pointer
from dultra.storage.progress import ByteProgress
from dultra.storage.s3 import S3Options, make_client, translate_errors
from dultra.storage.uri import (
    MANIFEST_NAME,
    S3Location,
    check_run_id,
    new_run_id,
    parse_base_uri,
)


@dataclass(frozen=True)
class PublishResult:
    """What a publish wrote."""

    run_id: str  # the new run's id
    run_uri: str  # s3://bucket/prefix/runs/<id>/, pullable as is
    manifest: Manifest  # the manifest written last in the run
    pointer: Pointer  # `latest` as this publisher left it (it names this run)


def publish(
    checkpoint_dir: str | Path,
    uri: str | S3Location,
    *,
    run_id: str | None = None,
    config: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    base_model: str | None = None,
    git_commit: str | None = None,
    options: S3Options | None = None,
    client=None,
) -> PublishResult:
    """Upload `checkpoint_dir` to `<uri>/runs/<run_id>/`, write its manifest, move `latest`.

    run_id: default UTC time + random suffix. git_commit: default the dultra source's commit
    (`manifest.detect_git_commit`: its checkout's HEAD, else $DULTRA_GIT_COMMIT). client: an
    existing boto3 S3 client (else one is made from `options`).
    """
    root = Path(checkpoint_dir)
    check_checkpoint(root)  # before `latest` could come to name something no one can load
    for name, value in (("config", config), ("metrics", metrics)):
        try:  # now, as the manifest writes it (sorted keys), not after the whole upload
            json.dumps(value, sort_keys=True, allow_nan=False)  # NaN and Infinity are not JSON
        except (TypeError, ValueError) as err:
            raise StorageError(f"the {name} cannot be written to the manifest as JSON: {err}") from None
    base = uri if isinstance(uri, S3Location) else parse_base_uri(uri)
    run_id = check_run_id(run_id or new_run_id())
    run = base.run(run_id)
    options = options or S3Options()
    client = client or make_client(options)
    with translate_errors(f"publishing to {base.uri()}", base.bucket):
        client.head_bucket(Bucket=base.bucket)
        listed = client.list_objects_v2(Bucket=base.bucket, Prefix=run.key() + "/", MaxKeys=1)
        finished = listed.get("KeyCount", 0) and client.list_objects_v2(
            Bucket=base.bucket, Prefix=run.key(MANIFEST_NAME), MaxKeys=1).get("KeyCount", 0)
    if finished:
        raise RunExists(f"{run.uri()}/ already exists; runs are immutable (choose another --run-id)")
    if listed.get("KeyCount", 0):
        raise RunExists(f"{run.uri()}/ holds an unfinished publish (no {MANIFEST_NAME}: killed, or still "
                        "running): delete that prefix, or choose another --run-id")
    read_pointer(client, base)  # an unreadable `latest` fails now, not after the whole upload

    files = scan_directory(root, options.progress)  # after the checks above: hashing 16 GB takes a while
    manifest = Manifest(run_id=run_id, created=utc_now(), files=files, config=config, metrics=metrics,
                        base_model=base_model, git_commit=git_commit or detect_git_commit())
    transfer = options.transfer_config()
    with ByteProgress(manifest.total_bytes, f"publish {run_id}", options.progress) as progress:
        for entry in files:
            with translate_errors(f"uploading {entry.path} to {run.uri(entry.path)}", base.bucket):
                client.upload_file(str(root / entry.path), base.bucket, run.key(entry.path),
                                   Config=transfer, Callback=progress)

    raw = manifest.to_json()
    with translate_errors(f"writing {run.uri(MANIFEST_NAME)}", base.bucket):
        try:
            client.put_object(Bucket=base.bucket, Key=run.key(MANIFEST_NAME), Body=raw,
                              ContentType="application/json", IfNoneMatch="*")
        except ClientError as err:
            if not lost_race(err):
                raise
            raise RunExists(f"{run.uri(MANIFEST_NAME)} was written by another publisher with the same "
                            "run id; its files may now mix both uploads (use unique run ids)") from None

    pointer = move_latest(client, base, run_id, hashlib.sha256(raw).hexdigest())
    return PublishResult(run_id=run_id, run_uri=run.uri() + "/", manifest=manifest, pointer=pointer)
