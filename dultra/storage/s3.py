"""The boto3 client and the translation of its exceptions into dultra's typed errors.

Endpoint, region and credentials follow boto3's standard resolution (AWS_ENDPOINT_URL /
AWS_ENDPOINT_URL_S3, AWS_PROFILE, AWS_CONFIG_FILE profiles, the credentials chain); an
explicit `endpoint_url` or `profile` overrides them.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import boto3
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
    ProfileNotFound,
    ReadTimeoutError,
)

from dultra.storage.errors import (
    AccessDenied,
    BucketNotFound,
    EndpointUnreachable,
    NoCredentials,
    StorageError,
)

MiB = 1 << 20


@dataclass(frozen=True)
class S3Options:
    """How to reach S3 and how to move bytes; the defaults suit AWS and S3-compatible servers."""

    endpoint_url: str | None = None  # overrides AWS_ENDPOINT_URL and the profile's; None: boto3 decides
    profile: str | None = None  # AWS profile; None: AWS_PROFILE, else the default credentials chain
    part_size: int = 64 * MiB  # files larger than this move in parts of this size (S3 minimum 5 MiB)
    max_concurrency: int = 8  # parallel part transfers per file
    progress: bool | None = None  # byte progress bar on stderr; None: only when stderr is a terminal
    connect_timeout_s: float = 10.0  # per attempt, to open a connection
    read_timeout_s: float = 60.0  # per attempt, the longest silence of the server once a request is sent
    max_attempts: int = 5  # per request, the first included; each retry says so on stderr

    def transfer_config(self) -> TransferConfig:
        return TransferConfig(multipart_threshold=self.part_size, multipart_chunksize=self.part_size,
                              max_concurrency=self.max_concurrency)


def make_client(options: S3Options | None = None):
    """A boto3 S3 client with explicit timeouts and standard retries, each retry noted on stderr
    (a server that never answers would otherwise cost max_attempts x read_timeout_s in silence).

    Checksums are sent and validated only when an operation requires them: boto3 >= 1.36
    otherwise adds CRC headers that several S3-compatible servers reject. Integrity does
    not depend on them: every file's sha256 is in the manifest and checked on pull.
    """
    options = options or S3Options()
    config = Config(
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        connect_timeout=options.connect_timeout_s,
        read_timeout=options.read_timeout_s,
        retries={"mode": "standard", "max_attempts": options.max_attempts},
    )
    with translate_errors("creating the S3 client"):
        session = boto3.session.Session(profile_name=options.profile)
        try:
            client = session.client("s3", endpoint_url=options.endpoint_url, config=config)
        except ValueError as err:  # "Invalid endpoint: host:port", from the flag or AWS_ENDPOINT_URL
            raise StorageError(f"creating the S3 client: {err}; an endpoint URL starts with http:// or "
                               "https:// (--endpoint-url, AWS_ENDPOINT_URL)") from None
    client.meta.events.register("needs-retry.s3", retry_note(client.meta.endpoint_url, options.max_attempts))
    return client


def retry_note(endpoint_url: str, max_attempts: int):
    """A `needs-retry` hook that only observes: one stderr line per failed attempt boto3 retries
    (no answer, or a 5xx / 429 answer); boto3's own handler still decides."""

    def note(attempts: int, caught_exception=None, response=None, operation=None, **_) -> None:
        if attempts >= max_attempts:
            return
        if caught_exception is not None:
            why = f"did not answer ({type(caught_exception).__name__})"
        elif response is not None and (response[0].status_code >= 500 or response[0].status_code == 429):
            why = f"answered {response[0].status_code}"
        else:
            return
        print(f"dultra: note: {endpoint_url} {why} to {operation.name}; retrying, attempt {attempts + 1} "
              f"of {max_attempts}", file=sys.stderr, flush=True)

    return note


def error_code(err: ClientError) -> str:
    return str(err.response.get("Error", {}).get("Code", ""))


def http_status(err: ClientError) -> int:
    return int(err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def is_not_found(err: ClientError) -> bool:
    """A missing key (GET answers NoSuchKey; HEAD has no body, so only its status)."""
    return error_code(err) in ("NoSuchKey", "404", "NotFound")


@contextmanager
def translate_errors(doing: str, bucket: str | None = None) -> Iterator[None]:
    """Turn boto3's exceptions raised while `doing` into one-line dultra errors.

    Errors the caller handles itself (a missing key, a failed precondition) must be caught
    inside the block; whatever escapes is final.
    """
    try:
        yield
    except (BotoCoreError, ClientError, Boto3Error) as err:
        raise translate(err, doing, bucket) from None


def translate(err: Exception, doing: str, bucket: str | None = None) -> StorageError:
    # boto3 wraps the ClientError of a failed upload in S3UploadFailedError (raised inside its
    # `except`, without `from`), and a download's last error in RetriesExceededError.
    if isinstance(err, Boto3Error):
        cause = getattr(err, "last_exception", None) or err.__cause__ or err.__context__
        if isinstance(cause, BotoCoreError | ClientError):
            err = cause
    if isinstance(err, NoCredentialsError | PartialCredentialsError):
        return NoCredentials(f"{doing}: no AWS credentials ({err}); set AWS_ACCESS_KEY_ID and "
                             "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or --profile")
    if isinstance(err, ProfileNotFound):
        return NoCredentials(f"{doing}: {err}")
    if isinstance(err, EndpointConnectionError):
        return EndpointUnreachable(f"{doing}: cannot reach {err.kwargs.get('endpoint_url', 'the endpoint')}; "
                                   "check --endpoint-url / AWS_ENDPOINT_URL")
    if isinstance(err, ReadTimeoutError):
        return EndpointUnreachable(f"{doing}: {err.kwargs.get('endpoint_url', 'the endpoint')} accepted the "
                                   "connection but never answered; check --endpoint-url / AWS_ENDPOINT_URL "
                                   "(is it an S3 server?)")
    if isinstance(err, ClientError):
        code, status = error_code(err), http_status(err)
        if code == "NoSuchBucket" or (err.operation_name == "HeadBucket" and status == 404):
            return BucketNotFound(f"{doing}: bucket {bucket!r} does not exist (or the endpoint is not the S3 "
                                  "server that holds it: check --endpoint-url / AWS_ENDPOINT_URL)")
        if status == 403 or code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return AccessDenied(f"{doing}: access denied ({code or status}); check the credentials "
                                "and the bucket policy")
        message = err.response.get("Error", {}).get("Message", "")
        return StorageError(f"{doing}: S3 answered {code or status}" + (f": {message}" if message else ""))
    return StorageError(f"{doing}: {err}")
