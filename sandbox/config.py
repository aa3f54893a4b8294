"""Typed settings of the sandbox service and its executors.

    python -m sandbox serve --workers 4      # fields below map to flags and SANDBOX_* env vars
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class SandboxConfig:
    """Everything the server, the pool and each execution need; logged whole at start."""

    host: str = "127.0.0.1"
    """Address the HTTP server binds (0.0.0.0 inside a container)."""
    port: int = 8080
    """TCP port of the HTTP server."""
    workers: int = 0
    """Warm worker processes, each running one execution at a time; 0 = 4 x the CPUs this
    process may use (its affinity and its cgroup's CPU quota, as in a container)."""
    isolation: str = "auto"
    """'namespaces' (needs root: pid/net/mount/ipc/uts namespaces and a per-worker uid),
    'process' (unprivileged: seccomp, Landlock, rlimits only) or 'auto' (the strongest the
    host allows)."""
    work_dir: str = ""
    """Parent of the per-execution working dirs in 'process' mode; '' = $TMPDIR. In
    'namespaces' mode each worker uses a private tmpfs instead."""
    executor_uid_base: int = 61000
    """In 'namespaces' mode worker i runs executions as uid/gid base + i (never root)."""
    default_timeout_s: float = 5.0
    """CPU-seconds budget of an execution when the request gives none."""
    max_timeout_s: float = 60.0
    """Largest timeout_s a request may ask for."""
    wall_factor: float = 3.0
    """Idle limit = timeout_s x wall_factor + 1 s of wall time spent neither running nor
    waiting for a CPU: it catches sleeping or blocked programs without penalising runs on a
    busy machine. A hard wall limit of 4 x that bounds everything."""
    default_memory_mb: int = 512
    """Address-space budget of an execution (on top of the interpreter) when not given."""
    max_memory_mb: int = 4096
    """Largest memory_mb a request may ask for."""
    max_output_bytes: int = 1 << 20
    """Cap on stdout and on stderr each; a program printing more ends output_exceeded."""
    max_file_mb: int = 16
    """Largest file an execution may write (RLIMIT_FSIZE)."""
    max_processes: int = 32
    """Processes and threads an execution may hold at once (RLIMIT_NPROC; per uid)."""
    max_open_files: int = 128
    """Open file descriptors per process of an execution (RLIMIT_NOFILE)."""
    tmpfs_mb: int = 64
    """Size of each worker's private tmpfs for working dirs ('namespaces' mode): bounds
    disk use by many small files."""
    heartbeat_s: float = 10.0
    """While a request's runs execute, its answer sends a space this often (JSON allows
    leading whitespace), so a client's read timeout bounds the service's silence, not the
    time a long batch takes. At most 30: well under dultra's client read timeout (60 s)."""
    max_batch: int = 4096
    """Most requests one /v1/run_batch call may carry."""
    max_code_bytes: int = 1 << 20
    """Largest code, test or stdin string accepted (bytes of UTF-8)."""
    max_request_bytes: int = 8 << 20
    """Largest total of one request's strings (code, tests, stdin, expected_stdout)."""
    max_body_bytes: int = 256 << 20
    """Largest HTTP body accepted (413 beyond it); read in chunks, never whole first."""
    max_batch_output_bytes: int = 256 << 20
    """Stdout plus stderr one /v1/run_batch answer may carry; results that finish once it is
    spent come back with empty output (statuses intact) so one batch cannot hold GiBs."""

    def __post_init__(self) -> None:
        if self.isolation not in ("auto", "namespaces", "process"):
            raise ValueError(f"isolation must be auto, namespaces or process, not {self.isolation!r}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, not {self.port}")
        for name in ("workers", "max_batch", "max_output_bytes", "max_processes", "max_open_files",
                     "tmpfs_mb", "max_file_mb", "default_memory_mb", "max_memory_mb", "max_code_bytes",
                     "max_request_bytes", "max_body_bytes", "max_batch_output_bytes"):
            if getattr(self, name) < (0 if name == "workers" else 1):
                raise ValueError(f"{name} must be positive, not {getattr(self, name)}")
        if not 0 < self.heartbeat_s <= 30:
            raise ValueError(f"heartbeat_s must be in (0, 30], not {self.heartbeat_s}")
        if not 0 < self.default_timeout_s <= self.max_timeout_s:
            raise ValueError("default_timeout_s must be in (0, max_timeout_s]")

    def wall_limits(self, timeout_s: float) -> tuple[float, float]:
        """(idle limit, hard wall-clock limit) in seconds for a run of timeout_s CPU seconds."""
        idle = timeout_s * self.wall_factor + 1.0
        return idle, 4 * idle

    def resolved_workers(self) -> int:
        return self.workers or 4 * usable_cpus()

    def with_env(self, environ: dict[str, str] | None = None) -> SandboxConfig:
        """Override fields from SANDBOX_<FIELD> variables (how the container is configured)."""
        environ = os.environ if environ is None else environ
        changes = {}
        for field in dataclasses.fields(self):
            name = f"SANDBOX_{field.name.upper()}"
            raw = environ.get(name)
            if raw is not None:
                kind = type(getattr(self, field.name))
                try:
                    changes[field.name] = kind(raw)
                except ValueError:
                    raise ValueError(f"{name}={raw!r} is not {'an integer' if kind is int else 'a number'}") from None
        return dataclasses.replace(self, **changes)

    @classmethod
    def configured(cls, **settings) -> SandboxConfig:
        """The defaults, then SANDBOX_* variables, then the `settings` that are not None (flags)."""
        return dataclasses.replace(cls().with_env(), **{k: v for k, v in settings.items() if v is not None})


def usable_cpus(cpu_max: str = "/sys/fs/cgroup/cpu.max") -> int:
    """CPUs this process may use: its affinity, capped by a cgroup v2 quota ("quota period")."""
    cpus = len(os.sched_getaffinity(0))
    try:
        with open(cpu_max) as f:
            quota, period = f.read().split()
    except (OSError, ValueError):
        return cpus
    if quota == "max":
        return cpus
    return max(1, min(cpus, -(-int(quota) // int(period))))
