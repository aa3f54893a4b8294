"""A small client of the Kubeflow Pipelines REST API (v2beta1), on httpx, for scheduling.

    from dultra.schedule import KfpAuth, KfpClient
    with KfpClient("http://localhost:8080", auth=KfpAuth.resolve()) as kfp:
        pipeline = kfp.find_pipelines("dultra")[0]
        runs = kfp.list_recurring_runs()

Why not `kfp.Client`: the library must not import Kubeflow packages, and the handful of
calls dultra needs are plain JSON over HTTP. Endpoints used (all under `/apis/v2beta1`):

    GET    /pipelines?filter=...           find a pipeline by name (+ namespace)
    GET    /pipelines/{id}                 check a pipeline id
    GET    /pipelines/{id}/versions        its latest version, to check --param against
    POST   /pipelines/upload?name=...      upload a compiled pipeline (multipart `uploadfile`)
    GET    /experiments?filter=...         find an experiment by name
    POST   /experiments                    create one
    POST   /recurringruns                  create a recurring run
    GET    /recurringruns                  list (paged; namespace, experiment_id, filter)
    GET    /recurringruns/{id}             read one
    DELETE /recurringruns/{id}             delete one

- `host` is the API base the kfp SDK would take: a port-forward of `ml-pipeline-ui` or
  `ml-pipeline` (`http://localhost:8080`), or `https://<kubeflow>/pipeline` through
  Kubeflow's gateway. Paths are appended to it.
- Explicit timeouts (`ClientConfig`), no retries: creating a recurring run is not
  idempotent, and a command-line user can simply run the command again.
- Redirects are not followed: behind Dex/oauth2-proxy a redirect means "log in first",
  which is reported as `KfpAuthError` rather than parsed as a login page.
- Typed errors (`dultra.schedule.errors`); `transport=` takes any `httpx.BaseTransport`.
  An answer of the wrong shape (a number where a list of objects belongs) is a one-line
  KfpServerError naming the endpoint and the field, not a TypeError further on.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx

from dultra.errors import one_line
from dultra.schedule.auth import KfpAuth
from dultra.schedule.errors import (
    KfpAuthError,
    KfpError,
    KfpRequestError,
    KfpServerError,
    KfpUnreachable,
    PipelineNotFound,
    RecurringRunNotFound,
    ScheduleSettingsError,
)
from dultra.schedule.models import Experiment, Pipeline, PipelineVersion, RecurringRun, member

API = "/apis/v2beta1"
T = TypeVar("T")


@dataclass(frozen=True)
class ClientConfig:
    """Timeouts and paging."""

    connect_timeout_s: float = 10.0
    """Seconds to open a connection (and TLS handshake)."""
    read_timeout_s: float = 60.0
    """Seconds to wait for each response (an upload of a large pipeline takes a while)."""
    page_size: int = 100
    """Items per page when listing; every page is fetched."""


class KfpClient:
    """Talks to one KFP API server. See the module docstring for endpoints and errors."""

    def __init__(self, host: str, auth: KfpAuth | None = None, config: ClientConfig | None = None,
                 transport: httpx.BaseTransport | None = None):
        self.host = normalize_host(host)
        self.auth = auth or KfpAuth()
        self.config = config or ClientConfig()
        timeout = httpx.Timeout(self.config.read_timeout_s, connect=self.config.connect_timeout_s)
        self._http = httpx.Client(base_url=self.host, timeout=timeout, transport=transport,
                                  auth=self.auth.httpx_auth(), follow_redirects=False,
                                  headers={"Accept": "application/json", "User-Agent": _user_agent()})

    def __enter__(self) -> KfpClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def ui_url(self, recurring_run_id: str) -> str:
        """The KFP UI page of a recurring run (the UI serves the API at the same base URL)."""
        return f"{self.host}/#/recurringrun/details/{recurring_run_id}"

    # -- pipelines ---------------------------------------------------------------------------

    def get_pipeline(self, pipeline_id: str) -> Pipeline:
        path = f"{API}/pipelines/{pipeline_id}"
        return self._parse(f"GET {path}", "the answer", Pipeline.from_json,
                           self._request("GET", path, not_found=self._pipeline_missing(pipeline_id)))

    def latest_pipeline_version(self, pipeline_id: str) -> PipelineVersion | None:
        """The pipeline's newest version (what a recurring run without a version id runs);
        None if it has none."""
        params = {"sort_by": "created_at desc", "page_size": "1"}
        path = f"{API}/pipelines/{pipeline_id}/versions"
        page = self._request("GET", path, params=params, not_found=self._pipeline_missing(pipeline_id))
        versions, _ = self._parse(f"GET {path}", "the answer", lambda p: page_items(p, "pipeline_versions"), page)
        return self._parse(f"GET {path}", "pipeline_versions[0]", PipelineVersion.from_json,
                           versions[0]) if versions else None

    def _pipeline_missing(self, pipeline_id: str):
        def missing(message: str) -> KfpError:
            return PipelineNotFound(f"no pipeline with id {pipeline_id} at {self.host} ({message})")
        return missing

    def find_pipelines(self, name: str, namespace: str | None = None) -> list[Pipeline]:
        """Pipelines whose name is exactly `name` (in `namespace`; shared ones without)."""
        # `name` is the unique pipeline name (KFP >= 2.5); older servers map it to display_name.
        params = _params(filter=_equals_filter("name", name), namespace=namespace)
        return self._list(f"{API}/pipelines", "pipelines", params, Pipeline.from_json)

    def upload_pipeline(self, path: Path, name: str, namespace: str | None = None,
                        description: str | None = None) -> Pipeline:
        """Create pipeline `name` with `path` (compiled YAML) as its first version."""
        try:
            content = path.read_bytes()
        except OSError as err:
            raise ScheduleSettingsError(f"cannot read pipeline file {path}: {err.strerror}") from None
        params = _params(name=name, namespace=namespace, description=description)
        # The server picks the parser from the file name's extension: keep the real name.
        files = {"uploadfile": (path.name, content, "application/x-yaml")}
        answer = self._request("POST", f"{API}/pipelines/upload", params=params, files=files)
        return self._parse(f"POST {API}/pipelines/upload", "the answer", Pipeline.from_json, answer)

    # -- experiments -------------------------------------------------------------------------

    def find_experiments(self, name: str, namespace: str | None = None) -> list[Experiment]:
        params = _params(filter=_equals_filter("display_name", name), namespace=namespace)
        return self._list(f"{API}/experiments", "experiments", params, Experiment.from_json)

    def create_experiment(self, name: str, namespace: str | None = None) -> Experiment:
        body: dict[str, Any] = {"display_name": name}
        if namespace:
            body["namespace"] = namespace
        answer = self._request("POST", f"{API}/experiments", json=body)
        return self._parse(f"POST {API}/experiments", "the answer", Experiment.from_json, answer)

    # -- recurring runs ----------------------------------------------------------------------

    def create_recurring_run(self, body: dict[str, Any]) -> RecurringRun:
        """POST a CreateRecurringRun body (`models.ScheduleSpec.to_json`)."""
        answer = self._request("POST", f"{API}/recurringruns", json=body)
        return self._parse(f"POST {API}/recurringruns", "the answer", RecurringRun.from_json, answer)

    def list_recurring_runs(self, namespace: str | None = None, experiment_id: str | None = None,
                            name: str | None = None) -> list[RecurringRun]:
        """Every recurring run (all pages), optionally only those named `name`."""
        params = _params(namespace=namespace, experiment_id=experiment_id,
                         filter=None if name is None else _equals_filter("display_name", name))
        return self._list(f"{API}/recurringruns", "recurring_runs", params, RecurringRun.from_json)

    def delete_recurring_run(self, recurring_run_id: str) -> None:
        self._request("DELETE", f"{API}/recurringruns/{recurring_run_id}",
                      not_found=self._run_missing(recurring_run_id))

    def _run_missing(self, recurring_run_id: str):
        def missing(message: str) -> KfpError:
            return RecurringRunNotFound(f"no recurring run with id {recurring_run_id} at {self.host} ({message})")
        return missing

    # -- HTTP ----------------------------------------------------------------------------------

    def _list(self, path: str, key: str, params: dict[str, str], parse: Callable[[Any], T]) -> list[T]:
        """Every item of every page under `key`, each through `parse` (a model's from_json)."""
        items: list[T] = []
        token, seen, what = "", set(), f"GET {path}"
        while True:
            page = self._request("GET", path, params={**params, "page_size": str(self.config.page_size),
                                                      **({"page_token": token} if token else {})})
            raw, token = self._parse(what, "the answer", lambda p: page_items(p, key), page)
            items.extend(self._parse(what, f"{key}[{i}]", parse, item) for i, item in enumerate(raw))
            if not token:
                return items
            if token in seen:  # a server that pages in a circle would keep us here forever
                raise KfpServerError(f"KFP at {self.host} returned page token {token!r} of GET {path} twice")
            seen.add(token)

    def _parse(self, what: str, where: str, parse: Callable[[Any], T], data: Any) -> T:
        """parse(data), its ValueError (a field of the wrong JSON type) as a one-line KfpServerError."""
        try:
            return parse(data)
        except ValueError as err:
            raise KfpServerError(f"{what} at {self.host} answered JSON that a KFP v2beta1 server does not send: "
                                 f"{where} {err}; is --host the KFP API?") from None

    def _request(self, method: str, path: str, *, params: dict[str, str] | None = None,
                 json: dict[str, Any] | None = None, files: dict | None = None,
                 not_found=None) -> dict[str, Any]:
        what = f"{method} {path}"
        try:
            response = self._http.request(method, path, params=params, json=json, files=files)
        except httpx.TimeoutException:
            raise KfpUnreachable(f"KFP at {self.host} did not answer {what} within "
                                 f"{self.config.read_timeout_s:g}s (connect {self.config.connect_timeout_s:g}s)") from None
        except httpx.TransportError as err:
            raise KfpUnreachable(f"cannot reach KFP at {self.host} ({type(err).__name__}: {one_line(str(err), 400)}); "
                                 f"check --host, the port-forward or the network") from None
        status = response.status_code
        if 300 <= status < 400:
            raise self._redirect_error(response, what)
        if status in (401, 403):
            raise KfpAuthError(f"KFP at {self.host} refused {what} with HTTP {status} "
                               f"({self.auth.describe()}): {_error_message(response)}"
                               + ("; in multi-user Kubeflow check --namespace and the identity's access to it"
                                  if status == 403 else ""))
        if status == 404 and not_found is not None and _is_kfp_json(response):
            raise not_found(_error_message(response))
        if status == 404:
            raise KfpRequestError(f"{what}: HTTP 404 from {self.host}: {_error_message(response)}; is --host the "
                                  f"KFP API (e.g. http://localhost:8080 via port-forward, or https://HOST/pipeline)?")
        if 400 <= status < 500:
            raise KfpRequestError(f"KFP rejected {what} (HTTP {status}): {_error_message(response)}")
        if status >= 500:
            raise KfpServerError(f"KFP failed on {what} (HTTP {status}): {_error_message(response)}")
        if not response.content:
            return {}
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise KfpServerError(f"{what} at {self.host} answered {_describe_body(response)}, not KFP JSON; "
                                 f"is --host the KFP API? (a login page means missing credentials)")
        return data

    def _redirect_error(self, response: httpx.Response, what: str) -> KfpError:
        location = response.headers.get("location", "")
        here, there = urlsplit(self.host), urlsplit(str(response.url.join(location)))
        if here.scheme == "http" and there.scheme == "https" and here.netloc.split(":")[0] == there.hostname:
            return ScheduleSettingsError(f"{self.host} redirects to HTTPS: use --host https://{here.netloc}{here.path}")
        return KfpAuthError(f"KFP at {self.host} redirected {what} to {location or '?'} (HTTP {response.status_code}): "
                            f"the auth proxy wants a login; pass --token/--token-file or --cookie "
                            f"(sent: {self.auth.describe()})")


def normalize_host(host: str) -> str:
    """`host` without a trailing slash; refuse anything that is not an http(s) URL."""
    host = (host or "").strip().rstrip("/")
    try:
        parts = urlsplit(host)
        parts.port  # noqa: B018 - raises for a port that is not a number
    except ValueError as err:
        raise ScheduleSettingsError(f"--host {host!r} is not a valid URL ({err})") from None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ScheduleSettingsError(f"--host {host!r} must be an http:// or https:// URL of the KFP API, "
                                    f"e.g. http://localhost:8080 or https://kubeflow.example.com/pipeline")
    if parts.query or parts.fragment:
        raise ScheduleSettingsError(f"--host {host!r}: give the API base URL without ?query or #fragment")
    return host


def page_items(page: dict[str, Any], key: str) -> tuple[list[Any], str]:
    """The items under `key` of one page of a list answer, and its next page token ("" on the
    last); ValueError for a page of the wrong shape."""
    # The gateway writes proto names (recurring_runs); accept the JSON names too.
    camel = re.sub(r"_([a-z])", lambda m: m.group(1).upper(), key)
    items = member(page, key, list) or member(page, camel, list, [])
    token = member(page, "next_page_token", str) or member(page, "nextPageToken", str, "")
    return items, token


def _params(**values: str | None) -> dict[str, str]:
    return {k: v for k, v in values.items() if v}


def _equals_filter(key: str, value: str) -> str:
    """A v2beta1 Filter, JSON-encoded as the `filter` query parameter expects (the kfp SDK's form)."""
    predicate = {"key": key, "operation": "EQUALS", "stringValue": value}
    return json.dumps({"predicates": [predicate]}, separators=(",", ":"))


def _is_kfp_json(response: httpx.Response) -> bool:
    try:
        return isinstance(response.json(), dict)
    except ValueError:
        return False


def _error_message(response: httpx.Response) -> str:
    """The readable part of an error body: grpc-gateway's `message`, the upload handler's
    `error_message`, or the start of a text body; always one line."""
    try:
        data = response.json()
    except ValueError:
        data = None
    if isinstance(data, dict):
        for key in ("message", "error_message", "error"):
            if isinstance(data.get(key), str) and data[key].strip():
                return one_line(data[key], 400)
    return _describe_body(response)


def _describe_body(response: httpx.Response) -> str:
    text = response.text.strip()
    if not text:
        return "an empty body"
    if "html" in response.headers.get("content-type", "") or text.lower().startswith(("<!doctype", "<html")):
        title = re.search(r"<title>(.*?)</title>", text, re.I | re.S)
        return f"an HTML page ({one_line(title.group(1), 400)!r})" if title else "an HTML page"
    return one_line(text, 400)


def _user_agent() -> str:
    try:
        return f"dultra/{metadata.version('dultra')}"
    except metadata.PackageNotFoundError:
        return "dultra"
