"""Scheduled retraining: Kubeflow Pipelines recurring runs over the REST API, without kfp.

    from dultra.schedule import KfpAuth, KfpClient, PipelineSource, ScheduleSpec, create_schedule
    with KfpClient("http://localhost:8080", auth=KfpAuth.resolve()) as kfp:
        create_schedule(kfp, ScheduleSpec(name="dultra-retraining", cron="0 0 3 * * *"),
                        PipelineSource(name="dultra"))

- `cron`: the 6-field, seconds-first, UTC cron KFP uses; validation and trigger times.
- `client`: `KfpClient`, the v2beta1 endpoints dultra needs, with timeouts and typed errors.
- `auth`: bearer token (inline, env, or a rotating token file) and session cookie.
- `service`: create (upload the pipeline if missing), list, delete.
The command line is `dultra schedule` (`dultra/commands/schedule.py`).
"""

from dultra.schedule.auth import KfpAuth
from dultra.schedule.client import ClientConfig, KfpClient
from dultra.schedule.cron import CronSchedule, parse_cron
from dultra.schedule.errors import (
    AmbiguousName,
    BadCron,
    KfpAuthError,
    KfpError,
    KfpRequestError,
    KfpServerError,
    KfpUnreachable,
    PipelineNotFound,
    RecurringRunExists,
    RecurringRunNotFound,
    ScheduleSettingsError,
)
from dultra.schedule.models import Experiment, Pipeline, PipelineVersion, RecurringRun, ScheduleSpec
from dultra.schedule.service import (
    CreateResult,
    PipelineSource,
    create_schedule,
    delete_schedule,
    next_trigger,
    pipeline_names,
    resolve_experiment,
    resolve_pipeline,
)

__all__ = [
    "AmbiguousName", "BadCron", "ClientConfig", "CreateResult", "CronSchedule", "Experiment", "KfpAuth",
    "KfpAuthError", "KfpClient", "KfpError", "KfpRequestError", "KfpServerError", "KfpUnreachable",
    "Pipeline", "PipelineNotFound", "PipelineSource", "PipelineVersion", "RecurringRun", "RecurringRunExists",
    "RecurringRunNotFound", "ScheduleSettingsError", "ScheduleSpec", "create_schedule", "delete_schedule",
    "next_trigger", "parse_cron", "pipeline_names", "resolve_experiment", "resolve_pipeline",
]
