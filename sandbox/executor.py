"""Run one request in a fresh, isolated child forked from this warm worker.

    (used by `sandbox.worker`; try one request with `python -m sandbox run FILE --tests FILE`)

The worker forks, the child confines itself (`sandbox.isolation.confine_child`) and runs
`sandbox.harness`; the worker watches the child's CPU time, its idle time and the output
caps, kills the whole process group at the end, reaps everything, removes the
working dir and turns what it saw into one result (statuses in `sandbox.STATUSES`).
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import secrets
import select
import signal
import socket
import sys
import time

from sandbox import STATUSES, isolation, landlock, protocol, seccomp
from sandbox.config import SandboxConfig
from sandbox.harness import run_harness
from sandbox.isolation import confine_child

_TICK_S = 0.02  # how often the CPU clock of a running child is read
_GROUP_SCAN_AFTER_S = 0.1  # runs longer than this get their whole process group's CPU summed
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_SETUP_FAILED = 125
_READ = 1 << 16


def _cpu_clock(pid: int) -> int:
    """clockid of a process's CPU-time clock (MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED))."""
    return ((~pid) << 3) | 2


def _group_cpu_s(pgid: int) -> float:
    """CPU seconds of the live processes in process group `pgid` (plus reaped children)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            # utime stime cutime cstime
            total += sum(int(x) for x in fields[11:15])
    return total / _CLK_TCK


def _run_delay_s(pid: int) -> float:
    """Seconds the process spent runnable but waiting for a CPU (/proc/PID/schedstat)."""
    try:
        with open(f"/proc/{pid}/schedstat", "rb") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0  # unknown: then busy machines count as idle time, as a plain wall clock would


def _vm_size() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _tasks_of_uid(uid: int) -> int:
    """Threads of `uid` now: RLIMIT_NPROC counts them all, the service's included."""
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    count += len(os.listdir(f"/proc/{entry}/task"))
            except OSError:
                pass
    return count


class Executor:
    """Executes requests one at a time for one worker; holds what the worker measured once."""

    def __init__(self, config: SandboxConfig, mode: str, index: int):
        self.config = config
        self.mode = mode
        # As root (with or without namespaces) executions never keep uid 0.
        self.uid = config.executor_uid_base + index if os.geteuid() == 0 else None
        if mode == "namespaces":
            self.work_root = "/tmp"
            self.nproc = config.max_processes
        else:
            parent = config.work_dir or os.environ.get("TMPDIR") or "/tmp"
            self.work_root = os.path.join(parent, f"dultra-sandbox-w{index}-{os.getpid()}")
            os.makedirs(self.work_root, mode=0o711 if self.uid is not None else 0o700)
            if self.uid is not None and isolation.blocking_ancestor(sys.base_prefix):
                raise RuntimeError(
                    f"isolation=process as root: uid {self.uid} cannot read the interpreter "
                    f"under {sys.base_prefix}; use isolation=namespaces or a readable Python")
            # Without a uid of their own, executions share RLIMIT_NPROC with the service.
            extra = 0 if self.uid is not None else _tasks_of_uid(os.getuid()) + 64
            self.nproc = config.max_processes + extra
        self.landlock_abi = landlock.abi_version()
        # Made once: work in the forked child costs copy-on-write faults (see seccomp.Template).
        # One working dir per worker, emptied after every run: it keeps its inode, so the
        # Landlock rule made for it once stays valid, and "../x" is outside the rule.
        self.workdir = os.path.join(self.work_root, "run")
        os.mkdir(self.workdir, 0o700)
        self.landlock_fd = (landlock.make_ruleset(self.workdir, self.landlock_abi)
                            if self.landlock_abi else None)
        self.seccomp = seccomp.Template()
        self.vm_base = _vm_size()
        self.runs = 0

    def close(self) -> None:
        """Remove this worker's area ('process' mode; a namespace's tmpfs goes by itself)."""
        if self.mode == "process":
            _remove_tree(self.work_root)

    def describe(self) -> dict:
        return {"isolation": self.mode, "landlock_abi": self.landlock_abi, "uid": self.uid,
                "work_root": self.work_root}

    def run(self, request: dict) -> dict:
        start = time.monotonic()
        request = protocol.seal(request)  # the pool seals already; direct callers get the same judge
        total = protocol.total_of(request)
        try:
            result = self._run(request, total, start)
        except OSError as err:  # the worker could not set up or watch the run
            result = protocol.sandbox_error(f"executor: {err}", total)
        except Exception as err:  # a bug of ours: this request is unscored, the worker lives on
            result = protocol.sandbox_error(f"executor: {type(err).__name__}: {err}", total)
        result["duration_ms"] = round((time.monotonic() - start) * 1000, 3)
        return result

    def _workdir(self) -> str:
        """The worker's working dir, reset: the last run may have chmod-ed it."""
        self.runs += 1
        if self.uid is not None:
            os.chown(self.workdir, self.uid, self.uid)
        os.chmod(self.workdir, 0o700)
        return self.workdir

    def _rlimits(self, request: dict) -> dict:
        cpu = int(request["timeout_s"]) + 1
        mb = 1 << 20
        return {
            resource.RLIMIT_CPU: (cpu, cpu + 1),
            resource.RLIMIT_AS: self.vm_base + request["memory_mb"] * mb,
            resource.RLIMIT_NPROC: self.nproc,
            resource.RLIMIT_FSIZE: self.config.max_file_mb * mb,
            resource.RLIMIT_NOFILE: self.config.max_open_files,
            resource.RLIMIT_CORE: 0,
            resource.RLIMIT_MSGQUEUE: 0,
        }

    def _run(self, request: dict, total: int, start: float) -> dict:
        workdir = self._workdir()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        rep_r, rep_w = _report_channel()
        stdin_data = request.get("stdin")
        if stdin_data is not None:
            in_r, in_w = os.pipe()
        else:
            in_r, in_w = os.open(os.devnull, os.O_RDONLY), None
        token = secrets.token_hex(16)
        rlimits = self._rlimits(request)
        try:
            pid = os.fork()
        except OSError:
            for fd in (in_r, in_w, out_r, out_w, err_r, err_w, rep_r, rep_w):
                if fd is not None:
                    os.close(fd)
            raise
        if pid == 0:
            self._child(request, workdir, (in_r, out_w, err_w, rep_w), token, rlimits)
        for fd in (in_r, out_w, err_w, rep_w):
            os.close(fd)
        watch = _Watch(pid, request, self.config, start)
        try:
            watch.loop(out_r, err_r, rep_r, in_w, (stdin_data or "").encode())
        finally:
            _kill_all(pid, self.mode)
            watch.drain(out_r, err_r, rep_r)
            for fd in (out_r, err_r, rep_r, watch.in_w):
                if fd is not None:
                    os.close(fd)
            self._remove_workdirs(workdir)
        return watch.verdict(token, total)

    def _child(self, request, workdir, fds, token, rlimits) -> None:
        """In the forked child: never returns."""
        try:
            os.setsid()
            in_r, out_w, err_w, rep_w = fds
            os.dup2(in_r, 0)
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            os.dup2(rep_w, 3)
            landlock_fd = None
            if self.landlock_fd is not None:
                landlock_fd = 4
                os.dup2(self.landlock_fd, landlock_fd)
            # Everything else goes, the worker's protocol pipes above all: a run that could
            # write to them could forge any result.
            os.closerange(5 if landlock_fd is not None else 4, 1 << 16)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            confine_child(workdir=workdir, uid=self.uid, rlimits=rlimits,
                          landlock_fd=landlock_fd, seccomp_filter=self.seccomp)
            os.write(3, (token + '{"phase": "ready"}\n').encode())
        except BaseException as err:  # noqa: B036 - any setup failure is the sandbox's
            os.write(2, f"sandbox setup failed: {err!r}\n".encode())
            os._exit(_SETUP_FAILED)
        run_harness(request, 3, token)

    def _remove_workdirs(self, workdir: str) -> None:
        """Empty the working dir, and remove anything else that appeared beside it."""
        os.chmod(workdir, 0o700)
        for entry in os.listdir(workdir):
            _remove_tree(os.path.join(workdir, entry))
        if self.mode == "process":
            for entry in os.listdir(self.work_root):
                if entry != "run":
                    _remove_tree(os.path.join(self.work_root, entry))


class _Watch:
    """Watches one child: output, reports, CPU clock, deadline; then judges it."""

    def __init__(self, pid: int, request: dict, config: SandboxConfig, start: float):
        self.pid = pid
        self.request = request
        self.cap = config.max_output_bytes
        self.timeout_s = request["timeout_s"]
        self.start = start
        self.idle_limit, hard = config.wall_limits(self.timeout_s)
        self.hard_deadline = start + hard
        self.next_scan = 0.0
        self.why = ""
        self.out = bytearray()
        self.err = bytearray()
        self.rep = bytearray()
        self.exit_status: int | None = None
        self.in_w: int | None = None
        self.stdin = b""
        self.cpu_s = 0.0
        self.killed_for = ""

    def loop(self, out_r: int, err_r: int, rep_r: int, in_w: int | None, stdin: bytes) -> None:
        poller = select.poll()
        buffers = {out_r: self.out, err_r: self.err, rep_r: self.rep}
        for fd in buffers:
            poller.register(fd, select.POLLIN)
        try:
            pidfd = os.pidfd_open(self.pid)
            poller.register(pidfd, select.POLLIN)
        except (OSError, AttributeError):
            pidfd = None  # some seccomp profiles refuse pidfd_open: fall back to short ticks
        self.in_w, self.stdin = in_w, stdin
        if in_w is not None:
            os.set_blocking(in_w, False)
            poller.register(in_w, select.POLLOUT)
        try:
            while self.exit_status is None and not self.killed_for:
                for fd, _ in poller.poll(_TICK_S * 1000 if pidfd is not None else 2):
                    if fd in buffers:
                        self._read(fd, buffers[fd], poller)
                    elif fd == self.in_w:
                        self._feed(poller)
                self._check()
        finally:
            if pidfd is not None:
                os.close(pidfd)

    def _read(self, fd: int, buffer: bytearray, poller) -> None:
        try:
            chunk = os.read(fd, _READ)
        except BlockingIOError:
            return
        if not chunk:
            poller.unregister(fd)
            return
        buffer += chunk
        if len(buffer) > self.cap:
            # The report channel is capped too: flooding it must not grow the worker.
            self.killed_for = "output_exceeded"

    def _feed(self, poller) -> None:
        try:
            self.stdin = self.stdin[os.write(self.in_w, self.stdin[:_READ]):]
        except BlockingIOError:
            return
        except BrokenPipeError:
            self.stdin = b""  # the program closed its stdin: the rest is not wanted
        if not self.stdin:
            poller.unregister(self.in_w)
            os.close(self.in_w)
            self.in_w = None

    def _check(self) -> None:
        pid, status = os.waitpid(self.pid, os.WNOHANG)
        if pid:
            self.exit_status = status
            return
        now = time.monotonic()
        elapsed = now - self.start
        try:
            self.cpu_s = max(self.cpu_s, time.clock_gettime(_cpu_clock(self.pid)))
        except OSError:
            pass
        if elapsed >= _GROUP_SCAN_AFTER_S and now >= self.next_scan:
            # Children's CPU counts too (a fork bomb spreads its work); scanning /proc costs
            # a little, so only for runs that last, and at most every _GROUP_SCAN_AFTER_S.
            self.next_scan = now + _GROUP_SCAN_AFTER_S
            self.cpu_s = max(self.cpu_s, _group_cpu_s(self.pid))
        if self.cpu_s >= self.timeout_s:
            self.killed_for = "timeout"
            self.why = f"used {self.timeout_s:g} s of CPU time"
        elif elapsed >= self.idle_limit and elapsed - self.cpu_s - _run_delay_s(self.pid) >= self.idle_limit:
            # Time spent waiting for a CPU is not held against the program: only sleeping
            # or blocking is, so a busy machine does not turn passes into timeouts.
            self.killed_for = "timeout"
            self.why = f"idle (sleeping or blocked) for {self.idle_limit:g} s"
        elif now >= self.hard_deadline:
            self.killed_for = "timeout"
            self.why = f"still running after {self.hard_deadline - self.start:g} s of wall time"

    def drain(self, out_r: int, err_r: int, rep_r: int) -> None:
        """Read what is left once every writer is dead (so reads end at EOF)."""
        for fd, buffer in ((out_r, self.out), (err_r, self.err), (rep_r, self.rep)):
            os.set_blocking(fd, False)
            while len(buffer) <= self.cap:
                try:
                    chunk = os.read(fd, _READ)
                except OSError:
                    break
                if not chunk:
                    break
                buffer += chunk

    def verdict(self, token: str, total: int) -> dict:
        reports = _parse_reports(bytes(self.rep), token)
        stdout, stderr = _text(self.out, self.cap), _text(self.err, self.cap)
        passed = max((r.get("passed", 0) for r in reports if r.get("phase") in ("test", "done")), default=0)
        done = next((r for r in reports if r.get("phase") == "done"), None)
        ready = any(r.get("phase") == "ready" for r in reports)

        def res(status: str, detail: str = "", n: int = passed) -> dict:
            return protocol.result(status, passed=n, total=total, stdout=stdout, stderr=stderr,
                                   detail=detail)

        if not ready:
            return protocol.sandbox_error(f"the execution failed to start: {stderr[-300:]}", total)
        if self.killed_for == "output_exceeded" or max(len(self.out), len(self.err), len(self.rep)) > self.cap:
            return res("output_exceeded", f"more than {self.cap} bytes of output")
        if self.killed_for == "timeout":
            return res("timeout", self.why)
        status = self.exit_status
        if done is not None and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
            if done.get("status") not in STATUSES or done["status"] == "sandbox_error":
                return res("failed", "the harness report was tampered with")
            if done["status"] != "passed":
                return res(done["status"], str(done.get("detail", "")))
            if self.request.get("tests") is not None and passed != total:
                # Checked out here, not trusted from the report: every test must have run.
                return res("failed", f"only {passed} of {total} tests reported passing")
            return self._judge_output(res, total)
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            if sig in (signal.SIGXCPU,) or (sig == signal.SIGKILL and self.cpu_s >= self.timeout_s - 0.05):
                return res("timeout", "CPU time limit")
            if sig == signal.SIGKILL:
                return res("runtime_error", "killed by SIGKILL (e.g. the kernel's OOM killer)")
            if sig == signal.SIGXFSZ:
                return res("runtime_error", "file size limit")
            return res("runtime_error", f"killed by signal {_signal_name(sig)}")
        code = os.WEXITSTATUS(status)
        if self.request.get("tests") is not None:
            return res("failed", f"the program exited (status {code}) before its tests completed")
        if code != 0:
            return res("runtime_error", f"exit status {code}")
        return self._judge_output(res, total)

    def _judge_output(self, res, total: int) -> dict:
        expected = self.request.get("expected_sha256")  # sealed: the program never saw the answer
        if expected is None:
            return res("passed", n=total) if self.request.get("tests") is None else res("passed")
        if protocol.output_digest(bytes(self.out).decode("utf-8", "replace")) == expected:
            return res("passed", n=1)
        return res("failed", "stdout differs from expected_stdout", n=0)


def _signal_name(sig: int) -> str:
    """"SIGSEGV"; a real-time signal (SIGRTMIN..SIGRTMAX) has no name, only its number."""
    try:
        return signal.Signals(sig).name
    except ValueError:
        return str(sig)


def _report_channel() -> tuple[int, int]:
    """(worker's end, run's end) of the harness's report channel: a socket pair that carries
    data one way only. Not a pipe: a run may reopen its fd 3 through /proc/self/fd, and a
    reopened pipe gives the read end, where the harness's lines (and their token) pass. A
    socket cannot be reopened that way, and its run end cannot receive."""
    worker, run = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    worker.shutdown(socket.SHUT_WR)
    run.shutdown(socket.SHUT_RD)
    return worker.detach(), run.detach()


def _parse_reports(raw: bytes, token: str) -> list[dict]:
    reports = []
    for line in raw.decode("utf-8", "replace").splitlines():
        if line.startswith(token):
            try:
                reports.append(json.loads(line[len(token):]))
            except ValueError:
                pass
    return reports


def _text(buffer: bytearray, cap: int) -> str:
    return bytes(buffer[:cap]).decode("utf-8", "replace")


def _kill_all(pid: int, mode: str) -> None:
    """SIGKILL the run's whole process tree and reap it (the worker is its subreaper)."""
    for _ in range(50):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if mode == "namespaces":
            try:
                os.kill(-1, signal.SIGKILL)  # as pid 1: every process of this namespace but us
            except ProcessLookupError:
                pass
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        while True:
            try:
                reaped, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if reaped == 0:
                break
        time.sleep(0.002)
    print(f"sandbox: processes of run {pid} survive SIGKILL", file=sys.stderr)


def _remove_tree(path: str) -> None:
    """Remove `path`, however deep, long-named or locked a tree a run left: level by level
    through directory descriptors (no PATH_MAX), in a loop (no recursion limit), holding one
    descriptor at a time. Whatever cannot be removed is left (the next run's dir is reset)."""
    if os.path.islink(path) or not os.path.isdir(path):
        if os.path.lexists(path):
            os.unlink(path)
        return
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
    _unlock(path)
    fd = os.open(path, flags)
    pending = [_remove_files(fd)]  # per level: its subdirectories still to remove
    names: list[str] = []  # each level's name in its parent
    try:
        while pending:
            if pending[-1]:
                name = pending[-1].pop()
                try:
                    _unlock(name, fd)
                    sub = os.open(name, flags, dir_fd=fd)
                except OSError:
                    continue  # cannot enter it: leave it
                os.close(fd)
                fd = sub
                names.append(name)
                pending.append(_remove_files(fd))
                continue
            pending.pop()
            if names:
                parent = os.open("..", flags, dir_fd=fd)
                os.close(fd)
                fd = parent
                with contextlib.suppress(OSError):
                    os.rmdir(names.pop(), dir_fd=fd)
    finally:
        os.close(fd)
    with contextlib.suppress(OSError):
        os.rmdir(path)


def _unlock(name: str, dir_fd: int | None = None) -> None:
    """A run may leave directories it made unreadable; same-uid cleanup opens them first."""
    with contextlib.suppress(OSError):
        os.chmod(name, 0o700, dir_fd=dir_fd)


def _remove_files(fd: int) -> list[str]:
    """Unlink every non-directory in the directory `fd`; returns its subdirectories' names."""
    subdirs = []
    with os.scandir(fd) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                subdirs.append(entry.name)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(entry.name, dir_fd=fd)
    return subdirs
