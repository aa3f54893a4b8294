"""The sandbox image: built offline, run unprivileged in a real Docker engine, used over HTTP.

    bash .ci/docker-setup.sh && make sandbox-wheels     # once, as root
    .venv/bin/python -m pytest -q tests/integration/test_sandbox_docker.py

The hostile-program suite also runs against this image (tests/integration/
test_sandbox_hostile.py, the `docker` cases).
"""

from __future__ import annotations

import os

import httpx
import pytest

from dultra.cli import main
from tests.helpers import free_port
from tests.integration.sandbox_helpers import (
    build_test_image,
    docker_client,
    run,
    start_docker,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def service():
    yield from start_docker(workers=2)


def test_image_runs_hardened(service):
    container = next(c for c in docker_client().containers.list()
                     if c.attrs["State"]["Pid"] == service.root_pid)
    host = container.attrs["HostConfig"]
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"]
    assert "no-new-privileges" in host["SecurityOpt"]
    assert host["PidsLimit"] and host["Memory"]
    assert container.attrs["Config"]["User"] == "10001:10001"


def test_unprivileged_container_uses_process_isolation(service):
    ready = httpx.get(f"{service.url}/readyz").json()
    assert ready["isolation"] == "process" and ready["uid"] is None
    assert ready["landlock_abi"] >= 1  # Landlock passes Docker's default seccomp profile here


def test_runs_over_http(service):
    result = run(service.url, code="def f(x):\n    return x * 2\n", tests=["assert f(2) == 4"])
    assert (result["status"], result["passed"], result["total"]) == ("passed", 1, 1)
    user = run(service.url, code="import os\nprint(os.getuid(), os.getcwd())\n")["stdout"].split()
    assert user[0] == "10001" and user[1].startswith("/tmp/")


def test_executions_have_no_network_but_the_service_has(service):
    code = ("import socket\n"
            "socket.create_connection(('127.0.0.1', 8080), timeout=1)\n")
    result = run(service.url, code=code)
    assert result["status"] == "runtime_error" and "PermissionError" in result["stderr"]
    assert httpx.get(f"{service.url}/healthz").status_code == 200


def test_cli_up_and_down():
    image = build_test_image()
    port = free_port()
    name = f"dultra-sandbox-cli-test-{os.getpid()}"
    try:
        assert main(["sandbox", "up", "--image", image, "--port", str(port), "--name", name,
                     "--workers", "2"]) == 0
        assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200
        assert run(f"http://127.0.0.1:{port}", code="print(6 * 7)")["stdout"] == "42\n"
    finally:
        assert main(["sandbox", "down", "--name", name]) == 0
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
