"""The requests `dultra.schedule` sends, checked exactly against a loopback KFP stand-in.

Each test drives the client (or `create_schedule` / `delete_schedule`) against a real HTTP
server (`kfp_standin.KfpStandIn`) and asserts the recorded method, path, query, headers
and body, or the typed error a failure maps to.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dultra.schedule import (
    AmbiguousName,
    BadCron,
    ClientConfig,
    KfpAuth,
    KfpAuthError,
    KfpClient,
    KfpRequestError,
    KfpServerError,
    KfpUnreachable,
    PipelineNotFound,
    PipelineSource,
    RecurringRunExists,
    RecurringRunNotFound,
    ScheduleSettingsError,
    ScheduleSpec,
    create_schedule,
    delete_schedule,
)
from tests.helpers import free_port
from tests.integration.kfp_standin import API, KfpStandIn
from tests.integration.tiny_kfp_pipeline import compile_tiny_pipeline

pytestmark = pytest.mark.integration

TOKEN = "s3cr3t-token"


def name_filter(key: str, value: str) -> str:
    return json.dumps({"predicates": [{"key": key, "operation": "EQUALS", "stringValue": value}]},
                      separators=(",", ":"))


@pytest.fixture
def kfp():
    with KfpStandIn() as standin:
        yield standin


@pytest.fixture(scope="module")
def pipeline_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pipeline") / "tiny_pipeline.yaml"
    compile_tiny_pipeline(path)
    return path


def client(kfp: KfpStandIn, **auth) -> KfpClient:
    return KfpClient(kfp.url, auth=KfpAuth(**auth), config=ClientConfig(read_timeout_s=5, connect_timeout_s=2))


def calls(kfp: KfpStandIn) -> list[tuple[str, str, dict]]:
    return [(r.method, r.path, r.query) for r in kfp.requests]


SPEC = ScheduleSpec(name="nightly", cron="0 0 3 * * *", parameters={"a": 3, "b": 0.5})


def expected_body(pipeline_id: str, experiment_id: str, **cron_extra) -> dict:
    return {
        "display_name": "nightly",
        "description": "Scheduled retraining, created by `dultra schedule create`.",
        "pipeline_version_reference": {"pipeline_id": pipeline_id},
        "runtime_config": {"parameters": {"a": 3, "b": 0.5}},
        "trigger": {"cron_schedule": {"cron": "0 0 3 * * *", **cron_extra}},
        "max_concurrency": "1",
        "no_catchup": True,
        "mode": "ENABLE",
        "experiment_id": experiment_id,
    }


def test_create_uploads_the_missing_pipeline_then_creates_the_recurring_run(kfp, pipeline_file):
    with client(kfp, token=TOKEN) as api:
        result = create_schedule(api, SPEC, PipelineSource(name="dultra", file=pipeline_file))

    assert result.uploaded
    pipeline_id, = kfp.pipelines
    experiment_id, = kfp.experiments
    run_id, = kfp.recurring_runs
    page = {"page_size": ["100"]}
    assert calls(kfp) == [
        ("GET", f"{API}/recurringruns", {"filter": [name_filter("display_name", "nightly")], **page}),
        ("GET", f"{API}/pipelines", {"filter": [name_filter("name", "dultra")], **page}),
        ("POST", f"{API}/pipelines/upload", {"name": ["dultra"]}),
        ("GET", f"{API}/experiments", {"filter": [name_filter("display_name", "Default")], **page}),
        ("POST", f"{API}/experiments", {}),
        ("POST", f"{API}/recurringruns", {}),
    ]
    for r in kfp.requests:
        assert r.headers["authorization"] == f"Bearer {TOKEN}"
        assert r.headers["accept"] == "application/json"
        assert r.headers["user-agent"].startswith("dultra")
        assert "cookie" not in r.headers
    upload = kfp.requests[2]
    assert upload.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert upload.form_files() == {"uploadfile": ("tiny_pipeline.yaml", "application/x-yaml", pipeline_file.read_bytes())}
    assert kfp.requests[4].headers["content-type"] == "application/json"
    assert kfp.requests[4].json() == {"display_name": "Default"}
    create = kfp.requests[5]
    assert create.headers["content-type"] == "application/json"
    assert create.json() == expected_body(pipeline_id, experiment_id)
    assert result.recurring_run.recurring_run_id == run_id
    assert result.recurring_run.status == "ENABLED" and result.recurring_run.pipeline_version_id == ""
    assert result.url == f"{kfp.url}/#/recurringrun/details/{run_id}"


def test_existing_pipeline_and_experiment_are_reused_in_the_namespace(kfp, pipeline_file):
    pipeline_id = kfp.add_pipeline("dultra", namespace="team-a")
    experiment_id = kfp.add_experiment("retraining", namespace="team-a")
    start = datetime(2030, 1, 1, 3, tzinfo=UTC)
    spec = ScheduleSpec(name="nightly", cron="0 0 3 * * *", parameters={"a": 3, "b": 0.5}, start_time=start,
                        end_time=datetime(2031, 1, 1, tzinfo=UTC))
    with client(kfp, cookie="oauth2_proxy_kubeflow=abc") as api:
        result = create_schedule(api, spec, PipelineSource(name="dultra", file=pipeline_file),
                                 namespace="team-a", experiment="retraining")

    assert not result.uploaded and result.pipeline.pipeline_id == pipeline_id
    ns = {"namespace": ["team-a"], "page_size": ["100"]}
    assert calls(kfp) == [
        ("GET", f"{API}/recurringruns", {"namespace": ["team-a"], "filter": [name_filter("display_name", "nightly")],
                                          "page_size": ["100"]}),
        ("GET", f"{API}/pipelines", {"filter": [name_filter("name", "dultra")], **ns}),
        # the file was not uploaded: the version that runs is checked
        ("GET", f"{API}/pipelines/{pipeline_id}/versions", {"sort_by": ["created_at desc"], "page_size": ["1"]}),
        ("GET", f"{API}/experiments", {"filter": [name_filter("display_name", "retraining")], **ns}),
        ("POST", f"{API}/recurringruns", {}),
    ]
    assert all(r.headers["cookie"] == "oauth2_proxy_kubeflow=abc" for r in kfp.requests)
    assert all("authorization" not in r.headers for r in kfp.requests)
    assert kfp.requests[-1].json() == expected_body(pipeline_id, experiment_id, start_time="2030-01-01T03:00:00Z",
                                                    end_time="2031-01-01T00:00:00Z")
    assert result.recurring_run.namespace == "team-a"


def test_namespace_falls_back_to_a_shared_pipeline_and_creates_the_experiment_there(kfp):
    pipeline_id = kfp.add_pipeline("dultra")  # shared (no namespace)
    with client(kfp) as api:
        create_schedule(api, SPEC, PipelineSource(name="dultra"), namespace="team-a")
    pipelines = [r for r in kfp.requests if r.path == f"{API}/pipelines"]
    assert [r.query.get("namespace") for r in pipelines] == [["team-a"], None]
    create_experiment = next(r for r in kfp.requests if (r.method, r.path) == ("POST", f"{API}/experiments"))
    assert create_experiment.json() == {"display_name": "Default", "namespace": "team-a"}
    assert kfp.requests[-1].json()["pipeline_version_reference"] == {"pipeline_id": pipeline_id}


def test_pipeline_id_is_checked_and_used(kfp):
    pipeline_id = kfp.add_pipeline("other-name")
    with client(kfp) as api:
        result = create_schedule(api, SPEC, PipelineSource(pipeline_id=pipeline_id))
    assert ("GET", f"{API}/pipelines/{pipeline_id}", {}) in calls(kfp)
    assert result.pipeline.name == "other-name"
    assert kfp.requests[-1].json()["pipeline_version_reference"] == {"pipeline_id": pipeline_id}


DULTRA_YAML = (Path(__file__).resolve().parents[2] / "pipelines" / "dultra_pipeline.yaml").read_text()


def test_latest_version_is_read_with_its_spec_in_either_shape(kfp, pipeline_file):
    pipeline_id = kfp.add_pipeline("dultra")
    with client(kfp) as api:
        assert api.latest_pipeline_version(pipeline_id) is None
        kfp.add_version(pipeline_id, pipeline_file.read_text())
        tiny = api.latest_pipeline_version(pipeline_id)
        kfp.add_version(pipeline_id, DULTRA_YAML, name="nightly-build")
        dultra = api.latest_pipeline_version(pipeline_id)
    assert calls(kfp) == [("GET", f"{API}/pipelines/{pipeline_id}/versions",
                           {"sort_by": ["created_at desc"], "page_size": ["1"]})] * 3
    assert "pipelineInfo" in kfp.versions[pipeline_id][0]["pipeline_spec"]  # one YAML document: the spec
    assert set(kfp.versions[pipeline_id][1]["pipeline_spec"]) == {"pipeline_spec", "platform_spec"}
    assert tiny.name == "v1" and tiny.pipeline_spec["pipelineInfo"]["name"] == "tiny"
    assert dultra.name == "nightly-build" and dultra.pipeline_spec["pipelineInfo"]["name"] == "dultra"
    assert dultra.pipeline_version_id == kfp.versions[pipeline_id][1]["pipeline_version_id"]


def test_without_a_file_a_param_the_latest_version_lacks_is_refused_before_anything_is_created(kfp):
    pipeline_id = kfp.add_pipeline("dultra")
    kfp.add_version(pipeline_id, DULTRA_YAML)
    with client(kfp) as api, pytest.raises(ScheduleSettingsError, match="^--param a: pipeline 'dultra' \\(latest "
                                                                        "version 'v1'\\) has no such parameter"):
        create_schedule(api, SPEC, PipelineSource(name="dultra"))
    assert [(m, p) for m, p, _ in calls(kfp)] == [("GET", f"{API}/recurringruns"), ("GET", f"{API}/pipelines"),
                                                  ("GET", f"{API}/pipelines/{pipeline_id}/versions")]
    assert kfp.recurring_runs == {} and kfp.experiments == {}


def test_a_pipeline_uploaded_by_one_create_checks_the_params_of_the_next(kfp, pipeline_file):
    with client(kfp) as api:
        create_schedule(api, SPEC, PipelineSource(name="dultra", file=pipeline_file))
        typo = ScheduleSpec(name="weekly", cron="0 0 3 * * MON", parameters={"c": 1})
        with pytest.raises(ScheduleSettingsError, match="--param c: pipeline 'dultra' .* has no such parameter"):
            create_schedule(api, typo, PipelineSource(name="dultra"))
    assert [r["display_name"] for r in kfp.recurring_runs.values()] == ["nightly"]


def test_unknown_pipeline_id_is_pipeline_not_found(kfp):
    with client(kfp) as api, pytest.raises(PipelineNotFound, match="no pipeline with id nope"):
        create_schedule(api, SPEC, PipelineSource(pipeline_id="nope"))
    assert not kfp.recurring_runs and not [r for r in kfp.requests if r.method == "POST"]


def test_missing_pipeline_without_a_file_is_pipeline_not_found_and_nothing_is_created(kfp):
    with client(kfp) as api, pytest.raises(PipelineNotFound, match="--pipeline-file"):
        create_schedule(api, SPEC, PipelineSource(name="dultra"))
    assert [r.method for r in kfp.requests] == ["GET", "GET"]


def test_two_pipelines_with_the_name_are_ambiguous(kfp):
    kfp.add_pipeline("dultra")
    kfp.add_pipeline("dultra")
    with client(kfp) as api, pytest.raises(AmbiguousName, match="--pipeline-id"):
        create_schedule(api, SPEC, PipelineSource(name="dultra"))


def test_existing_name_is_refused_unless_replace_which_creates_then_deletes(kfp):
    pipeline_id = kfp.add_pipeline("dultra")
    old = kfp.add_recurring_run("nightly", pipeline_id)
    with client(kfp) as api:
        with pytest.raises(RecurringRunExists, match=old):
            create_schedule(api, SPEC, PipelineSource(name="dultra"))
        assert [r.method for r in kfp.requests] == ["GET"]
        result = create_schedule(api, SPEC, PipelineSource(name="dultra"), replace=True)
    assert result.replaced == [old]
    tail = [(m, p) for m, p, _ in calls(kfp)[-2:]]
    assert tail == [("POST", f"{API}/recurringruns"), ("DELETE", f"{API}/recurringruns/{old}")]
    assert list(kfp.recurring_runs) == [result.recurring_run.recurring_run_id]


def test_replace_reports_the_new_id_when_deleting_the_old_one_fails(kfp):
    pipeline_id = kfp.add_pipeline("dultra")
    old = kfp.add_recurring_run("nightly", pipeline_id)
    kfp.fail("DELETE", f"{API}/recurringruns/{old}", 500, {"code": 13, "message": "boom"})
    with client(kfp) as api, pytest.raises(KfpServerError) as err:
        create_schedule(api, SPEC, PipelineSource(name="dultra"), replace=True)
    new = next(i for i in kfp.recurring_runs if i != old)
    assert f"created recurring run {new}, but deleting the one it replaces ({old}) failed" in str(err.value)
    assert "boom" in str(err.value)


def test_bad_cron_is_refused_before_any_request(kfp):
    with client(kfp) as api, pytest.raises(BadCron, match="'0 0 3 \\* \\* \\*'"):
        create_schedule(api, ScheduleSpec(name="n", cron="0 3 * * *"), PipelineSource())
    assert kfp.requests == []


def test_non_pipeline_file_is_refused_before_any_request(kfp, tmp_path):
    bad = tmp_path / "notes.yaml"
    bad.write_text("hello: world\n")
    with client(kfp) as api, pytest.raises(ScheduleSettingsError, match="not a compiled KFP pipeline"):
        create_schedule(api, SPEC, PipelineSource(file=bad))
    assert kfp.requests == []


def test_list_reads_every_page(kfp):
    pipeline_id = kfp.add_pipeline("dultra")
    ids = [kfp.add_recurring_run(f"run-{i}", pipeline_id) for i in range(5)]
    api = KfpClient(kfp.url, config=ClientConfig(page_size=2))
    with api:
        runs = api.list_recurring_runs()
    assert [r.recurring_run_id for r in runs] == ids
    assert [r.query for r in kfp.requests] == [
        {"page_size": ["2"]}, {"page_size": ["2"], "page_token": ["2"]}, {"page_size": ["2"], "page_token": ["4"]}]


def test_a_server_that_pages_in_a_circle_is_an_error(kfp):
    for _ in range(3):  # every page points back at the same token
        kfp.fail("GET", f"{API}/recurringruns", 200, {"recurring_runs": [], "next_page_token": "again"})
    with KfpClient(kfp.url) as api, pytest.raises(KfpServerError, match="returned page token 'again' .* twice"):
        api.list_recurring_runs()
    assert len(kfp.requests) == 2


def test_delete_by_id_and_by_name(kfp):
    pipeline_id = kfp.add_pipeline("dultra")
    first, second = kfp.add_recurring_run("a", pipeline_id), kfp.add_recurring_run("b", pipeline_id)
    with client(kfp, token=TOKEN) as api:
        assert delete_schedule(api, recurring_run_id=first) == first
        assert delete_schedule(api, name="b") == second
    assert calls(kfp) == [
        ("DELETE", f"{API}/recurringruns/{first}", {}),
        ("GET", f"{API}/recurringruns", {"filter": [name_filter("display_name", "b")], "page_size": ["100"]}),
        ("DELETE", f"{API}/recurringruns/{second}", {}),
    ]
    assert all(r.headers["authorization"] == f"Bearer {TOKEN}" for r in kfp.requests)
    assert kfp.recurring_runs == {}


def test_delete_errors(kfp):
    pipeline_id = kfp.add_pipeline("dultra")
    kfp.add_recurring_run("twin", pipeline_id)
    kfp.add_recurring_run("twin", pipeline_id)
    with client(kfp) as api:
        with pytest.raises(RecurringRunNotFound, match="no recurring run with id gone"):
            delete_schedule(api, recurring_run_id="gone")
        with pytest.raises(RecurringRunNotFound, match="named 'ghost'"):
            delete_schedule(api, name="ghost")
        with pytest.raises(AmbiguousName, match="delete by id"):
            delete_schedule(api, name="twin")
    assert len(kfp.recurring_runs) == 2


def test_wrong_or_missing_token_is_an_auth_error_that_never_shows_the_token(kfp):
    kfp.token = TOKEN
    with client(kfp, token="wrong-token") as api, pytest.raises(KfpAuthError) as err:
        api.list_recurring_runs()
    message = str(err.value)
    assert "HTTP 401" in message and "bearer token" in message and "Unauthenticated" in message
    assert "wrong-token" not in message


def test_forbidden_mentions_the_namespace(kfp):
    kfp.fail("GET", f"{API}/recurringruns", 403, {"code": 7, "message": "PermissionDenied: user x cannot list"})
    with client(kfp) as api, pytest.raises(KfpAuthError, match="HTTP 403.*PermissionDenied.*--namespace"):
        api.list_recurring_runs(namespace="team-a")


def test_redirect_to_a_login_page_is_an_auth_error(kfp):
    kfp.cookie = "oauth2_proxy_kubeflow=good"
    with client(kfp) as api, pytest.raises(KfpAuthError, match="redirected .* to /oauth2/start.*--cookie"):
        api.list_recurring_runs()


def test_server_errors_carry_the_server_message(kfp):
    kfp.add_pipeline("dultra")
    kfp.fail("POST", f"{API}/recurringruns", 500,
             {"code": 13, "message": "Failed to create a recurring run: database is locked", "details": []})
    with client(kfp) as api, pytest.raises(KfpServerError, match="HTTP 500.*database is locked"):
        create_schedule(api, SPEC, PipelineSource(name="dultra"))


def test_html_error_pages_are_summarized_in_one_line(kfp):
    kfp.fail("GET", f"{API}/recurringruns", 503, "<html><head><title>503 Service\n Unavailable</title></head>"
             "<body>upstream connect error</body></html>", content_type="text/html")
    with client(kfp) as api, pytest.raises(KfpServerError) as err:
        api.list_recurring_runs()
    assert "HTTP 503" in str(err.value) and "an HTML page ('503 Service Unavailable')" in str(err.value)
    assert "\n" not in str(err.value)


def test_a_200_that_is_not_kfp_json_is_reported(kfp):
    kfp.fail("GET", f"{API}/recurringruns", 200, "<!doctype html><title>Kubeflow Central Dashboard</title>",
             content_type="text/html")
    with client(kfp) as api, pytest.raises(KfpServerError, match="not KFP JSON.*is --host the KFP API"):
        api.list_recurring_runs()


@pytest.mark.parametrize("method, path, answer, call, message", [
    ("GET", "/recurringruns", {"recurringRuns": 5}, lambda api: api.list_recurring_runs(),
     "the answer has recurringRuns 5, not a list"),
    ("GET", "/recurringruns", {"recurring_runs": [{}, "x"]}, lambda api: api.list_recurring_runs(),
     'recurring_runs[1] is "x", not an object'),
    ("GET", "/recurringruns", {"recurring_runs": [{"trigger": {"periodic_schedule": {"interval_second": "1h"}}}]},
     lambda api: api.list_recurring_runs(), 'recurring_runs[0] has interval_second "1h", not an integer'),
    ("GET", "/recurringruns", {"recurring_runs": [], "next_page_token": 2}, lambda api: api.list_recurring_runs(),
     "the answer has next_page_token 2, not a string"),
    ("GET", "/pipelines", {"pipelines": [{"name": ["dultra"]}]}, lambda api: api.find_pipelines("dultra"),
     'pipelines[0] has name ["dultra"], not a string'),
    ("GET", "/pipelines/p1", {"pipeline_id": 7}, lambda api: api.get_pipeline("p1"),
     "the answer has pipeline_id 7, not a string"),
    ("GET", "/pipelines/p1/versions", {"pipeline_versions": ["v"]}, lambda api: api.latest_pipeline_version("p1"),
     'pipeline_versions[0] is "v", not an object'),
    ("POST", "/pipelines/upload", {"display_name": 1}, lambda api: api.upload_pipeline(Path(__file__), "p"),
     "the answer has display_name 1, not a string"),
    ("GET", "/experiments", {"experiments": {"a": 1}}, lambda api: api.find_experiments("e"),
     'the answer has experiments {"a": 1}, not a list'),
    ("POST", "/experiments", {"experiment_id": None, "namespace": {}}, lambda api: api.create_experiment("e"),
     "the answer has namespace {}, not a string"),
    ("POST", "/recurringruns", {"error": "boom"}, lambda api: api.create_recurring_run({}),
     'the answer has error "boom", not an object'),
])
def test_an_answer_of_the_wrong_shape_is_a_one_line_server_error(kfp, method, path, answer, call, message):
    """Valid JSON that is no v2beta1 answer (another service, a proxy) must not end in a TypeError."""
    kfp.fail(method, API + path, 200, answer)
    with client(kfp) as api, pytest.raises(KfpServerError) as err:
        call(api)
    text = str(err.value)
    assert text.startswith(f"{method} {API}{path} at {kfp.url} answered JSON that a KFP v2beta1 server does not "
                           f"send: {message}; is --host the KFP API?"), text
    assert "\n" not in text


def test_upload_rejection_shows_the_upload_handlers_message(kfp, pipeline_file):
    kfp.fail("POST", f"{API}/pipelines/upload", 400,
             {"error_message": "Failed to create a pipeline: name already exists", "error_details": "..."})
    with client(kfp) as api, pytest.raises(KfpRequestError, match="HTTP 400.*name already exists"):
        create_schedule(api, SPEC, PipelineSource(name="dultra", file=pipeline_file))


def test_unknown_path_suggests_checking_the_host(kfp):
    kfp.fail("GET", f"{API}/recurringruns", 404, "404 page not found", content_type="text/plain")
    with client(kfp) as api, pytest.raises(KfpRequestError, match="HTTP 404.*is --host the KFP API"):
        api.list_recurring_runs()


def test_unreachable_host():
    with KfpClient(f"http://127.0.0.1:{free_port()}") as api, pytest.raises(KfpUnreachable, match="cannot reach KFP"):
        api.list_recurring_runs()


def test_slow_server_times_out(kfp):
    kfp.delay_s = 0.6
    api = KfpClient(kfp.url, config=ClientConfig(read_timeout_s=0.2, connect_timeout_s=0.2))
    with api, pytest.raises(KfpUnreachable, match="did not answer GET /apis/v2beta1/recurringruns within 0.2s"):
        api.list_recurring_runs()


def test_token_file_is_read_for_every_request(kfp, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("first\n")
    with client(kfp, token_file=token_file) as api:
        api.list_recurring_runs()
        token_file.write_text("second")  # the kubelet rotated the projected token
        api.list_recurring_runs()
    assert [r.headers["authorization"] for r in kfp.requests] == ["Bearer first", "Bearer second"]
