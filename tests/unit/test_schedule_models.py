"""Request bodies, response parsing, credentials and --param/--start parsing of `dultra schedule`."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone

import pytest

from dultra.commands.schedule import parse_params, parse_time
from dultra.schedule import KfpAuth, RecurringRun, ScheduleSettingsError, ScheduleSpec, next_trigger
from dultra.schedule.client import normalize_host


def test_create_body_is_the_documented_recurring_run():
    spec = ScheduleSpec(name="nightly", cron="0 0 3 * * *", parameters={"task": "gsm8k", "grpo_steps": 200},
                        start_time=datetime(2030, 1, 1, 5, tzinfo=timezone(timedelta(hours=2))))
    assert spec.to_json("pipe-1", "exp-1") == {
        "display_name": "nightly",
        "description": "Scheduled retraining, created by `dultra schedule create`.",
        "pipeline_version_reference": {"pipeline_id": "pipe-1"},
        "runtime_config": {"parameters": {"task": "gsm8k", "grpo_steps": 200}},
        "trigger": {"cron_schedule": {"cron": "0 0 3 * * *", "start_time": "2030-01-01T03:00:00Z"}},
        "max_concurrency": "1",
        "no_catchup": True,
        "mode": "ENABLE",
        "experiment_id": "exp-1",
    }


def test_a_service_account_is_sent_only_when_set():
    spec = ScheduleSpec(name="n", cron="0 0 3 * * *")
    assert "service_account" not in spec.to_json("p", "e")
    body = ScheduleSpec(name="n", cron="0 0 3 * * *", service_account="dultra-pipeline").to_json("p", "e")
    assert body["service_account"] == "dultra-pipeline"
    assert RecurringRun.from_json(body).service_account == "dultra-pipeline"


def _model_fields(model_name: str) -> dict[str, str]:
    import kfp_server_api  # tests may import kfp; the dultra package may not
    cls = getattr(kfp_server_api, model_name)
    return {cls.attribute_map[attr]: type_ for attr, type_ in cls.openapi_types.items()}


def _check_against_kfp_models(body: dict, model_name: str, where: str = "") -> int:
    """Every key of `body` is a field of the kfp_server_api model (recursively); returns keys checked."""
    fields = _model_fields(model_name)
    checked = 0
    for key, value in body.items():
        assert key in fields, f"{where}{key} is not a field of {model_name}"
        checked += 1
        if isinstance(value, dict) and fields[key].startswith("V2beta1"):
            checked += _check_against_kfp_models(value, fields[key], f"{where}{key}.")
    return checked


def test_create_body_uses_only_fields_of_kfp_server_api_models():
    spec = ScheduleSpec(name="n", cron="0 0 3 * * *", start_time=datetime(2030, 1, 1, tzinfo=UTC),
                        end_time=datetime(2031, 1, 1, tzinfo=UTC), service_account="sa")
    body = spec.to_json("p", "e")
    assert _check_against_kfp_models(body, "V2beta1RecurringRun") == 16  # 10 top-level + 6 nested
    import kfp_server_api
    assert body["mode"] in kfp_server_api.RecurringRunMode.allowable_values


def test_recurring_run_from_a_server_response():
    run = RecurringRun.from_json({
        "recurring_run_id": "r-1", "display_name": "nightly", "description": "",
        "pipeline_version_reference": {"pipeline_id": "p-1"},
        "runtime_config": {"parameters": {"task": "gsm8k"}},
        "max_concurrency": "1",
        "trigger": {"cron_schedule": {"start_time": "2030-01-01T00:00:00Z", "cron": "0 0 3 * * *",
                                      "end_time": "1970-01-01T00:00:00Z"}},
        "mode": "ENABLE", "created_at": "2029-12-01T10:00:00.123456789Z", "status": "ENABLED",
        "no_catchup": True, "namespace": "team-a", "experiment_id": "e-1", "some_future_field": {"x": 1},
    })
    assert (run.recurring_run_id, run.display_name, run.cron, run.status) == ("r-1", "nightly", "0 0 3 * * *", "ENABLED")
    assert (run.pipeline_id, run.pipeline_version_id, run.max_concurrency, run.no_catchup) == ("p-1", "", 1, True)
    assert run.start_time == datetime(2030, 1, 1, tzinfo=UTC)
    assert run.end_time is None  # KFP writes unset times as the epoch
    assert run.created_at == datetime(2029, 12, 1, 10, 0, 0, 123456, tzinfo=UTC)
    assert run.parameters == {"task": "gsm8k"} and run.namespace == "team-a"


def test_int64_fields_read_as_strings_or_numbers_and_wrong_types_name_the_field():
    periodic = {"trigger": {"periodic_schedule": {"interval_second": 3600}}, "max_concurrency": "2"}
    run = RecurringRun.from_json(periodic)
    assert (run.interval_s, run.max_concurrency, run.cron) == (3600, 2, None)
    for bad, message in ((5, "is 5, not an object"), ({"max_concurrency": True}, "has max_concurrency true, not an "
                         "integer"), ({"runtime_config": {"parameters": [1]}}, "has parameters [1], not an object")):
        with pytest.raises(ValueError, match=re.escape(message)):
            RecurringRun.from_json(bad)


def test_next_trigger_respects_status_start_and_end():
    now = datetime(2030, 1, 1, 12, tzinfo=UTC)
    base = {"recurring_run_id": "r", "status": "ENABLED", "trigger": {"cron_schedule": {"cron": "0 0 3 * * *"}}}
    assert next_trigger(RecurringRun.from_json(base), now) == datetime(2030, 1, 2, 3, tzinfo=UTC)
    assert next_trigger(RecurringRun.from_json({**base, "status": "DISABLED"}), now) is None
    later = {"cron_schedule": {"cron": "0 0 3 * * *", "start_time": "2030-03-01T00:00:00Z"}}
    assert next_trigger(RecurringRun.from_json({**base, "trigger": later}), now) == datetime(2030, 3, 1, 3, tzinfo=UTC)
    over = {"cron_schedule": {"cron": "0 0 3 * * *", "end_time": "2030-01-02T00:00:00Z"}}
    assert next_trigger(RecurringRun.from_json({**base, "trigger": over}), now) is None
    odd = {"cron_schedule": {"cron": "0 0 3 * *"}}  # a 5-field cron created elsewhere: no guess
    assert next_trigger(RecurringRun.from_json({**base, "trigger": odd}), now) is None


def test_auth_precedence(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    pod_token = tmp_path / "pod-token"
    pod_token.write_text("from-pod")
    env = {"KF_PIPELINES_TOKEN": "from-env", "KF_PIPELINES_SA_TOKEN_PATH": str(token_file),
           "KF_PIPELINES_COOKIE": "authservice_session=env"}
    none = tmp_path / "absent"
    assert KfpAuth.resolve(token="flag", env=env, default_token_path=none).read_token() == "flag"
    assert KfpAuth.resolve(token_file=token_file, env=env, default_token_path=none).read_token() == "from-file"
    assert KfpAuth.resolve(env=env, default_token_path=none).read_token() == "from-env"
    assert KfpAuth.resolve(env={"KF_PIPELINES_SA_TOKEN_PATH": str(token_file)},
                           default_token_path=none).read_token() == "from-file"
    assert KfpAuth.resolve(env={}, default_token_path=pod_token).read_token() == "from-pod"
    assert KfpAuth.resolve(env={}, default_token_path=none) == KfpAuth()
    assert KfpAuth.resolve(env=env, default_token_path=none).cookie == "authservice_session=env"
    assert KfpAuth.resolve(cookie="a=1", env=env, default_token_path=none).cookie == "a=1"


def test_auth_describe_names_sources_but_never_secrets(tmp_path):
    auth = KfpAuth(token="top-secret", cookie="oauth2_proxy_kubeflow=abc; other=def")
    assert auth.describe() == "bearer token + cookie oauth2_proxy_kubeflow, other"
    assert "top-secret" not in auth.describe() and "abc" not in auth.describe()


def test_bad_token_sources(tmp_path):
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ScheduleSettingsError, match="is empty"):
        KfpAuth.resolve(token_file=empty, env={})
    with pytest.raises(ScheduleSettingsError, match="empty"):
        KfpAuth.resolve(token="  ", env={})
    with pytest.raises(ScheduleSettingsError, match="not both"):
        KfpAuth.resolve(token="t", token_file=empty, env={})


def test_params_are_json_when_they_parse():
    assert parse_params(["n=3", "lr=1e-5", "on=false", "x=null", "name=gsm8k", "id=007", "u=s3://b/k=v", "e=",
                         "l=[1, 2]", " key = spaced"]) == {
        "n": 3, "lr": 1e-5, "on": False, "x": None, "name": "gsm8k", "id": "007", "u": "s3://b/k=v", "e": "",
        "l": [1, 2], "key": " spaced"}


def test_times_default_to_utc():
    assert parse_time("2030-01-31", "--start") == datetime(2030, 1, 31, tzinfo=UTC)
    assert parse_time("2030-01-31T03:00:00Z", "--start") == datetime(2030, 1, 31, 3, tzinfo=UTC)
    assert parse_time("2030-01-31T05:00:00+02:00", "--end") == datetime(2030, 1, 31, 3, tzinfo=UTC)
    assert parse_time(None, "--end") is None


@pytest.mark.parametrize("host, expected", [
    ("http://localhost:8080/", "http://localhost:8080"),
    ("https://kubeflow.example.com/pipeline", "https://kubeflow.example.com/pipeline"),
])
def test_hosts(host, expected):
    assert normalize_host(host) == expected


@pytest.mark.parametrize("host", ["localhost:8080", "ftp://x", "http://", "http://h/?a=1", ""])
def test_bad_hosts(host):
    with pytest.raises(ScheduleSettingsError, match="--host"):
        normalize_host(host)


def test_the_library_does_not_import_kubeflow():
    code = ("import sys, dultra.schedule, dultra.commands.schedule; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('kfp', 'kfp_server_api', 'kubernetes')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_params_are_checked_against_the_compiled_dultra_pipeline():
    from pathlib import Path

    from dultra.schedule.service import check_parameters, check_pipeline_file

    path = Path(__file__).resolve().parents[2] / "pipelines" / "dultra_pipeline.yaml"
    spec, where = check_pipeline_file(path), f"the pipeline in {path}"
    check_parameters(spec, {"task": "gsm8k", "grpo_steps": 200, "nodes": 2, "s3_destination": "s3://b/p"}, where)
    with pytest.raises(ScheduleSettingsError, match="--param grpo_step: .* no such parameter \\(did you mean grpo_steps\\?\\)"):
        check_parameters(spec, {"grpo_step": 200}, where)
    with pytest.raises(ScheduleSettingsError, match="requires --param s3_destination=...$"):
        check_parameters(spec, {"task": "gsm8k"}, where)
    # Each value as the pipeline types it: a mistyped one would fail every run when it triggers.
    dest = {"s3_destination": "s3://b/p"}
    check_parameters(spec, {**dest, "learning_rate": 1, "task": 7}, where)  # an int is a number; KFP texts it
    for name, value, kind in (("grpo_steps", "abc", "an integer"), ("grpo_steps", 2.5, "an integer"),
                              ("learning_rate", "fast", "a number"), ("nodes", True, "an integer")):
        with pytest.raises(ScheduleSettingsError, match=f"--param {name}=.*: the pipeline in .* takes {kind}$"):
            check_parameters(spec, {**dest, name: value}, where)
