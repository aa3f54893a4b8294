"""`dultra sandbox`: serve, try and launch the code-execution sandbox.

    dultra sandbox serve [--host 127.0.0.1 --port 8080 --workers N]
    dultra sandbox run solution.py --tests tests.py [--sandbox-url URL] [--timeout 5]
    dultra sandbox up [--image dultra-sandbox:latest --port 8080]     # via the Docker engine
    dultra sandbox down

`up` starts the image with the same hardening as the Kubernetes manifests (non-root,
read-only root filesystem, all capabilities dropped, no-new-privileges, pids and memory
limits, a tmpfs for working dirs), waits until /readyz answers and prints the URL.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import socket
import time

from dultra.errors import DultraError

DEFAULT_IMAGE = "dultra-sandbox:latest"
DEFAULT_NAME = "dultra-sandbox"
CONTAINER_PORT = 8080


class SandboxCommandError(DultraError):
    """A sandbox command that cannot do what was asked (no engine, no image, bad file)."""


def register(subparsers) -> None:
    p = subparsers.add_parser("sandbox", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="sandbox_command", required=True, metavar="ACTION")

    serve = sub.add_parser("serve", help="run the HTTP service in the foreground")
    serve.add_argument("--host", default=None, help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="TCP port (default 8080)")
    serve.add_argument("--workers", type=int, default=None, help="warm workers (default 4 x cores)")
    serve.add_argument("--isolation", choices=("auto", "namespaces", "process"), default=None,
                       help="isolation mode (default auto: the strongest the host allows)")
    serve.set_defaults(run=run_serve)

    run = sub.add_parser("run", help="run one program with tests and print the result")
    run.add_argument("file", help="Python source of the program")
    run.add_argument("--tests", help="Python file run after the program, counted as one test: all its asserts must "
                     "hold (without it: passed when the program runs without error)")
    run.add_argument("--stdin", help="file fed to the program's stdin")
    run.add_argument("--expected-stdout", help="file the program's stdout must match")
    run.add_argument("--timeout", type=float, default=None, help="CPU seconds (default 5)")
    run.add_argument("--sandbox-url", default=None,
                     help="a running service (default: in-process workers, no server)")
    run.set_defaults(run=run_file)

    up = sub.add_parser("up", help="start the sandbox image locally through Docker")
    up.add_argument("--image", default=DEFAULT_IMAGE, help=f"image (default {DEFAULT_IMAGE})")
    up.add_argument("--port", type=int, default=8080, help="host port on 127.0.0.1 (default 8080)")
    up.add_argument("--name", default=DEFAULT_NAME, help=f"container name (default {DEFAULT_NAME})")
    up.add_argument("--workers", type=int, default=0, help="workers in the container (default auto)")
    up.add_argument("--wait", type=float, default=60.0, help="seconds to wait for readiness")
    up.set_defaults(run=run_up)

    down = sub.add_parser("down", help="stop the container started by `up`")
    down.add_argument("--name", default=DEFAULT_NAME, help=f"container name (default {DEFAULT_NAME})")
    down.set_defaults(run=run_down)


def run_serve(args: argparse.Namespace) -> int:
    from sandbox.config import SandboxConfig
    from sandbox.server import serve

    try:
        config = SandboxConfig.configured(host=args.host, port=args.port, workers=args.workers,
                                          isolation=args.isolation)
    except ValueError as err:
        raise SandboxCommandError(f"bad sandbox setting: {err}") from err
    with socket.socket(socket.AF_INET6 if ":" in config.host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((config.host, config.port))
        except OSError as err:
            raise SandboxCommandError(f"cannot listen on {config.host}:{config.port}: {err.strerror}") from err
    serve(config)
    return 0


def _read(path: str | None, what: str) -> str | None:
    from sandbox.files import read_text  # the same checks and words as `python -m sandbox run`

    if path is None:
        return None
    try:
        return read_text(path, what)
    except ValueError as err:
        raise SandboxCommandError(str(err)) from None


def run_file(args: argparse.Namespace) -> int:
    from dultra.rewards.sandbox_client import ClientConfig, SandboxClient

    code = _read(args.file, "program")
    tests = _read(args.tests, "tests")
    with SandboxClient(args.sandbox_url, ClientConfig(workers=1)) as client:
        result = client.run(code, [tests] if tests is not None else None,
                            stdin=_read(args.stdin, "stdin file"),
                            expected_stdout=_read(args.expected_stdout, "expected stdout file"),
                            timeout_s=args.timeout)
    print(json.dumps(dataclasses.asdict(result), indent=2))
    return 0 if result.ok else 1


def _docker():
    import docker

    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as err:
        raise SandboxCommandError(f"cannot reach the Docker engine ({err}); is dockerd running?") from err
    return client


def start_container(image: str, port: int, name: str, workers: int = 0, wait_s: float = 60.0,
                    extra_env: dict[str, str] | None = None) -> str:
    """Start the sandbox image hardened, wait until it is ready, return its URL."""
    import docker
    import httpx

    client = _docker()
    try:
        client.images.get(image)
    except docker.errors.ImageNotFound as err:
        raise SandboxCommandError(f"image {image} not found; build it with `make sandbox-image`") from err
    try:
        client.containers.get(name).remove(force=True)  # a stale one from an earlier `up`
    except docker.errors.NotFound:
        pass
    env = {"SANDBOX_WORKERS": str(workers)} if workers else {}
    env.update(extra_env or {})
    try:
        container = client.containers.run(
            image, name=name, detach=True, environment=env,
            ports={f"{CONTAINER_PORT}/tcp": ("127.0.0.1", port)},
            read_only=True, tmpfs={"/tmp": "rw,nosuid,nodev,size=256m,mode=1777"},
            cap_drop=["ALL"], security_opt=["no-new-privileges"],
            pids_limit=1024, mem_limit="2g", labels={"dultra.component": "sandbox"},
        )
    except docker.errors.APIError as err:
        raise SandboxCommandError(f"docker could not start {image}: {err.explanation or err}") from err
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        container.reload()
        if container.status in ("exited", "dead"):
            logs = container.logs(tail=20).decode(errors="replace")
            raise SandboxCommandError(f"container {name} exited during start-up:\n{logs}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2.0).status_code == 200:
                return url
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    raise SandboxCommandError(f"container {name} not ready after {wait_s:g} s")


def stop_container(name: str) -> bool:
    """Stop and remove the container; False when there was none."""
    import docker

    try:
        _docker().containers.get(name).remove(force=True)
    except docker.errors.NotFound:
        return False
    return True


def run_up(args: argparse.Namespace) -> int:
    url = start_container(args.image, args.port, args.name, args.workers, args.wait)
    print(url)
    return 0


def run_down(args: argparse.Namespace) -> int:
    print(f"stopped {args.name}" if stop_container(args.name) else f"no container named {args.name}")
    return 0
