"""Storage errors a user can act on; the CLI prints each in one line.

They all derive from `dultra.errors.DultraError`, so `except DultraError` in a caller
(the CLI, a Kubeflow component) covers them. boto3's own exceptions never escape
`dultra.storage`: `s3.translate_errors` maps them onto these.
"""

from __future__ import annotations

from dultra.errors import DultraError


class StorageError(DultraError):
    """Base of every publish / pull failure."""


class NotACheckpoint(StorageError):
    """A directory without config.json and safetensors weights: nothing a user could load."""


class InvalidURI(StorageError, ValueError):
    """An S3 URI or run id that cannot be used as given."""


class NoCredentials(StorageError):
    """boto3 found no AWS credentials (environment, profile, or instance role)."""


class AccessDenied(StorageError):
    """The credentials were refused for this bucket or key."""


class EndpointUnreachable(StorageError):
    """The S3 endpoint did not answer (wrong --endpoint-url / AWS_ENDPOINT_URL, or down)."""


class BucketNotFound(StorageError):
    """The bucket does not exist."""


class PointerNotFound(StorageError):
    """The prefix has no `latest` pointer: nothing was published there yet."""


class RunNotFound(StorageError):
    """No object at all under `runs/<id>/`."""


class RunExists(StorageError):
    """`runs/<id>/` already holds objects; runs are immutable, so publish refuses."""


class IncompleteRun(StorageError):
    """A run without its manifest (the publish never finished) or with objects missing."""


class IntegrityError(StorageError):
    """What was downloaded differs from what the manifest (or the pointer) promises."""


class ChecksumMismatch(IntegrityError):
    """A file's size or sha256 differs from its manifest entry."""


class PointerRaceLost(StorageError):
    """Every compare-and-swap of `latest` lost to another writer; the run itself is complete."""


class DestinationNotEmpty(StorageError):
    """pull would overwrite a non-empty directory: without --force, or one that --force may not replace."""
