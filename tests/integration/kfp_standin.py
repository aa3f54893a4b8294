"""A local stand-in of the Kubeflow Pipelines v2beta1 REST API that records every request.

    with KfpStandIn() as kfp:                      # a real HTTP server on 127.0.0.1:<free port>
        kfp.add_pipeline("dultra")
        ... KfpClient(kfp.url) ...
        assert kfp.requests[0].method == "GET"

It keeps pipelines (with their versions), experiments and recurring runs in memory and
answers the endpoints dultra uses with the shapes of the real server (proto field names,
grpc-gateway error bodies `{"code", "message", "details"}`, the upload handler's
`{"error_message", ...}`, pages with `next_page_token`, a version's `pipeline_spec` as
the backend builds it from the YAML). It is not KFP: it validates only what the tests need.

Knobs for error paths: `fail(...)` queues canned responses for a method + path,
`token` / `cookie` make it demand credentials (401, or a 302 to a login page like
oauth2-proxy), `delay_s` makes it slow.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import re
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

API = "/apis/v2beta1"


@dataclass
class Recorded:
    """One request as the server received it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    """Lower-case names."""
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def form_files(self) -> dict[str, tuple[str, str, bytes]]:
        """multipart/form-data parts: name -> (filename, content type, bytes)."""
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + self.headers["content-type"].encode() + b"\r\n\r\n" + self.body)
        parts = {}
        for part in message.iter_parts():
            parts[part.get_param("name", header="content-disposition")] = (
                part.get_filename(), part.get_content_type(), part.get_payload(decode=True))
        return parts


@dataclass
class _Failure:
    method: str
    path: str
    status: int
    body: bytes
    content_type: str
    headers: dict[str, str] = field(default_factory=dict)


class KfpStandIn:
    """See the module docstring."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.pipelines: dict[str, dict] = {}
        self.versions: dict[str, list[dict]] = {}
        """pipeline id -> its versions, oldest first."""
        self.experiments: dict[str, dict] = {}
        self.recurring_runs: dict[str, dict] = {}
        self.token: str | None = None
        self.cookie: str | None = None
        self.delay_s = 0.0
        self._failures: list[_Failure] = []
        self._lock = threading.Lock()
        self.server_errors: list[str] = []
        """Exceptions in request handlers (e.g. the client hung up on a slow answer)."""
        self._server = _Server(("127.0.0.1", 0), self._handler_class())
        self._server.standin = self
        # A short poll interval: shutdown() waits for the next poll.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> KfpStandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- state and knobs --------------------------------------------------------------------

    def add_pipeline(self, name: str, namespace: str = "") -> str:
        pipeline_id = _new_id()
        self.pipelines[pipeline_id] = {"pipeline_id": pipeline_id, "name": name, "display_name": name,
                                       "namespace": namespace, "created_at": "2025-01-01T00:00:00Z"}
        return pipeline_id

    def add_version(self, pipeline_id: str, compiled_yaml: str | None = None, name: str | None = None,
                    **extra: Any) -> str:
        """A new (latest) version of the pipeline; without `compiled_yaml` it has no pipeline_spec,
        as the server answers for a spec it cannot read."""
        versions = self.versions.setdefault(pipeline_id, [])
        version_id = _new_id()
        version = {"pipeline_id": pipeline_id, "pipeline_version_id": version_id,
                   "name": name or f"v{len(versions) + 1}", "display_name": name or f"v{len(versions) + 1}",
                   # each one a second newer: sorting by created_at finds the latest
                   "created_at": f"2025-01-01T00:00:{len(versions):02d}Z", **extra}
        if compiled_yaml is not None:
            version["pipeline_spec"] = _spec_struct(compiled_yaml)
        versions.append(version)
        return version_id

    def add_experiment(self, name: str, namespace: str = "") -> str:
        experiment_id = _new_id()
        self.experiments[experiment_id] = {"experiment_id": experiment_id, "display_name": name,
                                           "namespace": namespace, "storage_state": "AVAILABLE"}
        return experiment_id

    def add_recurring_run(self, name: str, pipeline_id: str, cron: str | None = "0 0 3 * * *",
                          status: str = "ENABLED", namespace: str = "", **extra: Any) -> str:
        run_id = _new_id()
        trigger = {"cron_schedule": {"cron": cron}} if cron else {"periodic_schedule": {"interval_second": "3600"}}
        self.recurring_runs[run_id] = {
            "recurring_run_id": run_id, "display_name": name, "trigger": trigger, "status": status,
            "mode": "ENABLE" if status == "ENABLED" else "DISABLE", "max_concurrency": "1",
            "pipeline_version_reference": {"pipeline_id": pipeline_id}, "namespace": namespace,
            "created_at": "2025-01-01T00:00:00Z", **extra}
        return run_id

    def fail(self, method: str, path: str, status: int, body: str | dict = "", *,
             content_type: str = "application/json", headers: dict[str, str] | None = None) -> None:
        """Answer the next `method path` (path without query) with this response, once."""
        raw = json.dumps(body).encode() if isinstance(body, dict) else body.encode()
        self._failures.append(_Failure(method, path, status, raw, content_type, headers or {}))

    # -- HTTP ----------------------------------------------------------------------------------

    def _handler_class(self):
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def _serve(self) -> None:
                split = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                recorded = Recorded(self.command, split.path, parse_qs(split.query, keep_blank_values=True),
                                    {k.lower(): v for k, v in self.headers.items()}, self.rfile.read(length))
                with standin._lock:
                    standin.requests.append(recorded)
                if standin.delay_s:
                    time.sleep(standin.delay_s)
                status, body, content_type, headers = standin._respond(recorded)
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_DELETE = _serve

        return Handler

    def _respond(self, r: Recorded) -> tuple[int, bytes, str, dict[str, str]]:
        with self._lock:
            for i, failure in enumerate(self._failures):
                if failure.method == r.method and failure.path == r.path:
                    del self._failures[i]
                    return failure.status, failure.body, failure.content_type, failure.headers
        if self.cookie is not None and r.headers.get("cookie") != self.cookie:
            return 302, b"", "text/html", {"Location": "/oauth2/start?rd=" + r.path}
        if self.token is not None and r.headers.get("authorization") != f"Bearer {self.token}":
            return _error(401, 16, "Unauthenticated: request is missing a valid bearer token")
        try:
            status, data = self._route(r)
        except KeyError as err:
            return _error(404, 5, f"Not found: {err.args[0]}")
        except ValueError as err:  # a request dultra should never send; the test sees a 400
            return _error(400, 3, f"Invalid input: {err}")
        return status, json.dumps(data).encode(), "application/json", {}

    def _route(self, r: Recorded) -> tuple[int, dict]:
        q = {k: v[0] for k, v in r.query.items()}
        m, p = r.method, r.path
        if (m, p) == ("GET", f"{API}/pipelines"):
            return 200, _page(self.pipelines, q, "pipelines", "name")
        if (m, p) == ("POST", f"{API}/pipelines/upload"):
            return self._upload(r, q)
        if m == "GET" and (match := re.fullmatch(f"{API}/pipelines/([^/]+)/versions", p)):
            return 200, self._list_versions(match.group(1), q)
        if m == "GET" and (match := re.fullmatch(f"{API}/pipelines/([^/]+)", p)):
            return 200, self.pipelines[match.group(1)]
        if (m, p) == ("GET", f"{API}/experiments"):
            return 200, _page(self.experiments, q, "experiments", "display_name")
        if (m, p) == ("POST", f"{API}/experiments"):
            body = r.json()
            experiment_id = self.add_experiment(body["display_name"], body.get("namespace", ""))
            return 200, self.experiments[experiment_id]
        if (m, p) == ("GET", f"{API}/recurringruns"):
            return 200, _page(self.recurring_runs, q, "recurring_runs", "display_name")
        if (m, p) == ("POST", f"{API}/recurringruns"):
            return self._create_run(r.json())
        if match := re.fullmatch(f"{API}/recurringruns/([^/]+)", p):
            run = self.recurring_runs[match.group(1)]
            if m == "DELETE":
                del self.recurring_runs[match.group(1)]
                return 200, {}
            return 200, run
        raise KeyError(f"{m} {p}")

    def _upload(self, r: Recorded, q: dict[str, str]) -> tuple[int, dict]:
        files = r.form_files()
        if "uploadfile" not in files:
            return 400, {"error_message": "Failed to read pipeline from file", "error_details": "no uploadfile"}
        pipeline_id = self.add_pipeline(q["name"], q.get("namespace", ""))
        self.add_version(pipeline_id, files["uploadfile"][2].decode(), name=q["name"])  # as the server does
        return 200, self.pipelines[pipeline_id]

    def _list_versions(self, pipeline_id: str, q: dict[str, str]) -> dict:
        self.pipelines[pipeline_id]  # noqa: B018 - a KeyError (404) for an unknown pipeline
        versions = list(self.versions.get(pipeline_id, []))
        sort_by = q.get("sort_by", "")
        if sort_by not in ("", "created_at", "created_at asc", "created_at desc"):
            raise ValueError(f"unexpected sort_by {sort_by!r}")
        versions.sort(key=lambda v: v["created_at"], reverse=sort_by.endswith("desc"))
        return _page({v["pipeline_version_id"]: v for v in versions}, q, "pipeline_versions", "name")

    def _create_run(self, body: dict) -> tuple[int, dict]:
        if not 1 <= int(body.get("max_concurrency", 0)) <= 10:
            return 400, {"code": 3, "message": "Max concurrency of a recurring run must be at least 1 and at most 10",
                         "details": []}
        experiment = self.experiments[body["experiment_id"]]
        run_id = _new_id()
        run = {**body, "recurring_run_id": run_id, "namespace": experiment["namespace"],
               "status": "ENABLED" if body.get("mode") == "ENABLE" else "DISABLED",
               "created_at": "2025-01-01T00:00:00Z", "updated_at": "2025-01-01T00:00:00Z"}
        self.recurring_runs[run_id] = run
        return 200, run


class _Server(ThreadingHTTPServer):
    # Handler threads are joined on close (server_close), so a slow answer still being
    # written cannot spill into a later test; their errors are recorded, not printed.
    daemon_threads = False
    block_on_close = True
    standin: KfpStandIn

    def handle_error(self, request, client_address) -> None:
        self.standin.server_errors.append(repr(sys.exc_info()[1]))


def _page(items: dict[str, dict], q: dict[str, str], key: str, filter_key: str) -> dict:
    selected = list(items.values())
    if "namespace" in q:
        selected = [i for i in selected if i.get("namespace", "") == q["namespace"]]
    else:  # no namespace: shared resources only, as in multi-user KFP
        selected = [i for i in selected if not i.get("namespace")]
    if "experiment_id" in q:
        selected = [i for i in selected if i.get("experiment_id") == q["experiment_id"]]
    if "filter" in q:
        for predicate in json.loads(q["filter"])["predicates"]:
            if predicate["key"] != filter_key or predicate["operation"] != "EQUALS":
                raise ValueError(f"unexpected filter predicate {predicate}")
            selected = [i for i in selected if i.get(filter_key) == predicate["stringValue"]]
    start = int(q.get("page_token") or 0)
    size = int(q.get("page_size") or 20)
    page: dict[str, Any] = {"total_size": len(selected)}
    if selected[start:start + size]:  # grpc-gateway leaves out empty lists
        page[key] = selected[start:start + size]
    if start + size < len(selected):
        page["next_page_token"] = str(start + size)
    return page


def _spec_struct(compiled_yaml: str) -> dict:
    """A version's pipeline_spec as the backend builds it from the uploaded YAML: the spec
    itself, or {"pipeline_spec", "platform_spec"} when a document holds Kubernetes platform
    config (kubeflow/pipelines backend/src/apiserver/server YamlStringToPipelineSpecStruct)."""
    spec, platform = None, None
    for doc in yaml.safe_load_all(compiled_yaml):
        if isinstance(doc, dict) and "kubernetes" in (doc.get("platforms") or {}):
            platform = doc
        else:
            spec = doc
    return spec if platform is None else {"pipeline_spec": spec, "platform_spec": platform}


def _error(status: int, code: int, message: str) -> tuple[int, bytes, str, dict[str, str]]:
    body = json.dumps({"code": code, "message": message, "details": []}).encode()
    return status, body, "application/json", {}


def _new_id() -> str:
    return str(uuid.uuid4())
