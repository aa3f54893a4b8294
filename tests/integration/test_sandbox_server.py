"""The HTTP API of a real local sandbox server, and the client against it.

    .venv/bin/python -m pytest -q tests/integration/test_sandbox_server.py
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from dultra.rewards.sandbox_client import ClientConfig, SandboxClient, SandboxUnavailable
from tests.helpers import free_port
from tests.integration.sandbox_helpers import descendants, run, start_local

pytestmark = pytest.mark.integration

ADD = "def add(a, b):\n    return a + b\n"


def _await_stats(service, done, seconds: float) -> None:
    """Poll /readyz until done(its JSON: busy, queue_depth, ...) holds; fail after `seconds`."""
    deadline = time.monotonic() + seconds
    while not done(stats := httpx.get(f"{service.url}/readyz").json()):
        assert time.monotonic() < deadline, stats
        time.sleep(0.05)


def _count(service, status: str) -> float:
    """Executions the service has counted with this status (its /metrics)."""
    metrics = httpx.get(f"{service.url}/metrics").text
    line = next(x for x in metrics.splitlines() if x.startswith(f'sandbox_executions_total{{status="{status}"}}'))
    return float(line.split()[-1])


@pytest.fixture(scope="module")
def service():
    yield from start_local("auto", workers=4, heartbeat_s=0.3)


def test_health_and_readiness(service):
    assert httpx.get(f"{service.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{service.url}/readyz").json()
    assert ready["status"] == "ready" and ready["workers"] == 4
    assert ready["isolation"] in ("namespaces", "process")


def test_test_runs_count_passed_tests(service):
    result = run(service.url, code=ADD, tests=["assert add(1, 2) == 3", "assert add(1, 1) == 3",
                                               "assert add(0, 0) == 0"])
    assert (result["status"], result["passed"], result["total"]) == ("failed", 2, 3)
    assert "AssertionError" in result["stderr"]
    assert set(result) >= {"status", "passed", "total", "stdout", "stderr", "duration_ms"}


def test_io_runs_compare_stdout(service):
    echo = "import sys\nprint(sum(int(x) for x in sys.stdin.read().split()))\n"
    assert run(service.url, code=echo, stdin="1 2 3\n", expected_stdout="6")["status"] == "passed"
    wrong = run(service.url, code=echo, stdin="1 2 3\n", expected_stdout="7")
    assert (wrong["status"], wrong["passed"], wrong["total"]) == ("failed", 0, 1)


def test_large_stdin_is_fed_whole(service):
    data = "x" * 300_000 + "\n"
    code = "import sys\nprint(len(sys.stdin.read()))\n"
    assert run(service.url, code=code, stdin=data, expected_stdout=str(len(data)))["status"] == "passed"


def test_plain_runs_and_errors(service):
    assert run(service.url, code="print('hi')")["stdout"] == "hi\n"
    assert run(service.url, code="def f(:\n")["status"] == "syntax_error"
    assert run(service.url, code="1 / 0")["status"] == "runtime_error"
    assert run(service.url, code="import sys\nsys.exit(3)")["status"] == "runtime_error"
    assert run(service.url, code="import sys\nsys.exit(0)")["status"] == "passed"


def test_timeouts_count_cpu_time_not_sleep(service):
    # 1.2 s asleep uses no CPU: within a 0.5 s CPU budget (the idle limit is 2.5 s).
    slept = run(service.url, code="import time\ntime.sleep(1.2)\nprint('awake')", timeout_s=0.5)
    assert (slept["status"], slept["stdout"]) == ("passed", "awake\n")
    spun = run(service.url, code="while True:\n    pass\n", timeout_s=0.5)
    assert spun["status"] == "timeout" and "CPU" in spun["detail"]


def test_batch_keeps_order(service):
    requests = [{"code": ADD + f"print({i})\n", "tests": [f"assert add({i}, 1) == {i + 1}"]} for i in range(20)]
    requests[7] = {"code": "raise ValueError('seven')"}
    requests[13] = {"code": "while True:\n    pass\n", "timeout_s": 0.3}
    response = httpx.post(f"{service.url}/v1/run_batch", json={"requests": requests}, timeout=60)
    results = response.json()["results"]
    assert len(results) == 20
    assert results[7]["status"] == "runtime_error" and "seven" in results[7]["stderr"]
    assert results[13]["status"] == "timeout"
    assert all(r["status"] == "passed" and r["stdout"] == f"{i}\n" for i, r in enumerate(results) if i not in (7, 13))


def test_bad_requests_get_clear_422s(service):
    response = httpx.post(f"{service.url}/v1/run", json={"code": "x", "timeout_s": -1})
    assert response.status_code == 422 and "timeout_s" in response.json()["detail"]
    response = httpx.post(f"{service.url}/v1/run_batch", json={"requests": [{"code": "x"}, {"cod": "x"}]})
    assert response.status_code == 422 and response.json()["detail"].startswith("requests[1]:")
    response = httpx.post(f"{service.url}/v1/run_batch", json=[1])
    assert response.status_code == 422
    for bad in (b"{not json", b"[" * 100_000):  # nesting deeper than the parser's recursion
        response = httpx.post(f"{service.url}/v1/run", content=bad)
        assert response.status_code == 400 and "JSON" in response.json()["detail"]
    response = httpx.post(f"{service.url}/v1/run", content=rb'{"code": "", "stdin": "\ud800"}')
    assert response.status_code == 422 and "lone surrogate" in response.json()["detail"]


def test_bodies_and_batch_outputs_are_bounded():
    small = start_local("auto", workers=1, max_body_bytes=4096, max_batch_output_bytes=2000)
    service = next(small)
    try:
        response = httpx.post(f"{service.url}/v1/run", json={"code": "#" * 5000})
        assert response.status_code == 413 and "4096 bytes" in response.json()["detail"]

        def chunks():  # no Content-Length: the server must stop reading at its limit
            yield b'{"code": "'
            for _ in range(10):
                yield b"#" * 1000
            yield b'"}'
        response = httpx.post(f"{service.url}/v1/run", content=chunks())
        assert response.status_code == 413
        loud = {"code": "print('x' * 1500)"}
        results = httpx.post(f"{service.url}/v1/run_batch", json={"requests": [loud] * 3}).json()["results"]
        assert [r["status"] for r in results] == ["passed"] * 3
        assert sorted(len(r["stdout"]) for r in results) == [0, 0, 1501]  # whichever finished first keeps it
    finally:
        small.close()


def test_metrics_count_executions_by_status(service):
    before = _count(service, "runtime_error")
    run(service.url, code="1 / 0")
    assert _count(service, "runtime_error") == before + 1
    after = httpx.get(f"{service.url}/metrics").text
    for name in ("sandbox_execution_seconds_bucket", "sandbox_queue_depth", "sandbox_workers_busy"):
        assert name in after


def test_dead_workers_are_replaced_and_reported_as_sandbox_errors(service):
    import concurrent.futures

    def kill_workers() -> None:
        for pid in descendants(service.root_pid):
            try:
                if b"sandbox.worker" in open(f"/proc/{pid}/cmdline", "rb").read():
                    os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, FileNotFoundError):
                pass

    with concurrent.futures.ThreadPoolExecutor(1) as thread:
        busy = thread.submit(run, service.url, code="while True:\n    pass\n", timeout_s=5)
        _await_stats(service, lambda stats: stats["busy"] > 0, 10)  # a worker runs it: kill that one too
        kill_workers()
        assert busy.result()["status"] == "sandbox_error"  # the infrastructure's failure, not the program's
    # Idle workers that died are replaced without any request: readiness comes back alone.
    deadline = time.monotonic() + 15
    while httpx.get(f"{service.url}/readyz").status_code != 200:
        assert time.monotonic() < deadline, "the pool never recovered"
        time.sleep(0.1)
    assert [run(service.url, code="print(1)")["status"] for _ in range(8)] == ["passed"] * 8
    metrics = httpx.get(f"{service.url}/metrics").text
    restarts = next(x for x in metrics.splitlines() if x.startswith("sandbox_worker_restarts "))
    assert float(restarts.split()[-1]) >= 4


def test_client_against_the_server(service):
    with SandboxClient(service.url, ClientConfig(batch_size=4)) as client:
        assert client.run(ADD, ["assert add(2, 2) == 4"]).ok
        results = client.run_batch([{"code": ADD, "tests": [f"assert add({i}, 0) == {i}"]} for i in range(10)])
        assert [r.status for r in results] == ["passed"] * 10


def test_a_batch_longer_than_the_read_timeout_is_answered(service):
    # 8 runs asleep 1.5 s on 4 workers: 3 s, against a 1 s read timeout. The service's
    # heartbeat (a space every 0.3 s) keeps the connection alive; the JSON still parses.
    sleepers = [{"code": "import time\ntime.sleep(1.5)\nprint('up')\n", "timeout_s": 0.5}] * 8
    with SandboxClient(service.url, ClientConfig(read_timeout_s=1.0, retries=0)) as client:
        start = time.monotonic()
        assert [r.stdout for r in client.run_batch(sleepers)] == ["up\n"] * 8
        assert time.monotonic() - start > 2.5  # it did outlast the read timeout
        assert client.run("import time\ntime.sleep(1.5)", timeout_s=0.5).ok
    response = httpx.post(f"{service.url}/v1/run", json={"code": "import time\ntime.sleep(1)"})
    assert response.text.startswith("  ") and response.json()["status"] == "passed"


def test_heartbeats_do_not_hold_a_client_past_its_max_wait(service):
    config = ClientConfig(read_timeout_s=1.0, max_wait_s=1.0, retries=0)
    with SandboxClient(service.url, config) as client:
        start = time.monotonic()
        with pytest.raises(SandboxUnavailable, match="no answer from /v1/run within max_wait_s \\(1 s\\)"):
            client.run("import time\ntime.sleep(3)", timeout_s=1.0)
        assert time.monotonic() - start < 2.5
    _await_stats(service, lambda stats: not stats["busy"], 30)  # the run it left ends: the next test's workers


def test_a_client_that_gives_up_takes_its_queued_runs_with_it(service):
    # 12 runs asleep until the idle limit (2.5 s) on 4 workers: 3 waves. The client sends the
    # batch and hangs up during the first.
    sleepers = [{"code": "import time\ntime.sleep(100)\n", "timeout_s": 0.5} for _ in range(12)]
    body = json.dumps({"requests": sleepers}).encode()
    timeouts_before = _count(service, "timeout")
    host, port = service.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as conn:
        conn.sendall(b"POST /v1/run_batch HTTP/1.1\r\nHost: sandbox\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        _await_stats(service, lambda stats: stats["busy"] == 4, 10)  # the first wave runs, 8 wait
    _await_stats(service, lambda stats: not stats["queue_depth"] and not stats["busy"], 30)
    # Only the first wave ran (and is counted, client or not): the 8 queued runs were dropped.
    assert _count(service, "timeout") - timeouts_before == 4
    assert run(service.url, code=ADD, tests=["assert add(1, 2) == 3"])["status"] == "passed"


def test_client_gives_up_on_a_silent_service():
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts connections, never answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with SandboxClient(url, ClientConfig(read_timeout_s=0.5, retries=1, backoff_s=0.0)) as client:
            start = time.monotonic()
            with pytest.raises(SandboxUnavailable, match="failed 2 times; last: ReadTimeout"):
                client.run("x = 1")
            assert time.monotonic() - start < 3


def test_client_gives_up_on_a_dead_address():
    config = ClientConfig(retries=1, backoff_s=0.0, connect_timeout_s=0.5)
    with SandboxClient(f"http://127.0.0.1:{free_port()}", config) as client:
        with pytest.raises(SandboxUnavailable):
            client.run("x = 1")


def test_in_process_client_needs_no_server():
    with SandboxClient(config=ClientConfig(workers=2)) as client:
        assert client.run(ADD, ["assert add(2, 3) == 5"]).ok
        assert client.run("while True:\n    pass\n", timeout_s=0.3).status == "timeout"


def test_the_in_process_client_hides_its_process_from_runs():
    # Non-dumpable: a same-uid run (process mode) cannot read its /proc/<pid>/{environ,mem}.
    code = ("import ctypes\nfrom dultra.rewards.sandbox_client import ClientConfig, SandboxClient\n"
            "print(ctypes.CDLL(None).prctl(3, 0, 0, 0, 0))\n"  # PR_GET_DUMPABLE
            "with SandboxClient(config=ClientConfig(workers=1)):\n"
            "    print(ctypes.CDLL(None).prctl(3, 0, 0, 0, 0))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["1", "0"], out.stderr


def test_code_reward_scores_through_the_service(service):
    from dultra.data.example import CodeTest
    from dultra.rewards.code_correct import CodeReward

    tests = [CodeTest("assert", source="assert add(1, 2) == 3"),
             CodeTest("assert", source="assert add(-1, 1) == 0"),
             CodeTest("io", stdin="", stdout="ready\n")]
    good = "```python\ndef add(a, b):\n    return a + b\nprint('ready')\n```"
    half = "```python\ndef add(a, b):\n    return abs(a) + b\nprint('ready')\n```"
    cheat = "```python\nimport os\nos._exit(0)\n```"
    with SandboxClient(service.url) as client:
        scores = CodeReward(runner=client)([good, half, cheat], tests=[tests] * 3)
    assert scores == [1.0, 2 / 3, 0.0]  # exiting early passes no assert test, prints nothing
    huge = (CodeTest("io", stdin="1\n" * 600_000, stdout="ready\n"),)  # 1.2 MB: the service refuses it
    with SandboxClient(service.url) as client, pytest.warns(UserWarning, match="stdin is larger than"):
        assert CodeReward(runner=client)([good, good], tests=[huge, tests]) == [None, 1.0]


def test_threaded_programs_fit_the_memory_limit(service):
    # 16 threads under a 256 MB address-space limit (glibc arenas are capped per worker).
    code = ("from concurrent.futures import ThreadPoolExecutor\n"
            "def work(i):\n    return sum(bytearray(200_000)) + i\n"
            "with ThreadPoolExecutor(16) as ex:\n    print(sum(ex.map(work, range(64))))\n")
    result = run(service.url, code=code, memory_mb=256)
    assert (result["status"], result["stdout"]) == ("passed", f"{sum(range(64))}\n"), result
