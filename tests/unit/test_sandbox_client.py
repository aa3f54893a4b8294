"""The sandbox client's retry, error and batching rules, against a scripted HTTP server.

Each test's handler (an httpx.Request in, an httpx.Response out, or `raise Drop` to close
the connection unanswered) runs behind a real server on loopback (tests/scripted_http.py),
so the client's own transport, pool and timeouts are what is exercised, and each rule can
be driven exactly (which response, which failure, how many calls). The real sandbox service
is in tests/integration/test_sandbox_server.py.
"""

from __future__ import annotations

import contextlib
import json
import re

import httpx
import pytest

from dultra.errors import ConfigError, DultraError
from dultra.rewards.sandbox_client import (
    ClientConfig,
    RunResult,
    SandboxClient,
    SandboxError,
    SandboxRequestError,
    SandboxRequestTooLarge,
    SandboxUnavailable,
)
from tests.scripted_http import Drop, scripted_server

FAST = ClientConfig(retries=2, backoff_s=0.0, batch_size=3, max_concurrency=2)


@pytest.fixture
def client():
    """client(handler, config=FAST): a SandboxClient of a server on loopback that answers with handler."""
    with contextlib.ExitStack() as stack:

        def make(handler, config: ClientConfig = FAST) -> SandboxClient:
            server = stack.enter_context(scripted_server(handler))
            return stack.enter_context(SandboxClient(server.url, config))

        yield make


def ok(status: str = "passed", **extra) -> dict:
    return {"status": status, "passed": 1 if status == "passed" else 0, "total": 1, "stdout": "",
            "stderr": "", "duration_ms": 1.0, "detail": "", **extra}


def test_run_posts_the_request_and_parses_the_result(client):
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.path, json.loads(request.content)))
        return httpx.Response(200, json=ok())

    result = client(handler).run("def f(): pass", ["f()"], timeout_s=2)
    assert result == RunResult.from_json(ok()) and result.ok
    assert seen == [("/v1/run", {"code": "def f(): pass", "tests": ["f()"], "timeout_s": 2})]


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_retries_overload_and_server_errors_then_succeeds(client, status):
    sent = []

    def handler(request):
        sent.append((request.url.path, json.loads(request.content)))
        return httpx.Response(status if len(sent) < 3 else 200, json=ok())

    assert client(handler).run("x = 1").ok
    assert sent == [("/v1/run", {"code": "x = 1"})] * 3  # the same request each time


def test_gives_up_after_the_retries(client):
    calls = []

    def handler(request):
        calls.append(1)
        raise Drop

    with pytest.raises(SandboxUnavailable, match="failed 3 times"):
        client(handler).run("x = 1")
    assert len(calls) == 3


def test_client_errors_are_not_retried(client):
    calls = []

    def handler(request):
        calls.append(1)
        return httpx.Response(422, json={"detail": "timeout_s must be between 0.001 and 60"})

    with pytest.raises(SandboxRequestError, match="timeout_s must be between") as info:
        client(handler).run("x = 1", timeout_s=1e9)
    assert isinstance(info.value, DultraError)  # the CLI prints it in one line
    assert len(calls) == 1


BAD_URLS = [("http://localhost:80a", "'80a'"), ("http://[::1", "Invalid IPv6 URL"), ("http://h:99999", "range"),
            ("http://h:+80", "'+80'"), ("http://h:0", "port 0"), ("localhost:8080", "http:// or https://"),
            ("ftp://h", "http:// or https://"), ("", "http:// or https://"), ("http://:8080", "no host")]


@pytest.mark.parametrize("url, problem", BAD_URLS)
def test_a_malformed_url_is_a_config_error_when_the_client_is_made(url, problem):
    with pytest.raises(ConfigError, match=f"sandbox URL {re.escape(repr(url))} is not usable: .*{re.escape(problem)}") as info:
        SandboxClient(url)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080", "https://sandbox.example.com/prefix/", "http://[::1]:80"])
def test_a_good_url_is_taken(url):
    SandboxClient(url).close()


def test_train_and_eval_refuse_a_malformed_url_in_their_settings_check():
    from dultra.eval.config import EvalConfig
    from dultra.eval.run import check_config
    from dultra.rl.config import TrainConfig

    with pytest.raises(ConfigError, match="sandbox URL 'http://localhost:80a' is not usable"):
        TrainConfig(sandbox_url="http://localhost:80a").validate()
    with pytest.raises(ConfigError, match=r"sandbox URL 'http://\[::1' is not usable"):
        check_config(EvalConfig(sandbox_url="http://[::1"))


PAGE = ("<!DOCTYPE html>\n<html>\n  <head>\n    <title>404 Not Found</title>\n  </head>\n  <body>\n"
        + "    <p>Nothing here.</p>\n" * 50 + "  </body>\n</html>\n")


def test_another_servers_error_page_is_one_short_line(client):
    def handler(request):
        return httpx.Response(404, text=PAGE, headers={"content-type": "text/html"})

    with pytest.raises(SandboxRequestError, match=r"refused the request \(404\) with '<!DOCTYPE html> <html> <head> "
                       r"<title>404 Not Found</title>.*\.\.\.': is http://127.0.0.1:\d+ the sandbox service\?$") as info:
        client(handler).run("x = 1")
    assert "\n" not in str(info.value) and len(str(info.value)) < 300


def test_a_proxys_413_page_still_marks_the_request_too_large(client):
    def handler(request):
        return httpx.Response(413, text="<html>\n<title>413 Request Entity Too Large</title>\n</html>\n")

    with pytest.raises(SandboxRequestTooLarge, match=r"\(413\): <html> <title>413 Request Entity Too Large</title>"):
        client(handler).run("x = 1")


def test_a_page_that_is_not_json_is_one_line_not_a_decode_error(client):
    with pytest.raises(SandboxError, match=r"/v1/run at .* answered HTTP 200 with '<html> <p>hello</p> </html>', "
                       r"not JSON: is it the sandbox service\?"):
        client(lambda request: httpx.Response(200, text="<html>\n<p>hello</p>\n</html>")).run("x = 1")


@pytest.mark.parametrize("answer", [{"ok": True}, {"status": "passed"}, [1, 2], {**ok(), "passed": "1"}])
def test_json_that_no_sandbox_sends_for_a_run_is_one_line(client, answer):
    """Another service's JSON at the URL."""
    with pytest.raises(SandboxError, match=r"holds no run result .*; is the URL the sandbox service's\?$"):
        client(lambda request: httpx.Response(200, json=answer)).run("x = 1")


@pytest.mark.parametrize("answer", [{"ok": True}, [1, 2], {"results": 5}, {"results": [ok()]}])
def test_json_that_no_sandbox_sends_for_a_batch_is_one_line(client, answer):
    with pytest.raises(SandboxError, match=r"answered without 2 results: .*; is it the sandbox service\?$"):
        client(lambda request: httpx.Response(200, json=answer)).run_batch([{"code": "x = 1"}, {"code": "x = 2"}])


def test_error_bodies_in_the_retry_message_are_one_line(client):
    with pytest.raises(SandboxUnavailable, match=r"last: _Retryable: HTTP 502 from /v1/run: <!DOCTYPE html> <html> .{100,}\.\.\.$") as info:
        client(lambda request: httpx.Response(502, text=PAGE)).run("x = 1")
    assert "\n" not in str(info.value)


def test_a_bad_sandbox_variable_in_process_is_a_config_error(monkeypatch):
    monkeypatch.setenv("SANDBOX_PORT", "abc")
    with pytest.raises(ConfigError, match="bad sandbox setting: SANDBOX_PORT='abc' is not an integer"):
        SandboxClient()


def test_the_code_reward_skips_only_tests_too_large_to_send(client):
    from dultra.data.example import CodeTest
    from dultra.rewards.code_correct import CodeReward

    def refuse(detail):
        return lambda request: httpx.Response(422, json={"detail": detail})

    tests = [(CodeTest("io", stdin="1", stdout="1"),)]
    too_large = CodeReward(runner=client(refuse("requests[0]: stdin is larger than 1048576 bytes")))
    with pytest.warns(UserWarning, match="cannot be scored: .*stdin is larger than"):
        assert too_large(["```python\nprint(1)\n```"], tests=tests) == [None]
    misconfigured = CodeReward(runner=client(refuse("requests[0]: timeout_s must be between 0.001 and 60")))
    with pytest.raises(SandboxRequestError, match="timeout_s must be between"):  # a setting to fix: stop
        misconfigured(["```python\nprint(1)\n```"], tests=tests)


def test_program_failures_are_results_not_errors(client):
    sent = []

    def handler(request):
        sent.append(json.loads(request.content))
        return httpx.Response(200, json=ok("timeout"))

    assert client(handler).run("while True: pass").status == "timeout"
    assert sent == [{"code": "while True: pass"}]  # not retried


def test_sandbox_error_results_are_retried(client):
    answers = iter([ok("sandbox_error"), ok()])
    sent = []

    def handler(request):
        sent.append(json.loads(request.content))
        return httpx.Response(200, json=next(answers))

    assert client(handler).run("x = 1").ok
    assert sent == [{"code": "x = 1"}] * 2


def test_batches_are_chunked_in_order_and_only_failed_items_rerun(client):
    bodies = []
    flaky = {"4"}

    def handler(request):
        body = json.loads(request.content)
        bodies.append([r["code"] for r in body["requests"]])
        results = []
        for r in body["requests"]:
            if r["code"] in flaky:
                flaky.discard(r["code"])
                results.append(ok("sandbox_error"))
            else:
                results.append(ok(stdout=r["code"]))
        return httpx.Response(200, json={"results": results})

    requests = [{"code": str(i)} for i in range(8)]
    results = client(handler).run_batch(requests)
    assert [r.stdout for r in results] == [str(i) for i in range(8)]
    assert sorted(bodies) == [["0", "1", "2"], ["3", "4", "5"], ["4"], ["6", "7"]]


def test_batches_are_also_chunked_by_size(client):
    bodies = []

    def handler(request):
        body = json.loads(request.content)
        bodies.append([len(r["stdin"]) for r in body["requests"]])
        return httpx.Response(200, json={"results": [ok() for _ in body["requests"]]})

    config = ClientConfig(retries=0, batch_size=3, batch_bytes=1000)
    sizes = [400, 400, 400, 50, 2000, 10, 10, 10, 10]
    requests = [{"code": "", "stdin": "x" * n, "expected_stdout": ""} for n in sizes]
    client(handler, config).run_batch(requests)
    assert sorted(bodies) == sorted([[400, 400], [400, 50], [2000], [10, 10, 10], [10]])


def test_concurrency_reaches_its_bound_and_never_passes_it(client):
    import threading
    import time

    lock = threading.Lock()
    state = {"now": 0, "peak": 0}
    full = threading.Event()

    def handler(request):
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
            if state["now"] == FAST.max_concurrency:
                full.set()
        # Hold each request until max_concurrency are in flight, so the peak does not depend on
        # thread timing; a client that never gets there fails after one wait, not one per chunk.
        if not full.wait(timeout=5):
            full.set()
        time.sleep(0.05)  # long enough that an unbounded client would overlap more chunks
        with lock:
            state["now"] -= 1
        n = len(json.loads(request.content)["requests"])
        return httpx.Response(200, json={"results": [ok()] * n})

    client(handler).run_batch([{"code": "x"}] * 30)  # 10 chunks of 3
    assert state["peak"] == FAST.max_concurrency


def test_run_tests_is_the_code_rewards_runner(client):
    from dultra.data.example import CodeTest
    from dultra.rewards.runner import CodeRunner

    sent = []

    def handler(request):
        body = json.loads(request.content)["requests"]
        sent.extend(body)
        return httpx.Response(200, json={"results": [ok(), ok("failed")][: len(body)]})

    runner = client(handler)
    assert isinstance(runner, CodeRunner)
    tests = [CodeTest("assert", source="assert f() == 1"), CodeTest("io", stdin="2\n", stdout="4\n")]
    assert runner.run_tests("def f(): return 1", tests) == (1, 2)
    assert sent == [{"code": "def f(): return 1", "tests": ["assert f() == 1"]},
                    {"code": "def f(): return 1", "stdin": "2\n", "expected_stdout": "4\n"}]
    sent.clear()
    limited = client(handler, ClientConfig(retries=0, test_timeout_s=2.5, test_memory_mb=256))
    limited.run_tests("def f(): return 1", tests[:1])
    assert sent == [{"code": "def f(): return 1", "tests": ["assert f() == 1"], "timeout_s": 2.5, "memory_mb": 256}]


def test_run_tests_raises_the_runners_unavailable_on_sandbox_errors(client):
    from dultra.data.example import CodeTest
    from dultra.rewards.runner import SandboxUnavailable as RunnerUnavailable

    def handler(request):
        n = len(json.loads(request.content)["requests"])
        return httpx.Response(200, json={"results": [ok("sandbox_error")] * n})

    with pytest.raises(RunnerUnavailable):
        client(handler).run_tests("x = 1", [CodeTest("assert", source="assert x == 1")])
