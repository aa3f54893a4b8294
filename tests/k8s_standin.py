"""A Kubernetes API stand-in on loopback for components/trainjob.py (no cluster runs here).

    with StandIn([Phase(None, [], until=2), Phase(RUNNING, [pod("pod-running", "p1", job)], until="logs:p1"),
                  Phase(COMPLETE, [pod("pod-succeeded", "p1", job)])], logs={"p1": PodLog(["step 1"])}) as api:
        run_trainjob(spec, api.client())
        api.requests   # every request, exactly as sent: method, path, query, JSON body

A real HTTP server that the official `kubernetes` client talks to over the wire. It keeps a
store like the API server (POST creates or answers 409, GET serves the stored TrainJob with the
current phase's status, DELETE marks it and a later GET finds it gone), serves the pods of
the current phase filtered by the request's label selector, and emulates a kubelet's log
endpoint: lines get real timestamps when "written", `follow`, `timestamps` and `sinceSeconds`
behave as documented, and a stream can be cut mid-way. Responses are the JSON fixtures in
tests/fixtures/k8s. A phase ends after `until` TrainJob GETs, or once a pod's log is fully
written ("logs:POD"), so scenarios do not depend on timing.
"""

from __future__ import annotations

import copy
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from kubernetes import client as k8s

FIXTURES = Path(__file__).parent / "fixtures" / "k8s"
TRAINJOBS = "/apis/trainer.kubeflow.org/v1alpha1/namespaces/{ns}/trainjobs"


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def pod(kind: str, name: str, job: str, created: str = "2026-01-05T10:00:02Z", node: int = 0) -> dict[str, Any]:
    """A pod fixture (pod-running, pod-failed...) of TrainJob `job`, renamed `name`, of node
    `node` (the Job's completion index, as the indexed Job labels and annotates it)."""
    text = (FIXTURES / f"{kind}.json").read_text().replace("JOB", job)
    obj = json.loads(text)
    obj["metadata"].update(name=name, uid=f"uid-{name}", creationTimestamp=created)
    obj["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"] = str(node)
    obj["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] = str(node)
    return obj


@dataclass
class PodLog:
    """A pod's trainer container: it starts when its log is first requested, then writes a line
    every `delay` seconds whoever reads (as a kubelet keeps the log file); `ended`: it ran before
    the test started and its lines are all written."""

    lines: list[str]
    delay: float = 0.01
    drop_after: int | None = None  # the first follow stream is cut after sending this many lines
    ended: bool = False
    written: list[tuple[int, str]] = field(default_factory=list)  # (time in ns, text)
    started: bool = False

    def __post_init__(self):
        if self.ended:
            now = time.time_ns() - 10**9 * len(self.lines)
            self.written = [(now + 10**9 * i, text) for i, text in enumerate(self.lines)]
            self.started = True

    @property
    def done(self) -> bool:
        return len(self.written) == len(self.lines)

    def start(self, lock: threading.RLock) -> None:
        with lock:
            if self.started:
                return
            self.started = True

        def write():
            for text in self.lines:
                time.sleep(self.delay)
                with lock:
                    self.written.append((time.time_ns(), text))

        threading.Thread(target=write, daemon=True).start()


@dataclass
class Phase:
    """What the API serves for a while: the TrainJob's status block and its pods."""

    status: dict[str, Any] | None
    pods: list[dict[str, Any]]
    until: int | str = 1  # TrainJob GETs served in this phase, or "logs:POD" (that log fully written)
    error: str | None = None  # a status fixture every TrainJob GET answers in this phase (e.g. an outage)
    gets: int = 0


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    body: Any


def go_bool(text: str | None) -> bool:
    """A query flag as the API server parses it (Go's strconv.ParseBool)."""
    return text in ("1", "t", "T", "true", "TRUE", "True")


def kubelet_time(ns: int) -> str:
    """RFC 3339 with nanoseconds and trailing zeros trimmed, as a kubelet stamps log lines."""
    seconds, frac = divmod(ns, 1_000_000_000)
    stamp = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    digits = f"{frac:09d}".rstrip("0")
    return f"{stamp}.{digits}Z" if digits else f"{stamp}Z"


def rbac_attributes(req: Request) -> tuple[str, str, str]:
    """(apiGroup, resource, verb) that RBAC checks for a request."""
    parts = req.path.strip("/").split("/")
    group = "" if parts[0] == "api" else parts[1]
    rest = parts[2:] if parts[0] == "api" else parts[3:]
    assert rest[0] == "namespaces", req.path
    resource = rest[2]
    named = len(rest) > 3
    if len(rest) > 4:
        resource += "/" + rest[4]
    verb = {"POST": "create", "DELETE": "delete", "PUT": "update", "PATCH": "patch"}.get(req.method)
    if verb is None:
        verb = "get" if named else ("watch" if go_bool(req.query.get("watch")) else "list")
    return group, resource, verb


class StandIn:
    def __init__(self, phases: list[Phase], logs: dict[str, PodLog] | None = None,
                 existing: dict[str, Any] | None = None, namespace: str = "dultra",
                 create_error: str | None = None, pods_error: str | None = None):
        self.phases, self.logs, self.namespace = phases, logs or {}, namespace
        self.create_error = create_error  # a status fixture POST answers with
        self.pods_error = pods_error  # a status fixture the pod list answers with
        self.store: dict[str, dict[str, Any]] = {}
        if existing is not None:
            self._store(copy.deepcopy(existing))
        self.requests: list[Request] = []
        self.phase = 0
        self.lock = threading.RLock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def client(self) -> k8s.ApiClient:
        config = k8s.Configuration(host=self.url)
        return k8s.ApiClient(config)

    def __enter__(self) -> StandIn:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def calls(self, method: str | None = None, suffix: str = "") -> list[Request]:
        return [r for r in self.requests if (method is None or r.method == method) and r.path.endswith(suffix)]

    # ------------------------------------------------------------------ API semantics
    def _store(self, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        meta.update(uid=f"uid-{meta['name']}", resourceVersion="1001", generation=1,
                    creationTimestamp="2026-01-05T10:00:00Z")
        self.store[meta["name"]] = obj
        return obj

    def _advance(self) -> None:
        while self.phase < len(self.phases) - 1:
            current = self.phases[self.phase]
            if isinstance(current.until, int):
                done = current.gets >= current.until
            else:
                done = self.logs[current.until.removeprefix("logs:")].done
            if not done:
                return
            self.phase += 1

    def get_job(self, name: str) -> tuple[int, dict[str, Any]]:
        with self.lock:
            obj = self.store.get(name)
            if obj is None:
                return 404, _status("status-not-found", name)
            if obj["metadata"].get("deletionTimestamp"):
                del self.store[name]  # foreground deletion finished: the next GET finds nothing
                return 200, obj
            self._advance()
            phase = self.phases[self.phase]
            phase.gets += 1
            if phase.error:
                return _status(phase.error, name)["code"], _status(phase.error, name)
            served = copy.deepcopy(obj)
            if phase.status is not None:
                served["status"] = phase.status
            return 200, served

    def create_job(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        name = body["metadata"]["name"]
        with self.lock:
            if self.create_error:
                return _status(self.create_error, name)["code"], _status(self.create_error, name)
            if name in self.store:
                return 409, _status("status-already-exists", name)
            return 201, copy.deepcopy(self._store(copy.deepcopy(body)))

    def delete_job(self, name: str) -> tuple[int, dict[str, Any]]:
        with self.lock:
            obj = self.store.get(name)
            if obj is None:
                return 404, _status("status-not-found", name)
            obj["metadata"]["deletionTimestamp"] = "2026-01-05T13:00:00Z"
            return 200, copy.deepcopy(obj)

    def list_pods(self, selector: str) -> dict[str, Any]:
        wanted = dict(term.split("=", 1) for term in selector.split(",") if term)
        with self.lock:
            pods = [p for p in self.phases[self.phase].pods
                    if all(p["metadata"]["labels"].get(k) == v for k, v in wanted.items())]
        return {"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "50000"},
                "items": copy.deepcopy(pods)}


def _status(name: str, job: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text().replace("JOB", job))


def _handler(api: StandIn):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # quiet
            pass

        def _record(self) -> Request:
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            req = Request(self.command, url.path, {k: v[-1] for k, v in parse_qs(url.query).items()},
                          json.loads(raw) if raw else None)
            with api.lock:
                api.requests.append(req)
            return req

        def _json(self, code: int, obj: dict[str, Any]) -> None:
            data = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):
            req = self._record()
            if req.path == TRAINJOBS.format(ns=api.namespace):
                return self._json(*api.create_job(req.body))
            self._json(404, _status("status-not-found", req.path))

        def do_DELETE(self):
            req = self._record()
            base = TRAINJOBS.format(ns=api.namespace) + "/"
            if req.path.startswith(base):
                return self._json(*api.delete_job(req.path.removeprefix(base)))
            self._json(404, _status("status-not-found", req.path))

        def do_GET(self):
            req = self._record()
            jobs = TRAINJOBS.format(ns=api.namespace) + "/"
            pods = f"/api/v1/namespaces/{api.namespace}/pods"
            if req.path.startswith(jobs):
                return self._json(*api.get_job(req.path.removeprefix(jobs)))
            if req.path == pods and api.pods_error:
                return self._json(_status(api.pods_error, "")["code"], _status(api.pods_error, ""))
            if req.path == pods:
                return self._json(200, api.list_pods(req.query.get("labelSelector", "")))
            if req.path.startswith(pods + "/") and req.path.endswith("/log"):
                return self._log(req.path.removeprefix(pods + "/").removesuffix("/log"), req.query)
            self._json(404, _status("status-not-found", req.path))

        def _log(self, name: str, query: dict[str, str]) -> None:
            log = api.logs.get(name)
            if log is None:
                return self._json(404, _status("status-not-found", name))
            if query.get("container") != "node":
                return self._json(400, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 400,
                                        "reason": "BadRequest", "message": "container not valid for pod"})
            log.start(api.lock)
            follow, stamps = go_bool(query.get("follow")), go_bool(query.get("timestamps"))
            since = int(query["sinceSeconds"]) if "sinceSeconds" in query else None
            cutoff = time.time_ns() - since * 1_000_000_000 if since is not None else 0
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                self._send_lines(log, cutoff, follow, stamps)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up on this stream (idle timeout)

        def _send_lines(self, log: PodLog, cutoff: int, follow: bool, stamps: bool) -> None:
            """What is written so far, then (follow) new lines until the container ends."""
            index, sent = 0, 0
            while True:
                with api.lock:
                    batch, done = log.written[index:], log.done
                index += len(batch)
                for ts, text in batch:
                    if ts < cutoff:
                        continue
                    self._chunk(ts, text, stamps)
                    sent += 1
                    if follow and log.drop_after is not None and sent >= log.drop_after:
                        log.drop_after = None  # cut once, like a dropped connection
                        self.connection.shutdown(socket.SHUT_RDWR)
                        self.close_connection = True
                        return
                if done or not follow:
                    break
                time.sleep(0.005)
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

        def _chunk(self, ts: int, text: str, stamps: bool) -> None:
            data = ((kubelet_time(ts) + " " if stamps else "") + text + "\n").encode()
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

    return Handler
