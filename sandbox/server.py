"""The HTTP API of the sandbox.

    python -m sandbox serve --host 127.0.0.1 --port 8080 --workers 8
    curl -s localhost:8080/v1/run -d '{"code": "def f(): return 1", "tests": ["assert f() == 1"]}'

POST /v1/run        one request -> one result {status, passed, total, stdout, stderr, duration_ms}
POST /v1/run_batch  {"requests": [...]} -> {"results": [...]} in the same order
GET  /healthz       the process is alive
GET  /readyz        every worker is up (503 otherwise), with the isolation in force
GET  /metrics       Prometheus text

Malformed requests get 422 with a one-line `detail` (400 for a body that is not JSON, 413
for one over `max_body_bytes`); a batch is checked whole before any of it runs. Everything
that goes wrong inside the service is a `sandbox_error` result.

A run's answer is 200 and streams: while the runs execute it sends a space every
`heartbeat_s` (JSON allows leading whitespace), then the JSON. A client's read timeout then
measures the service's silence, not the length of its batch: a batch of slow programs
behind other clients' batches can take many minutes, a hung service is silent.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import time
from collections.abc import Awaitable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from sandbox import protocol
from sandbox.config import SandboxConfig
from sandbox.metrics import CONTENT_TYPE, Metrics
from sandbox.pool import WorkerPool

log = logging.getLogger("sandbox")


def create_app(config: SandboxConfig, pool: WorkerPool | None = None) -> FastAPI:
    """The app; it starts its own pool at start-up unless one is given."""
    state: dict = {"pool": pool}

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        if state["pool"] is None:
            state["pool"] = await asyncio.to_thread(WorkerPool, config)
        state["metrics"] = Metrics(state["pool"].stats)
        log.info("sandbox ready: %s", json.dumps(state["pool"].info))
        try:
            yield
        finally:
            if pool is None:
                state["pool"].close()

    app = FastAPI(title="dultra sandbox", lifespan=lifespan, docs_url=None, redoc_url=None)

    async def execute(request: dict) -> dict:
        start = time.monotonic()
        try:
            future = state["pool"].submit(request)
        except Exception as err:  # noqa: BLE001 - e.g. a pool shutting down: the service's failure
            future = concurrent.futures.Future()
            future.set_exception(err)

        def observe(done: concurrent.futures.Future) -> None:
            if done.cancelled():  # it never ran: its client had gone
                return
            if done.exception() is not None:
                log.error("execution failed in the service", exc_info=done.exception())
            state["metrics"].observe(_outcome(done, request), time.monotonic() - start)

        # Counted when the run ends, also when its client has gone and the await below is cancelled.
        future.add_done_callback(observe)
        with contextlib.suppress(Exception):
            await asyncio.wrap_future(future)
        return _outcome(future, request)

    @app.post("/v1/run")
    async def run(http: Request):
        body = await _json(http, config.max_body_bytes)
        if isinstance(body, Response):
            return body
        try:
            request = protocol.normalize(body, config)
        except protocol.RequestError as err:
            return _error(422, str(err))
        return _answer(http, execute(request), config.heartbeat_s)

    @app.post("/v1/run_batch")
    async def run_batch(http: Request):
        body = await _json(http, config.max_body_bytes)
        if isinstance(body, Response):
            return body
        if not isinstance(body, dict) or not isinstance(body.get("requests"), list):
            return _error(422, 'the body must be {"requests": [...]}')
        if len(body["requests"]) > config.max_batch:
            return _error(422, f"at most {config.max_batch} requests per batch")
        try:
            requests = [protocol.normalize(r, config) for r in body["requests"]]
        except protocol.RequestError as err:
            index = next(i for i, r in enumerate(body["requests"]) if _bad(r, config))
            return _error(422, f"requests[{index}]: {err}")
        # Output is capped as each run finishes, so the server never holds more than the
        # budget plus the runs in flight (each within max_output_bytes).
        budget = protocol.OutputBudget(config.max_batch_output_bytes)

        async def capped(request: dict) -> dict:
            return budget.take(await execute(request))

        async def every() -> dict:
            return {"results": await asyncio.gather(*(capped(r) for r in requests))}

        return _answer(http, every(), config.heartbeat_s)

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz():
        current = state["pool"]
        if current is None or not current.alive():
            return JSONResponse({"status": "starting"}, status_code=503)
        return {"status": "ready", **current.info, **current.stats()}

    @app.get("/metrics")
    async def metrics():
        return Response(state["metrics"].render(), media_type=CONTENT_TYPE)

    return app


def _outcome(future: concurrent.futures.Future, request: dict) -> dict:
    """A finished run's result; an exception is the service's failure, not the program's."""
    err = future.exception()
    return future.result() if err is None else protocol.sandbox_error(f"service: {err}", protocol.total_of(request))


# How often a waiting request checks that its client is still there.
_DISCONNECT_POLL_S = 0.5


def _answer(http: Request, work: Awaitable[dict], heartbeat_s: float) -> StreamingResponse:
    """200 with `work`'s result as JSON once it is done, after a space every `heartbeat_s`
    while it runs. A client that disconnects takes `work` with it: its runs still queued are
    cancelled, so a client that timed out and retries does not find its abandoned batch in
    front of the retry (runs already executing finish)."""
    task = asyncio.ensure_future(work)

    async def body():
        try:
            spoke = time.monotonic()
            tick = min(_DISCONNECT_POLL_S, heartbeat_s)
            while not (await asyncio.wait({task}, timeout=tick))[0]:
                if await http.is_disconnected():
                    return
                if time.monotonic() - spoke >= heartbeat_s:
                    spoke = time.monotonic()
                    yield b" "
            yield json.dumps(task.result(), ensure_ascii=False, separators=(",", ":")).encode()
        finally:
            task.cancel()  # a no-op once done; else the client left, or the server stops

    return StreamingResponse(body(), media_type="application/json")


async def _json(http: Request, limit: int):
    """The parsed body, or the error response to send instead."""
    body = await _body(http, limit)
    if body is None:
        return _error(413, f"the body is larger than {limit} bytes")
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: absurd nesting
        return _error(400, "the body is not valid JSON")


async def _body(http: Request, limit: int) -> bytearray | None:
    """The request's body, or None when it is over `limit` bytes (read no further than that)."""
    declared = http.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in http.stream():
        body += chunk
        if len(body) > limit:
            return None
    return body


def _bad(raw, config: SandboxConfig) -> bool:
    try:
        protocol.normalize(raw, config)
    except protocol.RequestError:
        return True
    return False


def _error(code: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=code)


def serve(config: SandboxConfig) -> None:
    """Run the service in the foreground until interrupted (what `dultra sandbox serve` does)."""
    import uvicorn

    from sandbox.isolation import make_non_dumpable

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    make_non_dumpable()  # executions of the same uid cannot read our environment
    log.info("config: %s", json.dumps(config.__dict__))
    uvicorn.run(create_app(config), host=config.host, port=config.port, log_level="warning",
                access_log=False)
