"""Real sandbox services for integration tests: local servers and the Docker image.

Docker tests find the engine at the default socket (where `.ci/docker-setup.sh` starts
it) and fail with a clear message when it is missing: they are never skipped.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.helpers import free_port

REPO = Path(__file__).resolve().parents[2]
SECRET = "dultra-test-secret-7f3a9c"  # put in every service's environment; must never leak
TEST_IMAGE = "dultra-sandbox:test"
BASE_IMAGE = os.environ.get("SANDBOX_BASE", "local/debian-python:bookworm")


@dataclass
class Service:
    url: str
    port: int
    root_pid: int
    """Host pid whose descendants are the service's processes (for leak checks)."""
    kind: str


def wait_ready(url: str, timeout_s: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"sandbox server exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"sandbox at {url} not ready after {timeout_s} s")


def start_local(isolation: str, workers: int = 4, **settings):
    """`python -m sandbox serve` in a subprocess (settings: SandboxConfig fields); a generator for fixtures."""
    port = free_port()
    env = {**os.environ, "SANDBOX_ISOLATION": isolation, "SANDBOX_WORKERS": str(workers),
           "DULTRA_TEST_SECRET": SECRET, **{f"SANDBOX_{k.upper()}": str(v) for k, v in settings.items()}}
    proc = subprocess.Popen([sys.executable, "-m", "sandbox", "serve", "--port", str(port)],
                            env=env, cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc=proc)
        yield Service(url, port, proc.pid, isolation)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def docker_client():
    import docker

    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as err:
        pytest.fail(f"no Docker engine ({err}): run `bash .ci/docker-setup.sh` (as root) first",
                    pytrace=False)
    return client


def build_test_image() -> str:
    """Build sandbox/Dockerfile offline (local base + wheels); cached layers make it quick."""
    import docker

    client = docker_client()
    wheels = list((REPO / "sandbox" / "wheels").glob("*.whl"))
    if not wheels:
        pytest.fail("no wheels in sandbox/wheels: run `make sandbox-wheels` first", pytrace=False)
    try:
        client.images.get(BASE_IMAGE)
    except docker.errors.ImageNotFound:
        pytest.fail(f"base image {BASE_IMAGE} missing: run `bash .ci/docker-setup.sh`", pytrace=False)
    client.images.build(path=str(REPO / "sandbox"), tag=TEST_IMAGE, rm=True,
                        buildargs={"BASE": BASE_IMAGE}, network_mode="none")
    return TEST_IMAGE


def start_docker(workers: int = 4):
    """The image, hardened as `dultra sandbox up` runs it; a generator for fixtures."""
    from dultra.commands.sandbox import start_container, stop_container

    image = build_test_image()
    name = f"dultra-sandbox-test-{os.getpid()}"
    port = free_port()
    url = start_container(image, port, name, workers=workers, extra_env={"DULTRA_TEST_SECRET": SECRET})
    container = docker_client().containers.get(name)
    try:
        yield Service(url, port, container.attrs["State"]["Pid"], "docker")
    finally:
        stop_container(name)


def descendants(pid: int) -> list[int]:
    """Every live (non-zombie) process below `pid`, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] == "Z":
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def run(url: str, http_timeout: float = 60.0, **request) -> dict:
    response = httpx.post(f"{url}/v1/run", json=request, timeout=http_timeout)
    assert response.status_code == 200, response.text
    return response.json()
