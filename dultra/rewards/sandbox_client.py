"""Client of the sandbox service, for code rewards and evaluation.

    from dultra.rewards.sandbox_client import SandboxClient
    with SandboxClient("http://127.0.0.1:8080") as sandbox:      # or SandboxClient() for in-process
        print(sandbox.run("def f(): return 1", tests=["assert f() == 1"]).status)

- Explicit timeouts (connect and read), a pooled HTTP connection set, and at most
  `max_concurrency` requests in flight from one client.
- Retries with exponential backoff and jitter only on infrastructure errors: transport
  failures, HTTP 5xx/429, and results whose status is `sandbox_error`. A 4xx is the
  caller's mistake and raises `SandboxRequestError` at once; a program's failure is a
  normal result.
- Typed exceptions: `SandboxUnavailable` (gave up after retries), `SandboxRequestError`.
- `transport=` takes any `httpx.BaseTransport` (a proxy, a mounted app).
- No URL means in-process mode: a local pool of the same isolated workers, no server
  (needs the `sandbox` package, which ships with dultra). It makes this process
  non-dumpable, as the server is: same-uid runs cannot read its /proc memory or
  environment, and debuggers need root to attach to it.
"""

from __future__ import annotations

import concurrent.futures
import json
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from dultra.errors import ConfigError, DultraError, first_line, one_line
from dultra.rewards.runner import SandboxUnavailable as RunnerUnavailable
from dultra.rewards.runner import TestsRefused


class SandboxError(DultraError):
    """Base of the client's errors (a DultraError: the CLI prints it in one line)."""


class SandboxUnavailable(SandboxError, RunnerUnavailable):
    """The service could not be reached or kept failing (after every retry).

    A `dultra.rewards.runner.SandboxUnavailable`, so the code reward scores None, not 0."""


class SandboxRequestError(SandboxError, ValueError):
    """The service refused the request as malformed (HTTP 4xx): fix the request."""


class SandboxRequestTooLarge(SandboxRequestError, TestsRefused):
    """The service refused a request over its size limits (HTTP 413, or a 422 naming a string
    "larger than" its max): a `dultra.rewards.runner.TestsRefused`, so the code reward scores
    that sample None, with a warning, and training goes on."""


@dataclass(frozen=True)
class RunResult:
    """One execution's outcome, as the service reports it."""

    status: str
    """passed, failed, timeout, runtime_error, syntax_error, memory_exceeded,
    output_exceeded or sandbox_error."""
    passed: int
    """Tests that passed."""
    total: int
    """Tests in the request (1 for an stdin/expected_stdout run, 0 for a plain run)."""
    stdout: str = ""
    stderr: str = ""
    duration_ms: float = 0.0
    detail: str = ""
    """A few words on why the run did not pass."""

    @classmethod
    def from_json(cls, data: Any) -> RunResult:
        """The result in a service's answer; SandboxError for one no sandbox sends (another
        service's JSON at the URL)."""
        if not (isinstance(data, dict) and isinstance(data.get("status"), str)
                and all(type(data.get(k)) is int for k in ("passed", "total"))):
            raise SandboxError(f"the answer holds no run result (status, passed, total): {one_line(str(data))}; "
                               "is the URL the sandbox service's?")
        fields = ("status", "passed", "total", "stdout", "stderr", "duration_ms", "detail")
        return cls(**{k: data[k] for k in fields if k in data})

    @property
    def ok(self) -> bool:
        return self.status == "passed"


@dataclass(frozen=True)
class ClientConfig:
    """How the client talks to the service."""

    connect_timeout_s: float = 5.0
    """Seconds to open a connection."""
    read_timeout_s: float = 60.0
    """Seconds of silence from the service before the attempt fails. While runs execute the
    service sends a space every 10 s (its heartbeat_s), so a long batch never trips this;
    a hung service or a lost connection does (a service older than heartbeats needs more)."""
    max_wait_s: float = 1800.0
    """Seconds an attempt waits for its answer, heartbeats or not: a saturated or stuck
    service fails the attempt instead of holding a training step forever."""
    retries: int = 3
    """Extra attempts after an infrastructure error."""
    backoff_s: float = 0.25
    """First retry delay; doubles each attempt, with +-50 % jitter."""
    max_concurrency: int = 16
    """Requests (single or batch chunks) in flight at once from this client."""
    batch_size: int = 256
    """run_batch splits larger lists into chunks of this many requests."""
    batch_bytes: int = 32 << 20
    """...and ends a chunk before its strings pass this many bytes (the service refuses
    bodies over its max_body_bytes, 256 MiB by default; large stdin tests add up)."""
    workers: int = 0
    """In-process mode only: local workers (0 = the sandbox default)."""
    test_timeout_s: float | None = None
    """run_tests: CPU seconds per test (None = the service's default)."""
    test_memory_mb: int | None = None
    """run_tests: memory per test (None = the service's default)."""


_RETRY_STATUS = {429, 500, 502, 503, 504}


def check_url(url: str) -> None:
    """Raise ConfigError, in one line naming `url`, unless it can address a service: http or
    https, a host, and no port or a number in 1..65535. (httpx's own InvalidURL, for
    `http://localhost:80a` or `http://[::1`, is no DultraError and would end in a traceback.)"""
    try:
        port = urlsplit(url).port  # strict: httpx reads `http://h:+80` as no port at all
        parsed = httpx.URL(url)
    except (ValueError, httpx.InvalidURL) as err:
        problem = first_line(err)
    else:
        if parsed.scheme not in ("http", "https"):
            problem = "it must start with http:// or https://"
        elif not parsed.host:
            problem = "it names no host"
        elif port == 0:
            problem = "port 0 cannot be connected to"
        else:
            return
    raise ConfigError(f"sandbox URL {url!r} is not usable: {problem} (give http://HOST[:PORT])")


class SandboxClient:
    """Runs programs in the sandbox service at `url`, or in-process when url is None."""

    def __init__(self, url: str | None = None, config: ClientConfig | None = None,
                 transport: httpx.BaseTransport | None = None):
        if url is not None:
            check_url(url)
        self.config = config or ClientConfig()
        self.url = url
        self._slots = threading.BoundedSemaphore(self.config.max_concurrency)
        self._local = None
        self._http = None
        if url is None:
            self._local = _LocalSandbox(self.config.workers)
        else:
            limits = httpx.Limits(max_connections=self.config.max_concurrency,
                                  max_keepalive_connections=self.config.max_concurrency)
            timeout = httpx.Timeout(self.config.read_timeout_s, connect=self.config.connect_timeout_s)
            self._http = httpx.Client(base_url=url.rstrip("/"), timeout=timeout, limits=limits,
                                      transport=transport)

    def __enter__(self) -> SandboxClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
        if self._local is not None:
            self._local.close()

    def check_ready(self) -> None:
        """Raise SandboxUnavailable unless the service answers /readyz (no-op in-process).

        Called before long jobs, so an unreachable sandbox fails at start, not after the
        first rollout."""
        if self._http is None:
            return
        try:
            response = self._http.get("/readyz")
        except httpx.HTTPError as err:
            raise SandboxUnavailable(f"the sandbox at {self.url} is unreachable: {err}") from None
        if response.status_code != 200:
            raise SandboxUnavailable(f"the sandbox at {self.url} is not ready (HTTP {response.status_code})")

    def run(self, code: str, tests: list[str] | None = None, *, stdin: str | None = None,
            expected_stdout: str | None = None, timeout_s: float | None = None,
            memory_mb: int | None = None) -> RunResult:
        """Run one program; see `sandbox.protocol` for the three kinds of request."""
        request = _request(code, tests, stdin, expected_stdout, timeout_s, memory_mb)
        return self.run_batch([request])[0] if self._local else self._run_one(request)

    def run_batch(self, requests: list[dict[str, Any]]) -> list[RunResult]:
        """Run many requests (dicts shaped like /v1/run bodies); results in the same order."""
        if self._local is not None:
            return [RunResult.from_json(r) for r in self._local.run_batch(requests)]
        chunks = _chunks(requests, self.config.batch_size, self.config.batch_bytes)
        if len(chunks) <= 1:
            return self._run_chunk(chunks[0]) if chunks else []
        with concurrent.futures.ThreadPoolExecutor(self.config.max_concurrency) as threads:
            return [r for chunk in threads.map(self._run_chunk, chunks) for r in chunk]

    def run_tests(self, code: str, tests: Sequence[Any]) -> tuple[int, int]:
        """The code reward's runner contract (`dultra.rewards.runner.CodeRunner`).

        tests: `dultra.data.CodeTest`s (or anything with kind/source/stdin/stdout). Each
        test is its own execution: "assert" runs code + test source, "io" feeds stdin and
        compares stdout. Returns (passed, total); raises SandboxUnavailable when the
        service cannot judge (after retries), never for the program's own failures.
        """
        requests = []
        for test in tests:
            request: dict[str, Any] = {"code": code}
            if test.kind == "assert":
                request["tests"] = [test.source]
            elif test.kind == "io":
                request.update(stdin=test.stdin, expected_stdout=test.stdout)
            else:
                raise SandboxRequestError(f"unknown code test kind {test.kind!r}")
            for key, value in (("timeout_s", self.config.test_timeout_s),
                               ("memory_mb", self.config.test_memory_mb)):
                if value is not None:
                    request[key] = value
            requests.append(request)
        results = self.run_batch(requests) if requests else []
        broken = [r for r in results if r.status == "sandbox_error"]
        if broken:
            raise SandboxUnavailable(f"the sandbox could not run {len(broken)} test(s): {broken[0].detail}")
        return sum(r.ok for r in results), len(results)

    def _run_one(self, request: dict) -> RunResult:
        def call() -> RunResult:
            return RunResult.from_json(self._post("/v1/run", request))
        return self._with_retries(call, lambda r: r.status == "sandbox_error")

    def _run_chunk(self, chunk: list[dict]) -> list[RunResult]:
        def post(requests: list[dict]) -> list[RunResult]:
            body = self._post("/v1/run_batch", {"requests": requests})
            results = body.get("results") if isinstance(body, dict) else None
            if not isinstance(results, list) or len(results) != len(requests):
                raise SandboxError(f"/v1/run_batch at {self.url} answered without {len(requests)} results: "
                                   f"{one_line(str(body))}; is it the sandbox service?")
            return [RunResult.from_json(r) for r in results]

        results = self._with_retries(lambda: post(chunk), lambda rs: False)
        # Re-run only the items the service itself failed on.
        for attempt in range(self.config.retries):
            again = [i for i, r in enumerate(results) if r.status == "sandbox_error"]
            if not again:
                break
            self._sleep(attempt)
            retried = self._with_retries(lambda again=again: post([chunk[i] for i in again]), lambda rs: False)
            for i, r in zip(again, retried, strict=True):
                results[i] = r
        return results

    def _post(self, path: str, body: dict) -> dict:
        deadline = time.monotonic() + self.config.max_wait_s
        with self._slots, self._http.stream("POST", path, json=body) as response:
            content = bytearray()
            for chunk in response.iter_bytes():  # heartbeat spaces, then the JSON
                content += chunk
                if time.monotonic() > deadline:
                    raise _Retryable(f"no answer from {path} within max_wait_s ({self.config.max_wait_s:g} s)")
        text = content.decode(errors="replace")
        if response.status_code in _RETRY_STATUS:
            raise _Retryable(f"HTTP {response.status_code} from {path}: {one_line(text)}")
        if response.status_code >= 400:
            raise self._refusal(response.status_code, text)
        try:
            return json.loads(text)
        except ValueError:  # a redirect or another server's page
            raise SandboxError(f"{path} at {self.url} answered HTTP {response.status_code} with {_body(text)}, "
                               "not JSON: is it the sandbox service?") from None

    def _refusal(self, status: int, text: str) -> SandboxRequestError:
        """The error for a 4xx answer, in one line: the service's `detail`, or the start of the
        body when it is not the service's JSON (another server's page: a wrong URL or port)."""
        try:
            detail = str(json.loads(text)["detail"])
        except (ValueError, TypeError, KeyError):
            detail = None
        if status == 413 or "is larger than" in (detail or text):
            return SandboxRequestTooLarge(f"sandbox refused the request ({status}): {one_line(detail or text)}")
        if detail is None:
            return SandboxRequestError(f"sandbox refused the request ({status}) with {_body(text)}: "
                                       f"is {self.url} the sandbox service?")
        return SandboxRequestError(f"sandbox refused the request ({status}): {one_line(detail)}")

    def _with_retries(self, call, bad_result):
        last = ""
        for attempt in range(self.config.retries + 1):
            try:
                result = call()
            except (_Retryable, httpx.TransportError) as err:
                last = f"{type(err).__name__}: {err}"
            else:
                if not bad_result(result) or attempt == self.config.retries:
                    return result
                last = "sandbox_error result"
            if attempt < self.config.retries:
                self._sleep(attempt)
        raise SandboxUnavailable(f"sandbox at {self.url} failed {self.config.retries + 1} times; last: {last}")

    def _sleep(self, attempt: int) -> None:
        time.sleep(self.config.backoff_s * (2 ** attempt) * random.uniform(0.5, 1.5))


class _Retryable(Exception):
    """An HTTP answer worth retrying (5xx/429)."""


def _body(text: str) -> str:
    return repr(one_line(text)) if text.strip() else "an empty body"


def _chunks(requests: list[dict], count: int, size: int) -> list[list[dict]]:
    """Consecutive chunks of at most `count` requests whose strings hold at most `size`
    characters (a single larger request is a chunk of its own)."""
    chunks: list[list[dict]] = []
    used = 0
    for request in requests:
        n = sum(len(v) for v in request.values() if isinstance(v, str))
        n += sum(len(t) for t in request.get("tests") or ())
        if not chunks or len(chunks[-1]) == count or used + n > size:
            chunks.append([])
            used = 0
        chunks[-1].append(request)
        used += n
    return chunks


def _request(code, tests, stdin, expected_stdout, timeout_s, memory_mb) -> dict:
    request: dict[str, Any] = {"code": code}
    for key, value in (("tests", tests), ("stdin", stdin), ("expected_stdout", expected_stdout),
                       ("timeout_s", timeout_s), ("memory_mb", memory_mb)):
        if value is not None:
            request[key] = value
    return request


class _LocalSandbox:
    """In-process mode: the service's worker pool without HTTP."""

    def __init__(self, workers: int):
        from sandbox.config import SandboxConfig
        from sandbox.isolation import make_non_dumpable
        from sandbox.pool import WorkerPool

        try:  # SANDBOX_* variables apply here too
            self._config = SandboxConfig.configured(workers=workers or None)
        except ValueError as err:
            raise ConfigError(f"bad sandbox setting: {err}") from None
        # As the server does: runs of this uid (process mode) then cannot read this process's
        # memory or environment (tokens, credentials) through /proc.
        make_non_dumpable()
        self._pool = WorkerPool(self._config)

    def run_batch(self, requests: list[dict]) -> list[dict]:
        from sandbox.protocol import RequestError, normalize

        try:
            normalized = [normalize(r, self._config) for r in requests]
        except RequestError as err:
            raise SandboxRequestError(f"bad sandbox request: {err}") from err
        futures = [self._pool.submit(r) for r in normalized]
        return [f.result() for f in futures]

    def close(self) -> None:
        self._pool.close()

