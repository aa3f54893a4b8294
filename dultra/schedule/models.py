"""The KFP v2beta1 resources dultra reads and writes, as typed dataclasses.

    run = RecurringRun.from_json(response.json())
    body = ScheduleSpec(name="dultra-retraining", cron="0 0 3 * * *").to_json("p-id", "e-id")

Field names follow the REST API (`backend/api/v2beta1/*.proto`; the JSON uses the proto
names, snake_case). Only the fields dultra uses are kept; unknown ones are ignored, so
newer servers that add fields still parse. A field of the wrong JSON type (a number where
the API sends an object) is a ValueError naming it, which the client reports in one line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


@dataclass(frozen=True)
class Pipeline:
    """A pipeline (its versions are separate resources)."""

    pipeline_id: str
    name: str
    """Unique per namespace; KFP < 2.5 has only display_name, used here in its place."""
    display_name: str = ""
    namespace: str = ""
    """Empty for shared pipelines and in single-user mode."""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Pipeline:
        data = json_object(data)
        display = member(data, "display_name", str, "")
        return cls(pipeline_id=member(data, "pipeline_id", str, ""), name=member(data, "name", str, "") or display,
                   display_name=display, namespace=member(data, "namespace", str, ""))


@dataclass(frozen=True)
class PipelineVersion:
    """One version of a pipeline: the compiled YAML a run of it executes."""

    pipeline_version_id: str
    name: str
    """Unique within the pipeline; KFP < 2.5 has only display_name, used here in its place."""
    pipeline_spec: dict[str, Any] | None = None
    """The compiled pipeline spec (the YAML's first document) as the server returns it; None
    when the server sends none (an unreadable spec, or an older server)."""
    error: str = ""
    """The server's message when it could not read this version (its spec, typically)."""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PipelineVersion:
        data = json_object(data)
        spec = data.get("pipeline_spec")
        # A YAML with a second (platform) document comes back as {"pipeline_spec", "platform_spec"};
        # one without it as the spec itself (backend YamlStringToPipelineSpecStruct).
        if isinstance(spec, dict) and isinstance(spec.get("pipeline_spec"), dict):
            spec = spec["pipeline_spec"]
        return cls(pipeline_version_id=member(data, "pipeline_version_id", str, ""),
                   name=member(data, "name", str, "") or member(data, "display_name", str, ""),
                   pipeline_spec=spec if isinstance(spec, dict) and spec else None,
                   error=error_message(data))


@dataclass(frozen=True)
class Experiment:
    """An experiment: the group a recurring run and its runs belong to (and, in multi-user
    mode, where its namespace comes from)."""

    experiment_id: str
    display_name: str
    namespace: str = ""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Experiment:
        data = json_object(data)
        return cls(experiment_id=member(data, "experiment_id", str, ""),
                   display_name=member(data, "display_name", str, ""), namespace=member(data, "namespace", str, ""))


@dataclass(frozen=True)
class RecurringRun:
    """A recurring run as the API reports it."""

    recurring_run_id: str
    display_name: str
    cron: str | None
    """The cron trigger, None for a periodic (interval) trigger."""
    interval_s: int | None
    """The periodic trigger's interval in seconds, None for a cron trigger."""
    status: str
    """ENABLED, DISABLED or STATUS_UNSPECIFIED."""
    pipeline_id: str
    pipeline_version_id: str
    """Empty: the latest version of the pipeline at each trigger (KFP >= 2.5)."""
    experiment_id: str = ""
    namespace: str = ""
    max_concurrency: int | None = None
    no_catchup: bool = False
    start_time: datetime | None = None
    end_time: datetime | None = None
    created_at: datetime | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    service_account: str = ""
    error: str = ""
    """The server's message when it could not read this recurring run."""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RecurringRun:
        data = json_object(data)
        trigger = member(data, "trigger", dict, {})
        cron = member(trigger, "cron_schedule", dict, {})
        periodic = member(trigger, "periodic_schedule", dict, {})
        window = cron or periodic
        reference = member(data, "pipeline_version_reference", dict, {})
        return cls(
            recurring_run_id=member(data, "recurring_run_id", str, ""),
            display_name=member(data, "display_name", str, ""),
            cron=member(cron, "cron", str) if cron else None,
            interval_s=int64(periodic, "interval_second"),
            status=member(data, "status", str, "STATUS_UNSPECIFIED"),
            pipeline_id=member(reference, "pipeline_id", str, ""),
            # pipeline_version_id at the top level is the deprecated v1-style field
            pipeline_version_id=member(reference, "pipeline_version_id", str, "")
            or member(data, "pipeline_version_id", str, ""),
            experiment_id=member(data, "experiment_id", str, ""),
            namespace=member(data, "namespace", str, ""),
            max_concurrency=int64(data, "max_concurrency"),
            no_catchup=bool(data.get("no_catchup", False)),
            start_time=parse_time(member(window, "start_time", str)),
            end_time=parse_time(member(window, "end_time", str)),
            created_at=parse_time(member(data, "created_at", str)),
            parameters=dict(member(member(data, "runtime_config", dict, {}), "parameters", dict, {})),
            service_account=member(data, "service_account", str, ""),
            error=error_message(data),
        )


@dataclass(frozen=True)
class ScheduleSpec:
    """What `dultra schedule create` asks for; `to_json` is the CreateRecurringRun body."""

    name: str
    """display_name of the recurring run (KFP does not require it to be unique; dultra does)."""
    cron: str
    """6-field, seconds-first, UTC cron, already validated (`cron.parse_cron`)."""
    parameters: dict[str, Any] = field(default_factory=dict)
    """Pipeline parameters (runtime_config.parameters)."""
    start_time: datetime | None = None
    """No trigger before this instant (aware datetime)."""
    end_time: datetime | None = None
    """No trigger after this instant (aware datetime)."""
    description: str = "Scheduled retraining, created by `dultra schedule create`."
    """Description of the recurring run, shown in the KFP UI."""
    service_account: str = ""
    """Kubernetes service account of its runs; empty: the server's default (`pipeline-runner`
    on standalone Pipelines, the profile's `default-editor` on multi-user Kubeflow)."""

    def to_json(self, pipeline_id: str, experiment_id: str) -> dict[str, Any]:
        """The request body. Fixed by design: at most one run at a time (a retraining must
        not overlap the previous one), no catch-up after downtime (only the latest missed
        trigger runs), enabled, and no pipeline_version_id so each trigger runs the
        pipeline's latest version."""
        cron: dict[str, Any] = {"cron": self.cron}
        if self.start_time is not None:
            cron["start_time"] = format_time(self.start_time)
        if self.end_time is not None:
            cron["end_time"] = format_time(self.end_time)
        body = {
            "display_name": self.name,
            "description": self.description,
            "pipeline_version_reference": {"pipeline_id": pipeline_id},
            "runtime_config": {"parameters": dict(self.parameters)},
            "trigger": {"cron_schedule": cron},
            "max_concurrency": "1",  # int64: proto3 JSON writes 64-bit integers as strings
            "no_catchup": True,
            "mode": "ENABLE",  # the input field; the server reports it back as status ENABLED
            "experiment_id": experiment_id,
        }
        if self.service_account:
            body["service_account"] = self.service_account
        return body


_KINDS = {dict: "an object", list: "a list", str: "a string"}


def json_object(data: Any) -> dict[str, Any]:
    """`data`, which must be a JSON object; ValueError otherwise."""
    if not isinstance(data, dict):
        raise ValueError(f"is {_show(data)}, not an object")
    return data


def member(data: dict[str, Any], key: str, kind: type, default: Any = None) -> Any:
    """data[key] if it is a `kind` (dict, list or str); `default` if absent or null; a ValueError
    naming `key` for any other JSON type, which `.get` would pass on to fail far from here."""
    value = data.get(key)
    if value is None:
        return default
    if not isinstance(value, kind):
        raise ValueError(f"has {key} {_show(value)}, not {_KINDS[kind]}")
    return value


def int64(data: dict[str, Any], key: str) -> int | None:
    """An int64 field: proto3 JSON writes it as a string of digits ("3600"), some servers as a
    number; None if absent, null or ""."""
    value = data.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, int | float) and not isinstance(value, bool) and float(value).is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    raise ValueError(f"has {key} {_show(value)}, not an integer")


def error_message(data: dict[str, Any]) -> str:
    """The message of the google.rpc.Status in `error`, which the server sets on an item it could
    not read; empty if none."""
    return member(member(data, "error", dict, {}), "message", str, "")


def _show(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def format_time(t: datetime) -> str:
    """RFC 3339 in UTC with a Z, as protobuf Timestamps are written in JSON."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str | None) -> datetime | None:
    """A protobuf Timestamp from JSON (RFC 3339); None for absent or the zero epoch KFP
    sends for unset times."""
    if not value:
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return None if t.timestamp() <= 0 else t
