"""Errors of the Kubeflow Pipelines client and `dultra schedule`; the CLI prints each in one line.

All derive from `dultra.errors.DultraError`, so `except DultraError` covers them. httpx's
own exceptions never escape `dultra.schedule`: `client.KfpClient` maps them onto these.
"""

from __future__ import annotations

from dultra.errors import DultraError


class KfpError(DultraError):
    """Base of every failure talking to the Kubeflow Pipelines API."""


class KfpUnreachable(KfpError):
    """No HTTP answer: refused connection, unknown host, TLS failure or timeout."""


class KfpAuthError(KfpError):
    """The API (or the auth proxy in front of it) refused the credentials: 401, 403, or a
    redirect to a login page."""


class KfpRequestError(KfpError, ValueError):
    """The API rejected the request as invalid (another 4xx), e.g. a parameter the pipeline
    does not declare."""


class KfpServerError(KfpError):
    """The API failed (5xx) or answered something that is not KFP JSON."""


class PipelineNotFound(KfpError, LookupError):
    """No pipeline with that name or id (and no --pipeline-file to upload)."""


class RecurringRunNotFound(KfpError, LookupError):
    """No recurring run with that id or name."""


class AmbiguousName(KfpError, LookupError):
    """Several pipelines, experiments or recurring runs share the name; use an id."""


class RecurringRunExists(KfpError):
    """A recurring run with this name already exists (create refuses without --replace)."""


class BadCron(KfpError, ValueError):
    """A cron expression KFP would reject, misread (5 fields) or never fire."""


class ScheduleSettingsError(KfpError, ValueError):
    """Local settings that cannot work: host URL, token file, --param, --start/--end, pipeline file."""
