"""S3 URIs and the layout of a publish prefix.

    s3://bucket/prefix/                 the base a checkpoint series is published under
    s3://bucket/prefix/runs/<run-id>/   one immutable run: the checkpoint files + manifest.json
    s3://bucket/prefix/latest           the pointer: a small JSON object naming one run

`dultra pull` accepts the base (meaning its `latest`), `.../latest`, or `.../runs/<id>`.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from dultra.storage.errors import InvalidURI

MANIFEST_NAME = "manifest.json"
POINTER_NAME = "latest"
RUNS_DIR = "runs"

# Safe as one S3 key segment and as a directory name on every OS; no `/`, so a run id can
# never reach outside `runs/`.
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# Lenient on purpose (S3-compatible servers allow more than AWS does): S3 itself reports a
# bad name; here we only refuse what cannot be a bucket at all.
_BUCKET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,254}$")


@dataclass(frozen=True)
class S3Location:
    """A bucket and a key prefix without leading or trailing slashes ('' = bucket root)."""

    bucket: str
    prefix: str

    def key(self, *parts: str) -> str:
        """The object key for `parts` under this prefix."""
        return "/".join(p for p in (self.prefix, *parts) if p)

    def uri(self, *parts: str) -> str:
        return f"s3://{self.bucket}/{self.key(*parts)}"

    def run(self, run_id: str) -> S3Location:
        """The location of `runs/<run_id>` under this base."""
        return S3Location(self.bucket, self.key(RUNS_DIR, check_run_id(run_id)))


@dataclass(frozen=True)
class PullSource:
    """What `dultra pull` was asked for: a base and either its pointer or one run."""

    base: S3Location
    run_id: str | None  # None: follow `latest`


def parse_s3_uri(text: str) -> S3Location:
    """`s3://bucket[/prefix][/]` -> S3Location; anything else is an InvalidURI."""
    if not text.startswith("s3://"):
        raise InvalidURI(f"{text!r} is not an S3 URI (expected s3://bucket/prefix)")
    bucket, _, prefix = text[len("s3://"):].partition("/")
    if not _BUCKET.match(bucket):
        raise InvalidURI(f"{text!r} has no valid bucket name")
    prefix = prefix.strip("/")
    if "//" in prefix or any(part in (".", "..") for part in prefix.split("/")):
        raise InvalidURI(f"{text!r}: empty, '.' or '..' path segments are not allowed")
    return S3Location(bucket, prefix)


def parse_base_uri(text: str, command: str = "publish") -> S3Location:
    """The base to publish under (or list); naming a run or the pointer is a mistake, not a base."""
    source = parse_pull_uri(text)
    if source.run_id is not None or source.base != parse_s3_uri(text):
        raise InvalidURI(f"{text!r}: {command} takes the base prefix (s3://bucket/prefix), "
                         "not its `latest` or a `runs/<id>`")
    return source.base


def parse_pull_uri(text: str) -> PullSource:
    """`s3://b/p`, `s3://b/p/latest` -> latest of s3://b/p; `s3://b/p/runs/ID` -> that run."""
    location = parse_s3_uri(text)
    parts = location.prefix.split("/") if location.prefix else []
    if parts and parts[-1] == POINTER_NAME:
        return PullSource(S3Location(location.bucket, "/".join(parts[:-1])), None)
    if len(parts) >= 2 and parts[-2] == RUNS_DIR:
        return PullSource(S3Location(location.bucket, "/".join(parts[:-2])), check_run_id(parts[-1]))
    return PullSource(location, None)


def check_run_id(run_id: str) -> str:
    if not _RUN_ID.match(run_id):
        raise InvalidURI(f"run id {run_id!r} must be 1-128 of [A-Za-z0-9._-], starting with a letter or digit")
    return run_id


def new_run_id(now: datetime | None = None) -> str:
    """UTC time + 6 random hex digits: sorts by start time, and two publishers starting in
    the same second still get different ids."""
    now = now or datetime.now(UTC)
    return f"{now.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"
