"""The `latest` pointer: a small JSON object naming one complete run, moved by compare-and-swap.

Semantics (what readers and concurrent publishers can rely on):
- The pointer only ever names a complete run: a publisher moves it after that run's
  manifest is written, so a publish killed at any point leaves it where it was.
- Every move is one conditional PUT: `If-None-Match: *` when there is no pointer yet,
  `If-Match: <etag read>` afterwards. A reader sees the old pointer or the new one, never
  a torn one, and no move is silently lost: a writer whose condition fails re-reads and
  tries again (bounded, with jittered backoff).
- Last to commit wins. Two publishers racing both complete their runs; `latest` ends on
  whichever moved it last, and the other stays reachable as `runs/<id>`. `generation`
  grows by one per move and `previous_run_id` names the run replaced, so the history of
  moves can be followed and a reader can tell that the pointer moved.
It does not order runs by start time or by metrics: "latest" means "most recently
published", and a slow publisher that finishes last wins even if it started first.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass

from botocore.exceptions import ClientError

from dultra.storage.errors import IntegrityError, PointerRaceLost
from dultra.storage.manifest import SHA256_HEX, utc_now
from dultra.storage.s3 import error_code, http_status, is_not_found, translate_errors
from dultra.storage.uri import POINTER_NAME, S3Location, check_run_id

POINTER_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Pointer:
    """The content of `<prefix>/latest`."""

    run_id: str  # the run `latest` names; its manifest was complete before the pointer moved
    manifest_sha256: str  # sha256 of that run's manifest.json; pull checks it
    generation: int  # 1 on the first publish, +1 per move
    previous_run_id: str | None  # the run this move replaced (None on the first publish)
    updated: str  # ISO 8601 UTC time of the move
    schema_version: int = POINTER_SCHEMA_VERSION  # bumped on incompatible changes

    def to_json(self) -> bytes:
        return (json.dumps(asdict(self), indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, raw: bytes, where: str) -> Pointer:
        try:
            data = json.loads(raw)
            if data["schema_version"] != POINTER_SCHEMA_VERSION:
                raise ValueError(f"schema_version {data['schema_version']!r}")
            if not SHA256_HEX.match(str(data["manifest_sha256"])):
                raise ValueError(f"manifest_sha256 {data['manifest_sha256']!r}")
            return cls(run_id=check_run_id(data["run_id"]), manifest_sha256=data["manifest_sha256"],
                       generation=int(data["generation"]), previous_run_id=data.get("previous_run_id"),
                       updated=str(data["updated"]), schema_version=data["schema_version"])
        except (ValueError, KeyError, TypeError) as err:
            raise IntegrityError(f"{where} is not a valid pointer ({type(err).__name__}: {err}); "
                                 "delete it or publish to a new prefix") from None


def read_pointer(client, base: S3Location) -> tuple[Pointer, str] | None:
    """The pointer and its ETag, or None when the prefix has no pointer yet."""
    with translate_errors(f"reading {base.uri(POINTER_NAME)}", base.bucket):
        try:
            response = client.get_object(Bucket=base.bucket, Key=base.key(POINTER_NAME))
        except ClientError as err:
            if is_not_found(err):
                return None
            raise
        raw = response["Body"].read()
    return Pointer.from_json(raw, base.uri(POINTER_NAME)), response["ETag"]


def move_latest(client, base: S3Location, run_id: str, manifest_sha256: str,
                attempts: int = 10, backoff_s: float = 0.05) -> Pointer:
    """Point `latest` at `run_id` (whose manifest must already be written); returns the new pointer.

    Raises PointerRaceLost only if every one of `attempts` compare-and-swaps lost.
    """
    where = base.uri(POINTER_NAME)
    for attempt in range(attempts):
        current = read_pointer(client, base)
        if attempt and current and (current[0].run_id, current[0].manifest_sha256) == (run_id, manifest_sha256):
            # Our earlier PUT landed but its answer was lost (boto3 retried it into a 412).
            return current[0]
        pointer = Pointer(
            run_id=run_id, manifest_sha256=manifest_sha256,
            generation=current[0].generation + 1 if current else 1,
            previous_run_id=current[0].run_id if current else None, updated=utc_now(),
        )
        condition = {"IfMatch": current[1]} if current else {"IfNoneMatch": "*"}
        with translate_errors(f"moving {where}", base.bucket):
            try:
                client.put_object(Bucket=base.bucket, Key=base.key(POINTER_NAME), Body=pointer.to_json(),
                                  ContentType="application/json", **condition)
                return pointer
            except ClientError as err:
                if not lost_race(err):
                    raise
        # Jitter keeps racing writers from colliding again in lockstep.
        time.sleep(random.uniform(0, backoff_s * 2**min(attempt, 5)))
    raise PointerRaceLost(f"{where}: lost {attempts} compare-and-swaps to other publishers; "
                          f"runs/{run_id} is complete but `latest` does not name it")


def lost_race(err: ClientError) -> bool:
    """412: the pointer changed since we read it (or appeared, for If-None-Match).
    409: S3 saw a concurrent conditional write. 404: it was deleted since we read it."""
    return http_status(err) in (409, 412) or error_code(err) in (
        "PreconditionFailed", "ConditionalRequestConflict") or is_not_found(err)
