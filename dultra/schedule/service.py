"""Scheduled retraining on Kubeflow Pipelines: create, list and delete recurring runs.

    from dultra.schedule import KfpClient, PipelineSource, ScheduleSpec, create_schedule, parse_cron
    with KfpClient("http://localhost:8080") as kfp:
        spec = ScheduleSpec(name="dultra-retraining", cron=parse_cron("0 0 3 * * *").expression,
                            parameters={"task": "gsm8k"})
        result = create_schedule(kfp, spec, PipelineSource(name="dultra", file=Path("pipelines/dultra_pipeline.yaml")))
        print(result.recurring_run.recurring_run_id, result.url)

What a created recurring run is (`ScheduleSpec.to_json`): cron trigger, max_concurrency 1,
no_catchup true, enabled, in an experiment (created if missing), and a pipeline reference
WITHOUT a version id. Since KFP 2.5 (kubeflow/pipelines#11560) that means the latest
version of the pipeline is resolved at every trigger, so uploading a new version of
`dultra` changes what the next retraining runs, without touching the schedule. Older KFP
backends resolve the latest version once, when the recurring run is created.

Order of `create_schedule`, so that a failure leaves as little behind as possible: check
the parameters against the pipeline file if one was given, check the name is free (or
--replace), find the pipeline (upload it only if missing and a file was given), unless it
was uploaded check the parameters against its latest version on the server, find or create
the experiment, create the recurring run, then delete the ones it replaces.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TypeGuard

import yaml

from dultra.errors import yaml_problem
from dultra.schedule.client import KfpClient
from dultra.schedule.cron import parse_cron
from dultra.schedule.errors import (
    AmbiguousName,
    BadCron,
    KfpAuthError,
    KfpError,
    KfpRequestError,
    PipelineNotFound,
    RecurringRunExists,
    RecurringRunNotFound,
    ScheduleSettingsError,
)
from dultra.schedule.models import Experiment, Pipeline, PipelineVersion, RecurringRun, ScheduleSpec

MAX_PIPELINE_BYTES = 32 << 20  # the API server's upload limit


@dataclass(frozen=True)
class PipelineSource:
    """Which pipeline the schedule runs."""

    name: str = "dultra"
    """Pipeline name to look up (and to upload under); ignored when pipeline_id is set."""
    pipeline_id: str | None = None
    """Use this pipeline id directly."""
    file: Path | None = None
    """Compiled pipeline YAML to upload when no pipeline is named `name`."""


@dataclass(frozen=True)
class CreateResult:
    """What `create_schedule` did."""

    recurring_run: RecurringRun
    pipeline: Pipeline
    experiment: Experiment
    url: str
    """The recurring run's page in the KFP UI."""
    uploaded: bool = False
    """True if the pipeline file was uploaded because the pipeline did not exist."""
    replaced: list[str] = field(default_factory=list)
    """Ids of recurring runs with the same name that were deleted (--replace)."""
    unchecked: str = ""
    """Why the parameters could not be checked against the pipeline; empty when they were."""


def check_pipeline_file(path: Path) -> dict:
    """Refuse a file that is not a compiled KFP pipeline; return its pipeline spec."""
    try:
        size = path.stat().st_size
        docs = list(yaml.safe_load_all(path.read_text()))
    except OSError as err:
        raise ScheduleSettingsError(f"cannot read pipeline file {path}: {err.strerror}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ScheduleSettingsError(f"pipeline file {path} is not YAML: {yaml_problem(err)}") from None
    if size > MAX_PIPELINE_BYTES:
        raise ScheduleSettingsError(f"pipeline file {path} is {size >> 20} MiB; KFP accepts at most 32 MiB")
    spec = docs[0] if docs else None  # a second document, if any, is the platform (Kubernetes) spec
    if not is_compiled_pipeline(spec):
        raise ScheduleSettingsError(f"{path} is not a compiled KFP pipeline (no pipelineInfo/root); "
                                    f"compile it with kfp.compiler.Compiler().compile(...)")
    return spec


def is_compiled_pipeline(spec: object) -> TypeGuard[dict]:
    """Whether `spec` looks like a KFP v2 pipeline spec (an Argo workflow of the v1 SDK does not)."""
    return isinstance(spec, dict) and "pipelineInfo" in spec and isinstance(spec.get("root"), dict)


def check_parameters(spec: dict, parameters: dict, pipeline: str) -> None:
    """A --param the pipeline does not have, or a missing one it requires, would fail every
    scheduled run, nights later: refuse it now. `pipeline` names it in the message, e.g.
    "the pipeline in pipelines/dultra_pipeline.yaml"."""
    definitions = ((spec.get("root") or {}).get("inputDefinitions") or {}).get("parameters") or {}
    known = set(definitions)
    for name in sorted(set(parameters) - known):
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"did you mean {close[0]}?" if close else f"it has: {', '.join(sorted(known)) or 'none'}"
        raise ScheduleSettingsError(f"--param {name}: {pipeline} has no such parameter ({hint})")
    required = sorted(name for name, d in definitions.items()
                      if not d.get("isOptional") and "defaultValue" not in d and name not in parameters)
    if required:
        raise ScheduleSettingsError(f"{pipeline} requires " + ", ".join(f"--param {name}=..." for name in required))
    for name, value in parameters.items():
        kind = definitions[name].get("parameterType", "STRING")
        if not _fits(kind, value):
            raise ScheduleSettingsError(f"--param {name}={json.dumps(value)}: {pipeline} takes "
                                        f"{_KINDS.get(kind, kind)}")


def check_latest_version(version: PipelineVersion | None, parameters: dict, pipeline: Pipeline) -> str:
    """Check `parameters` against the version each trigger runs (the pipeline's latest); return
    why they could not be checked, "" when they were. Not being able to check is no reason to
    refuse: the schedule may still be right."""
    if version is None:
        return f"pipeline {pipeline.name!r} has no version"
    named = f"pipeline {pipeline.name!r} (latest version {version.name!r})"
    if not is_compiled_pipeline(version.pipeline_spec):
        error = " ".join(version.error.split())  # the note is one line
        why = f"the server said: {error}" if error else "the server sent no compiled pipeline spec"
        return f"{named}: {why}"
    check_parameters(version.pipeline_spec, parameters, named)
    return ""


# What each KFP parameter type accepts of a --param value (JSON where it parses, else text);
# a number for a STRING parameter is fine: KFP passes its text.
_KINDS = {"NUMBER_INTEGER": "an integer", "NUMBER_DOUBLE": "a number", "BOOLEAN": "true or false",
          "LIST": "a JSON list", "STRUCT": "a JSON object"}


def _fits(kind: str, value) -> bool:
    if isinstance(value, bool):
        return kind in ("BOOLEAN", "STRING")
    return {"NUMBER_INTEGER": isinstance(value, int), "NUMBER_DOUBLE": isinstance(value, int | float),
            "BOOLEAN": False, "LIST": isinstance(value, list), "STRUCT": isinstance(value, dict)}.get(kind, True)


def resolve_pipeline(client: KfpClient, source: PipelineSource,
                     namespace: str | None = None) -> tuple[Pipeline, bool]:
    """(pipeline, uploaded). Looks in `namespace`, then among shared pipelines."""
    if source.pipeline_id:
        return client.get_pipeline(source.pipeline_id), False
    found = client.find_pipelines(source.name, namespace)
    if not found and namespace:
        found = client.find_pipelines(source.name, None)
    if len(found) > 1:
        ids = ", ".join(p.pipeline_id for p in found)
        raise AmbiguousName(f"{len(found)} pipelines are named {source.name!r} ({ids}); use --pipeline-id")
    if found:
        return found[0], False
    where = f" in namespace {namespace!r} or shared" if namespace else ""
    if source.file is None:
        raise PipelineNotFound(f"no pipeline named {source.name!r} at {client.host}{where}; upload one with "
                               f"--pipeline-file pipelines/dultra_pipeline.yaml, or pass --pipeline-id")
    check_pipeline_file(source.file)
    return client.upload_pipeline(source.file, source.name, namespace), True


def resolve_experiment(client: KfpClient, name: str, namespace: str | None = None) -> Experiment:
    """The experiment named `name` (in `namespace`), created if missing."""
    found = client.find_experiments(name, namespace)
    if len(found) > 1:
        raise AmbiguousName(f"{len(found)} experiments are named {name!r}; choose another --experiment")
    return found[0] if found else client.create_experiment(name, namespace)


def create_schedule(client: KfpClient, spec: ScheduleSpec, source: PipelineSource, *,
                    namespace: str | None = None, experiment: str = "Default",
                    replace: bool = False) -> CreateResult:
    """Create the recurring run `spec` describes (see the module docstring for the order)."""
    parse_cron(spec.cron)  # never send a cron this module would refuse
    check_name(spec.name, "--name")
    check_name(experiment, "--experiment")
    if not source.pipeline_id:
        check_name(source.name, "--pipeline")
    if source.file is not None and not source.pipeline_id:  # a local mistake fails before any request
        check_parameters(check_pipeline_file(source.file), spec.parameters, f"the pipeline in {source.file}")
    existing = client.list_recurring_runs(namespace=namespace, name=spec.name)
    if existing and not replace:
        ids = ", ".join(r.recurring_run_id for r in existing)
        raise RecurringRunExists(f"a recurring run named {spec.name!r} already exists ({ids}); pass --replace, "
                                 f"choose another --name, or delete it: dultra schedule delete --name {spec.name}")
    pipeline, uploaded = resolve_pipeline(client, source, namespace)
    # A file not uploaded (its pipeline exists) is not what the runs run: the latest version is.
    # (Versions sort by creation second: two uploaded within one second may tie.)
    try:
        unchecked = "" if uploaded else check_latest_version(
            client.latest_pipeline_version(pipeline.pipeline_id), spec.parameters, pipeline)
    except ScheduleSettingsError as err:
        if source.file is None:
            raise
        raise ScheduleSettingsError(f"{err}; {source.file} was not uploaded, as pipeline {pipeline.name!r} exists: "
                                    f"upload it as a new version to run it") from None
    target = resolve_experiment(client, experiment, namespace)
    run = client.create_recurring_run(spec.to_json(pipeline.pipeline_id, target.experiment_id))
    replaced = []
    for old in existing:
        try:
            client.delete_recurring_run(old.recurring_run_id)
        except KfpError as err:  # the new schedule exists: say so, or the user may create a third
            raise type(err)(f"created recurring run {run.recurring_run_id}, but deleting the one it replaces "
                            f"({old.recurring_run_id}) failed: {err}") from None
        replaced.append(old.recurring_run_id)
    return CreateResult(recurring_run=run, pipeline=pipeline, experiment=target,
                        url=client.ui_url(run.recurring_run_id), uploaded=uploaded, replaced=replaced,
                        unchecked=unchecked)


def check_name(name: str, what: str) -> None:
    """Refuse a blank name: KFP's list filter ignores it, so it would match every recurring run."""
    if not name.strip():
        raise ScheduleSettingsError(f"{what} is empty; give a name")


def delete_schedule(client: KfpClient, recurring_run_id: str | None = None, name: str | None = None,
                    namespace: str | None = None) -> str:
    """Delete one recurring run, by id or by its (unique) name; return its id."""
    if (recurring_run_id is None) == (name is None):
        raise ScheduleSettingsError("give either a recurring run id or --name")
    if name is not None:
        check_name(name, "--name")
        found = client.list_recurring_runs(namespace=namespace, name=name)
        if not found:
            where = f" in namespace {namespace!r}" if namespace else ""
            raise RecurringRunNotFound(f"no recurring run named {name!r} at {client.host}{where}")
        if len(found) > 1:
            ids = ", ".join(r.recurring_run_id for r in found)
            raise AmbiguousName(f"{len(found)} recurring runs are named {name!r} ({ids}); delete by id")
        recurring_run_id = found[0].recurring_run_id
    client.delete_recurring_run(recurring_run_id)
    return recurring_run_id


def next_trigger(run: RecurringRun, now: datetime) -> datetime | None:
    """When KFP will next start `run`, computed here from its cron in UTC (the API does not
    report it); None if disabled, not a cron calendar schedule, past its end, or unreadable."""
    if run.status != "ENABLED" or not run.cron:
        return None
    try:
        schedule = parse_cron(run.cron)
    except BadCron:
        return None
    if schedule.every is not None:
        return None  # counted from the last run, which the API does not report
    base = max(now, run.start_time) if run.start_time else now
    t = schedule.next_after(base)
    return None if t is None or (run.end_time is not None and t > run.end_time) else t


def pipeline_names(client: KfpClient, runs: list[RecurringRun]) -> dict[str, str]:
    """pipeline id -> name for the runs' pipelines; ids that cannot be read are left out."""
    names: dict[str, str] = {}
    for pipeline_id in sorted({r.pipeline_id for r in runs if r.pipeline_id}):
        try:
            names[pipeline_id] = client.get_pipeline(pipeline_id).name
        except (PipelineNotFound, KfpAuthError, KfpRequestError):
            continue  # a deleted pipeline or one we may not read: the table shows the id
    return names
