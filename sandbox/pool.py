r"""A pool of warm workers shared by the HTTP server and the in-process client.

    python -c "from sandbox.pool import WorkerPool; from sandbox.config import SandboxConfig; \
p = WorkerPool(SandboxConfig(workers=2)); print(p.run({'code': 'print(1)'})); p.close()"

Each worker (`sandbox.worker`) runs one execution at a time; `submit` hands a request to the
next idle one from a thread pool of the same size, so extra requests wait in its queue
(`queue_depth`). A worker that dies or overruns its deadline is killed and replaced, and
that request ends `sandbox_error`: an infrastructure failure is never the program's. A
worker found dead while idle (the OOM killer prefers them) is replaced within a second by a
supervisor thread, so /readyz, which needs every worker up, recovers without traffic.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import logging
import os
import queue
import select
import shutil
import signal
import subprocess
import sys
import threading
import time

from sandbox import protocol
from sandbox.config import SandboxConfig

_START_TIMEOUT_S = 60.0
_SUPERVISE_EVERY_S = 1.0
log = logging.getLogger("sandbox")
_PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class WorkerError(RuntimeError):
    """A worker that cannot start or answer (an infrastructure failure)."""


class Worker:
    """One `python -m sandbox.worker` process and its line protocol."""

    def __init__(self, config: SandboxConfig, index: int):
        self.config = config
        self.index = index
        self.info: dict = {}
        self._buffer = b""
        self._start()

    def _start(self) -> None:
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
               "PYTHONPATH": _PACKAGE_PARENT, "PYTHONDONTWRITEBYTECODE": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sandbox.worker", str(self.index),
             json.dumps(dataclasses.asdict(self.config))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd="/",
            start_new_session=True, close_fds=True,
        )
        self._buffer = b""
        hello = self._read_line(time.monotonic() + _START_TIMEOUT_S)
        if not hello.get("ready"):
            raise WorkerError(f"worker {self.index} did not start: {hello}")
        self.info = hello

    def call(self, request: dict, timeout_s: float) -> dict:
        try:
            self.proc.stdin.write(json.dumps(request).encode() + b"\n")
            self.proc.stdin.flush()
        except OSError as err:
            raise WorkerError(f"worker {self.index} is gone: {err}") from err
        return self._read_line(time.monotonic() + timeout_s)

    def _read_line(self, deadline: float) -> dict:
        fd = self.proc.stdout.fileno()
        poller = select.poll()  # not select(): a big pool's pipes pass fd 1023
        poller.register(fd, select.POLLIN)
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise WorkerError(f"worker {self.index} did not answer in time")
            if poller.poll(left * 1000):
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    raise WorkerError(f"worker {self.index} exited ({self.proc.poll()})")
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return json.loads(line)

    def restart(self) -> None:
        self.kill()
        self._start()

    def dead(self) -> bool:
        return self.proc.poll() is not None

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        if self.info.get("isolation") == "process":
            # Killed workers cannot clean up after themselves.
            shutil.rmtree(self.info["work_root"], ignore_errors=True)
        for pipe in (self.proc.stdin, self.proc.stdout):
            try:
                pipe.close()
            except OSError:
                pass


class WorkerPool:
    """Warm workers plus a bounded thread pool that feeds them; thread-safe."""

    def __init__(self, config: SandboxConfig):
        self.config = config
        n = config.resolved_workers()
        self._idle: queue.Queue[Worker] = queue.Queue()
        self._lock = threading.Lock()
        self._queued = 0
        self._busy = 0
        self._restarts = 0
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(n, 8)) as starter:
            workers = list(starter.map(lambda i: Worker(config, i), range(n)))
        for worker in workers:
            self._idle.put(worker)
        self.workers = workers
        self._threads = concurrent.futures.ThreadPoolExecutor(
            max_workers=n, thread_name_prefix="sandbox-call")
        # Create the threads now: later thread creation could meet a full process table.
        list(self._threads.map(lambda _: time.sleep(0.01), range(n)))
        self._closed = threading.Event()
        threading.Thread(target=self._supervise, name="sandbox-supervisor", daemon=True).start()

    @property
    def info(self) -> dict:
        return {**self.workers[0].info, "workers": len(self.workers)}

    def stats(self) -> dict:
        with self._lock:
            return {"queue_depth": self._queued, "busy": self._busy,
                    "workers": len(self.workers), "restarts": self._restarts}

    def submit(self, request: dict) -> concurrent.futures.Future:
        """Run a normalized request (see `sandbox.protocol.normalize`) on the next idle worker."""
        with self._lock:
            self._queued += 1
        future = self._threads.submit(self._run, request)
        future.add_done_callback(self._dequeue_if_cancelled)  # the server cancels what nobody awaits
        return future

    def _dequeue_if_cancelled(self, future: concurrent.futures.Future) -> None:
        if future.cancelled():
            with self._lock:
                self._queued -= 1

    def run(self, request: dict) -> dict:
        return self.submit(request).result()

    def _run(self, request: dict) -> dict:
        worker = self._idle.get()
        with self._lock:
            self._queued -= 1
            self._busy += 1
        try:
            if worker.dead():
                self._restart(worker)
            limit = self.config.wall_limits(request["timeout_s"])[1] + 10.0
            try:
                return worker.call(protocol.seal(request), limit)
            except (WorkerError, ValueError) as err:
                detail = str(err)
                again = self._restart(worker)
                if again:
                    detail += f"; restarting it failed: {again}"  # the supervisor tries again
                return protocol.sandbox_error(detail, protocol.total_of(request))
        finally:
            with self._lock:
                self._busy -= 1
            self._idle.put(worker)

    def _restart(self, worker: Worker) -> str:
        """Replace the worker's process; the error text when that failed, else ''."""
        with self._lock:
            self._restarts += 1
        try:
            worker.restart()
        except (WorkerError, OSError, ValueError) as err:
            return str(err)
        return ""

    def _supervise(self) -> None:
        """Replace idle workers that died, so readiness comes back without a request."""
        while not self._closed.wait(_SUPERVISE_EVERY_S):
            for _ in range(self._idle.qsize()):
                try:
                    worker = self._idle.get_nowait()
                except queue.Empty:
                    break
                try:
                    if worker.dead() and not self._closed.is_set():
                        error = self._restart(worker)
                        if error:
                            log.warning("worker %d could not restart: %s", worker.index, error)
                finally:
                    self._idle.put(worker)

    def alive(self) -> bool:
        return not any(w.dead() for w in self.workers)

    def close(self) -> None:
        self._closed.set()
        self._threads.shutdown(wait=False, cancel_futures=True)
        for worker in self.workers:
            worker.kill()
