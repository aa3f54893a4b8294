"""`dultra schedule create / list / delete` against the loopback KFP stand-in, and their one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dultra.cli import main
from tests.helpers import free_port
from tests.integration.kfp_standin import API, KfpStandIn
from tests.integration.tiny_kfp_pipeline import compile_tiny_pipeline

pytestmark = pytest.mark.integration


@pytest.fixture
def kfp():
    with KfpStandIn() as standin:
        yield standin


@pytest.fixture(autouse=True)
def _no_kfp_environment(monkeypatch, tmp_path):
    """The machine's KF_PIPELINES_* settings must not leak into these tests."""
    for name in ("KF_PIPELINES_ENDPOINT", "KF_PIPELINES_TOKEN", "KF_PIPELINES_SA_TOKEN_PATH", "KF_PIPELINES_COOKIE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("dultra.schedule.auth.DEFAULT_TOKEN_PATH", tmp_path / "no-such-token")


def run(capsys, *argv):
    code = main(["schedule", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_create_uploads_and_prints_the_id_then_the_url(kfp, capsys, tmp_path, monkeypatch):
    pipeline_file = tmp_path / "pipeline.yaml"
    compile_tiny_pipeline(pipeline_file)
    monkeypatch.setenv("KF_PIPELINES_TOKEN", "env-token")
    code, out, err = run(
        capsys, "create", "--host", kfp.url + "/", "--cron", " 0 30 2 * * MON ", "--pipeline-file", str(pipeline_file),
        "--param", "a=3", "--param", "b=1e-5", "--param", "task=gsm8k", "--param", "flag=true",
        "--param", "code=007", "--param", "dest=s3://bucket/x=y", "--param", "empty=", "--param", 'obj={"k": [1]}',
        "--start", "2030-01-01", "--end", "2030-06-30T12:00:00+02:00")
    assert code == 0, err
    run_id, = kfp.recurring_runs
    assert out.splitlines() == [run_id, f"{kfp.url}/#/recurringrun/details/{run_id}"]
    assert "uploaded" in err and "next: 2030-01-07T02:30:00Z, 2030-01-14T02:30:00Z, 2030-01-21T02:30:00Z" in err
    body = kfp.requests[-1].json()
    assert body["runtime_config"] == {"parameters": {
        "a": 3, "b": 1e-5, "task": "gsm8k", "flag": True, "code": "007", "dest": "s3://bucket/x=y", "empty": "",
        "obj": {"k": [1]}}}
    assert body["trigger"] == {"cron_schedule": {"cron": "0 30 2 * * MON", "start_time": "2030-01-01T00:00:00Z",
                                                 "end_time": "2030-06-30T10:00:00Z"}}
    assert body["display_name"] == "dultra-retraining"
    assert (body["max_concurrency"], body["no_catchup"], body["mode"]) == ("1", True, "ENABLE")
    assert body["service_account"] == "dultra-pipeline"  # bound to dultra-trainjobs on standalone Pipelines too
    assert "pipeline_version_id" not in body["pipeline_version_reference"]
    assert {r.headers["authorization"] for r in kfp.requests} == {"Bearer env-token"}
    upload = next(r for r in kfp.requests if r.path == f"{API}/pipelines/upload")
    assert upload.query == {"name": ["dultra"]}


def test_a_param_the_pipeline_lacks_is_refused_before_any_request(kfp, capsys, tmp_path):
    pipeline_file = tmp_path / "pipeline.yaml"
    compile_tiny_pipeline(pipeline_file)
    code, out, err = run(capsys, "create", "--host", kfp.url, "--cron", "0 0 3 * * *", "--pipeline-file",
                         str(pipeline_file), "--param", "tsak=gsm8k")
    assert code == 2 and kfp.requests == []
    assert f"--param tsak: the pipeline in {pipeline_file} has no such parameter (did you mean task?)" in err
    code, out, err = run(capsys, "create", "--host", kfp.url, "--cron", "0 0 3 * * *", "--pipeline",
                         "dultra", "--param", "s3_destination=notanuri")  # a pipeline already there: no file
    assert code == 2 and kfp.requests == []
    assert err.startswith("dultra: error: ") and "notanuri" in err


DULTRA_YAML = (Path(__file__).resolve().parents[2] / "pipelines" / "dultra_pipeline.yaml").read_text()
"""The compiled dultra pipeline (s3_destination required; a platform spec, so the server wraps it)."""


@pytest.fixture(scope="module")
def tiny_yaml(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("pipeline") / "tiny_pipeline.yaml"
    compile_tiny_pipeline(path)
    return path.read_text()


def on_the_server(kfp: KfpStandIn, tiny_yaml: str, by: str) -> list[str]:
    """Pipeline `dultra` with two versions, the tiny pipeline then (latest) the dultra one;
    the --pipeline or --pipeline-id arguments that name it."""
    pipeline_id = kfp.add_pipeline("dultra")
    kfp.add_version(pipeline_id, tiny_yaml)
    kfp.add_version(pipeline_id, DULTRA_YAML)
    return ["--pipeline", "dultra"] if by == "name" else ["--pipeline-id", pipeline_id]


@pytest.mark.parametrize("by", ["name", "id"])
@pytest.mark.parametrize("params, message", [
    (["--param", "s3_destination=s3://my-bucket/dultra", "--param", "grpo_step=200"],
     "--param grpo_step: pipeline 'dultra' (latest version 'v2') has no such parameter (did you mean grpo_steps?)"),
    (["--param", "task=gsm8k"], "pipeline 'dultra' (latest version 'v2') requires --param s3_destination=..."),
])
def test_without_a_file_params_are_checked_against_the_latest_version(kfp, capsys, tiny_yaml, by, params, message):
    code, out, err = run(capsys, *CREATE, *on_the_server(kfp, tiny_yaml, by), *params, "--host", kfp.url)
    assert code == 2 and out == "" and err.startswith("dultra: error: ") and err.count("\n") == 1, err
    assert message in err
    assert kfp.recurring_runs == {} and [r for r in kfp.requests if r.method == "POST"] == []


@pytest.mark.parametrize("by", ["name", "id"])
def test_params_that_fit_the_latest_version_create_the_run(kfp, capsys, tiny_yaml, by):
    # grpo_steps is a parameter of the latest version only: the older one is not what runs
    code, out, err = run(capsys, *CREATE, *on_the_server(kfp, tiny_yaml, by), "--param",
                         "s3_destination=s3://my-bucket/dultra", "--param", "grpo_steps=200", "--host", kfp.url)
    assert code == 0, err
    assert "dultra: note:" not in err
    run_id, = kfp.recurring_runs
    assert kfp.recurring_runs[run_id]["runtime_config"] == {"parameters": {"s3_destination": "s3://my-bucket/dultra",
                                                                           "grpo_steps": 200}}
    versions = [r for r in kfp.requests if r.path.endswith("/versions")]
    assert [r.query for r in versions] == [{"sort_by": ["created_at desc"], "page_size": ["1"]}]


def test_a_file_not_uploaded_does_not_stand_for_the_version_that_runs(kfp, capsys, tmp_path, tiny_yaml):
    """The pipeline exists, so its latest version runs, not the local file: the params are checked against it."""
    kfp.add_version(kfp.add_pipeline("dultra"), tiny_yaml)
    pipeline_file = tmp_path / "dultra_pipeline.yaml"
    pipeline_file.write_text(DULTRA_YAML)
    code, out, err = run(capsys, *CREATE, "--pipeline-file", str(pipeline_file), "--param",
                         "s3_destination=s3://my-bucket/dultra", "--host", kfp.url)
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert "--param s3_destination: pipeline 'dultra' (latest version 'v1') has no such parameter" in err
    assert err.rstrip().endswith(f"{pipeline_file} was not uploaded, as pipeline 'dultra' exists: upload it as a new "
                                 "version to run it")
    assert kfp.recurring_runs == {} and [r for r in kfp.requests if r.method == "POST"] == []


@pytest.mark.parametrize("version, why", [
    ({}, "(pipeline 'dultra' (latest version 'v1'): the server sent no compiled pipeline spec)"),
    ({"error": {"code": 13, "message": "Failed to convert a pipeline version\ndue to error in parsing its spec"}},
     "(pipeline 'dultra' (latest version 'v1'): the server said: Failed to convert a pipeline version due to error "
     "in parsing its spec)"),
    (None, "(pipeline 'dultra' has no version)"),
])
def test_a_version_without_a_spec_gives_a_note_and_the_run_is_created(kfp, capsys, version, why):
    pipeline_id = kfp.add_pipeline("dultra")
    if version is not None:
        kfp.add_version(pipeline_id, **version)
    code, out, err = run(capsys, *CREATE, "--param", "anything=1", "--host", kfp.url)
    assert code == 0, err
    note, = [line for line in err.splitlines() if line.startswith("dultra: note: ")]
    assert note.startswith("dultra: note: --param not checked ") and why in note
    run_id, = kfp.recurring_runs
    assert out.splitlines()[0] == run_id
    assert kfp.recurring_runs[run_id]["runtime_config"] == {"parameters": {"anything": 1}}


def test_list_shows_a_table_and_json(kfp, capsys):
    pipeline_id = kfp.add_pipeline("dultra")
    enabled = kfp.add_recurring_run("nightly", pipeline_id, cron="0 0 3 * * *")
    kfp.add_recurring_run("paused", pipeline_id, cron="0 0 4 * * *", status="DISABLED")
    kfp.add_recurring_run("hourly", pipeline_id, cron=None)
    pinned = kfp.add_recurring_run("pinned", "deleted-pipeline", cron="0 0 5 * * *",
                                   pipeline_version_reference={"pipeline_id": "deleted-pipeline",
                                                               "pipeline_version_id": "v1"})
    code, out, _ = run(capsys, "list", "--host", kfp.url, "--json")
    assert code == 0
    rows = {row["name"]: row for row in json.loads(out)}
    assert rows["nightly"]["id"] == enabled and rows["nightly"]["pipeline"] == "dultra"
    assert rows["nightly"]["version"] == "latest" and rows["nightly"]["next_trigger"].endswith("T03:00:00Z")
    assert rows["paused"]["status"] == "DISABLED" and rows["paused"]["next_trigger"] is None
    assert rows["hourly"]["cron"] == "every 3600s" and rows["hourly"]["next_trigger"] is None
    assert rows["pinned"]["id"] == pinned and rows["pinned"]["pipeline"] == "deleted-pipeline"
    assert rows["pinned"]["version"] == "v1"

    code, out, _ = run(capsys, "list", "--host", kfp.url)
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["ID", "NAME", "CRON", "(UTC)", "STATUS", "PIPELINE", "VERSION",
                                              "NEXT", "(UTC)"]
    nightly = next(line for line in lines if enabled in line)
    assert "0 0 3 * * *" in nightly and "ENABLED" in nightly and "dultra" in nightly


def test_delete_by_name_prints_the_id(kfp, capsys):
    pipeline_id = kfp.add_pipeline("dultra")
    run_id = kfp.add_recurring_run("nightly", pipeline_id)
    code, out, _ = run(capsys, "delete", "--host", kfp.url, "--name", "nightly")
    assert code == 0 and out.strip() == run_id and kfp.recurring_runs == {}


@pytest.mark.parametrize("name", ["", "  "])
def test_a_blank_name_is_refused_and_deletes_nothing(kfp, capsys, name):
    """KFP's list ignores an empty name filter: every recurring run matched, and one was deleted."""
    pipeline_id = kfp.add_pipeline("dultra")
    kfp.add_recurring_run("nightly-prod", pipeline_id)
    for argv in (["delete", "--name", name], [*CREATE, "--name", name, "--replace"], [*CREATE, "--experiment", name],
                 [*CREATE, "--pipeline", name]):
        code, _, err = run(capsys, *argv, "--host", kfp.url)
        assert code == 2 and "is empty; give a name" in err, err
    assert [r["display_name"] for r in kfp.recurring_runs.values()] == ["nightly-prod"]
    assert kfp.requests == []


def test_unreadable_local_files_are_one_line_errors(kfp, capsys, tmp_path):
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    (tmp_path / "root.yaml").write_text("pipelineInfo: {name: x}\nroot: 5\n")
    for argv, message in [(["--pipeline-file", str(binary)], "is not YAML"),
                          (["--pipeline-file", str(tmp_path / "root.yaml")], "is not a compiled KFP pipeline"),
                          (["--token-file", str(binary)], f"token file {binary} is not text")]:
        code, _, err = run(capsys, *CREATE, *argv, "--host", kfp.url)
        assert code == 2 and err.startswith("dultra: error: ") and err.count("\n") == 1 and message in err, err
    assert kfp.requests == []


def test_host_comes_from_the_environment(kfp, capsys, monkeypatch):
    monkeypatch.setenv("KF_PIPELINES_ENDPOINT", kfp.url)
    code, _, err = run(capsys, "list")
    assert code == 0 and "no recurring runs" in err
    assert [r.path for r in kfp.requests] == [f"{API}/recurringruns"]


CREATE = ["create", "--cron", "0 0 3 * * *"]


@pytest.mark.parametrize("argv, setup, message", [
    (["create", "--cron", "0 3 * * *"], None, "has 5 fields, but KFP crons have 6 with seconds first"),
    (["create", "--cron", "0 0 3 * * 7"], None, "day-of-week field '7' is outside 0-6"),
    (["create", "--cron", "0 0 0 31 4 *"], None, "never fires"),
    (["create", "--cron", "0 0 3 L * *"], None, "no L, W, #"),
    ([*CREATE, "--param", "novalue"], None, "--param 'novalue': expected KEY=VALUE"),
    ([*CREATE, "--param", "a=1", "--param", "a=2"], None, "--param a is given twice"),
    ([*CREATE, "--param", "lr=NaN"], None, "--param 'lr=NaN': not a finite number"),
    ([*CREATE, "--param", "lr=1e999"], None, "--param 'lr=1e999': not a finite number"),
    ([*CREATE, "--param", "lrs=[1, Infinity]"], None, "not a finite number"),
    ([*CREATE, "--token", "abc\ndef"], None, "the bearer token holds a line break"),
    ([*CREATE, "--cookie", "session=\u00e9"], None, "the cookie holds a line break, control or non-ASCII"),
    ([*CREATE, "--start", "tomorrow"], None, "--start 'tomorrow': expected ISO 8601"),
    ([*CREATE, "--start", "2030-02-01", "--end", "2030-01-01"], None, "is not after --start"),
    ([*CREATE, "--end", "2001-01-01"], None, "is in the past"),
    (["create", "--cron", "0 0 0 29 2 *", "--start", "2029-03-01", "--end", "2031-06-01"], None,
     "cron '0 0 0 29 2 *' never fires between 2029-03-01T00:00:00Z and --end 2031-06-01T00:00:00Z"),
    ([*CREATE, "--pipeline-id", "p", "--pipeline-file", "x.yaml"], None, "not with --pipeline-id"),
    (CREATE, None, "pipeline named 'dultra'"),
    ([*CREATE, "--token", "t", "--token-file", "f"], None, "a token or a token file, not both"),
    ([*CREATE, "--token-file", "/nonexistent/token"], None, "cannot read token file /nonexistent/token"),
    (["delete"], None, "give either a recurring run id or --name"),
    (["delete", "no-such-id"], None, "no recurring run with id no-such-id"),
    (["list"], lambda kfp: setattr(kfp, "token", "right"), "HTTP 401"),
    (["list"], lambda kfp: setattr(kfp, "cookie", "session=1"), "redirected"),
    (["list"], lambda kfp: kfp.fail("GET", f"{API}/recurringruns", 502, "bad gateway\nupstream reset",
                                   content_type="text/plain"), "HTTP 502): bad gateway upstream reset"),
    (CREATE, lambda kfp: kfp.fail("GET", f"{API}/pipelines/{kfp.add_pipeline('dultra')}/versions", 500,
                                  {"code": 13, "message": "List pipeline versions failed:\ndatabase is locked"}),
     "/versions (HTTP 500): List pipeline versions failed: database is locked"),
    (["list"], lambda kfp: kfp.fail("GET", f"{API}/recurringruns", 200, {"recurringRuns": 5}),
     "GET /apis/v2beta1/recurringruns at http://127.0.0.1:"),
    (["list"], lambda kfp: kfp.fail("GET", f"{API}/recurringruns", 200, {"recurring_runs": [["r-1"]]}),
     'answered JSON that a KFP v2beta1 server does not send: recurring_runs[0] is ["r-1"], not an object'),
    (["list"], lambda kfp: kfp.fail("GET", f"{API}/recurringruns", 200, '[{"recurring_runs": []}]'),
     "answered [{\"recurring_runs\": []}], not KFP JSON"),
    (CREATE, lambda kfp: kfp.fail("GET", f"{API}/pipelines/{kfp.add_pipeline('dultra')}/versions", 200,
                                  {"pipeline_versions": [{"error": "unreadable"}]}),
     'pipeline_versions[0] has error "unreadable", not an object'),
])
def test_one_line_errors(kfp, capsys, argv, setup, message):
    if setup is not None:
        setup(kfp)
    code, out, err = run(capsys, *argv, "--host", kfp.url)
    assert code == 2 and out == ""
    assert err.startswith("dultra: error: ") and err.count("\n") == 1, err
    assert message in err
    assert "Traceback" not in err


@pytest.mark.parametrize("argv, message", [
    (["list", "--host", f"http://127.0.0.1:{free_port()}"], "cannot reach KFP"),
    (["list", "--host", "localhost:8080"], "must be an http:// or https:// URL"),
    (["list", "--host", "http://[::1"], "is not a valid URL"),
    (["list", "--host", "http://localhost:abc"], "is not a valid URL"),
    (["list"], "give --host (the KFP API URL) or set KF_PIPELINES_ENDPOINT"),
])
def test_one_line_errors_without_a_server(capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == "" and err.count("\n") == 1 and message in err, err
