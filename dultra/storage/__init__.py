"""Publish checkpoints to S3 (or any S3-compatible server) and pull them back, verified.

    from dultra.storage import publish, pull
    result = publish("./ckpt", "s3://bucket/dultra/llada-math", metrics={"accuracy": 0.78})
    pull("s3://bucket/dultra/llada-math", "./ckpt-copy")     # what `latest` names
    list_runs("s3://bucket/dultra/llada-math")               # every run there, newest first

Layout under a prefix: `runs/<id>/` (immutable: files + manifest.json, written last) and
`latest` (a JSON pointer moved by compare-and-swap). See `pointer.py` for the semantics
under concurrent publishers. No Kubeflow or Kubernetes here: components call these.
"""

from dultra.storage.errors import (
    AccessDenied,
    BucketNotFound,
    ChecksumMismatch,
    DestinationNotEmpty,
    EndpointUnreachable,
    IncompleteRun,
    IntegrityError,
    InvalidURI,
    NoCredentials,
    NotACheckpoint,
    PointerNotFound,
    PointerRaceLost,
    RunExists,
    RunNotFound,
    StorageError,
)
from dultra.storage.listing import RunInfo, list_runs
from dultra.storage.manifest import SCHEMA_VERSION, FileEntry, Manifest
from dultra.storage.pointer import Pointer, move_latest, read_pointer
from dultra.storage.publish import PublishResult, publish
from dultra.storage.pull import PullResult, pull
from dultra.storage.s3 import S3Options, make_client
from dultra.storage.uri import PullSource, S3Location, new_run_id, parse_pull_uri, parse_s3_uri

__all__ = [
    "AccessDenied", "BucketNotFound", "ChecksumMismatch", "DestinationNotEmpty", "EndpointUnreachable",
    "FileEntry", "IncompleteRun", "IntegrityError", "InvalidURI", "list_runs", "Manifest", "NoCredentials", "NotACheckpoint", "Pointer",
    "PointerNotFound", "PointerRaceLost", "PublishResult", "PullResult", "PullSource", "RunExists", "RunInfo",
    "RunNotFound", "S3Location", "S3Options", "SCHEMA_VERSION", "StorageError", "make_client",
    "move_latest", "new_run_id", "parse_pull_uri", "parse_s3_uri", "publish", "pull", "read_pointer",
]
