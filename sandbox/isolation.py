"""Isolation layers of one execution, and what they do not protect against.

    python -c "from sandbox.isolation import probe; print(probe('auto'))"

Every execution is a fresh process forked from a warm worker (no interpreter start-up),
set up as below before the first line of model code runs. Outer layers first.

Per worker, in 'namespaces' mode (the service runs as root on a host or VM):
  * new pid, network, mount, ipc and uts namespaces. The network namespace has only a
    loopback that is down: no route anywhere, the service itself included. The worker is
    pid 1 of its pid namespace, so /proc (remounted) shows only its own executions, and
    `kill(-1)` after each run removes every process the run left behind.
  * the whole filesystem is re-mounted read-only (recursively, nosuid); /tmp is a
    private size- and inode-limited tmpfs holding the worker's working dir /tmp/run
    (mode 0711: executions cannot create files beside it); /dev/shm is a private tmpfs they cannot write. A
    directory that hides the interpreter (e.g. /root, 0700) is replaced by an empty tmpfs
    exposing only the interpreter's subtree.
  * executions run as uid/gid `executor_uid_base + i`, never root, with no capabilities
    and no supplementary groups; each worker has its own uid, so process limits and
    signals do not cross workers.

Per execution, in every mode (these need no privilege):
  * own session and process group (setsid); setsid/setpgid are then forbidden, so the
    whole tree is killed as one group when the run ends, children that outlive their
    parent included. The worker is a child subreaper and reaps everything.
  * rlimits: CPU seconds, address space, processes (per uid), file size, open files, no
    core dumps. The verdict `timeout` follows CPU time (the process's CPU clock, and its
    whole process group's for runs over 0.1 s), not wall time, so it does not depend on
    machine load. Programs that sleep or block are stopped by an idle limit (wall time
    minus CPU time minus time spent waiting for a CPU, from /proc/PID/schedstat), and a
    hard wall-clock limit bounds everything.
  * a private, empty working dir (HOME and TMPDIR point there), emptied afterwards;
    anything a run leaves elsewhere in its worker's area is removed too.
  * a minimal environment: PATH, HOME, TMPDIR, LANG only. The worker itself starts with a
    scrubbed environment, so its memory holds no secrets to inherit.
  * stdin is the request's stdin or /dev/null; stdout and stderr are pipes the worker
    reads with a cap (output_exceeded beyond it).
  * seccomp (`sandbox.seccomp`): no sockets but AF_UNIX pairs (no connect), no signals
    outside the group, no ptrace, no namespace or mount changes, no io_uring; limits,
    scheduling and I/O priority only of itself, no SIGIO ownership (all reach any process
    of the same uid).
  * Landlock where the kernel has it (`sandbox.landlock`): writes only inside the working
    dir, no TCP, signals scoped to the execution.
  * oom_score_adj 1000 (set on the worker, inherited): under memory pressure the kernel
    kills a run or a worker (which the pool replaces) before the service.
  * the worker, the server and a process using the in-process client are non-dumpable, so
    another process of the same uid cannot read their /proc/<pid>/environ or memory.

Each run is a copy-on-write fork: whatever it changes in memory dies with it, so nothing
carries over to the next run of the same worker (the `random` module is reseeded per fork).

In 'process' mode (non-root: a container, an unprivileged Kubernetes pod) the namespace
layer is absent. Executions then share the service's uid, /proc shows the container's
processes (their command lines; not their environment or memory, which are
non-dumpable), and RLIMIT_NPROC counts the uid's processes together, so a fork bomb can
briefly starve other runs' forks (never the service's: its own limit is not lowered).
Without Landlock (an old kernel, or a seccomp profile that refuses its syscalls) a run can
also write wherever the uid can, i.e. the writable volumes; its worker's area is wiped
after every run, but a concurrent run of another worker could see such a file. There the
outer layers are the pod's: a RuntimeClass such as gVisor, a NetworkPolicy denying egress,
and the restricted securityContext (non-root, read-only root filesystem, no capabilities,
RuntimeDefault seccomp); see manifests/sandbox/. Run as root without namespaces (a root
container lacking CAP_SYS_ADMIN), executions still switch to their own uid, which must be
able to read the interpreter.

NOT protected against: kernel exploits (use gVisor for a second kernel); reading files
that file permissions allow (the filesystem is readable: images hold no secrets; in
'process' mode that includes a concurrent run's working dir, Landlock limiting writes
only); disk space beyond the volume's (in 'process' mode a run can fill the pod's
emptyDir, failing concurrent runs' writes until its worker wipes it; 'namespaces' gives
each worker its own size-limited tmpfs); extended attributes and times of the reused
working dir itself; CPU side channels; a solution that walks its own interpreter to forge
the harness's report or read its assert tests (see `sandbox.harness`); memory accounting beyond the address-space rlimit (tmpfs pages
and page cache are the container's memory limit's job); the address-space limit is per
process, so a run's processes together may hold max_processes x memory_mb; CPU time of
children a run lets the kernel reap (SIGCHLD ignored) escapes the CPU count, so such runs
end at the idle or hard wall limit instead of `timeout`.
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import socket
import stat
import sys

from sandbox import landlock, seccomp

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWPID, CLONE_NEWNET = 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_CHILD_SUBREAPER = 1, 4, 36
_SYS_MOUNT_SETATTR = 442
_AT_FDCWD, _AT_RECURSIVE = -100, 0x8000
_MOUNT_ATTR_RDONLY_NOSUID = 0x1 | 0x2  # not nodev: /dev/null must keep working


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def prctl(option: int, value: int) -> None:
    _check(_libc.prctl(option, value, 0, 0, 0), f"prctl({option})")


def prefer_for_oom_kill() -> None:
    """oom_score_adj 1000 for this worker and so for every run it forks: should memory run
    out, the kernel kills those, not the service. Done while still dumpable (afterwards
    /proc/self belongs to root and a non-root worker can no longer write it)."""
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("1000")
    except OSError:
        pass


def make_non_dumpable() -> None:
    """Hide this process's /proc/<pid>/{environ,mem,...} from same-uid processes."""
    prctl(PR_SET_DUMPABLE, 0)


def probe(isolation: str) -> str:
    """The mode this host allows: 'namespaces' (root with CAP_SYS_ADMIN) or 'process'."""
    if isolation not in ("auto", "namespaces", "process"):
        raise ValueError(f"isolation must be auto, namespaces or process, not {isolation!r}")
    if isolation != "auto":
        return isolation
    if os.geteuid() != 0:
        return "process"
    pid = os.fork()
    if pid == 0:  # try in a throwaway child: unshare changes the caller for good
        flags = CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS
        os._exit(0 if _libc.unshare(flags) == 0 else 1)
    _, status = os.waitpid(pid, 0)
    return "namespaces" if os.waitstatus_to_exitcode(status) == 0 else "process"


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    def enc(text: str | None) -> bytes | None:
        return text.encode() if text is not None else None

    _check(_libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)),
           f"mount {target}")


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def enter_worker_namespaces(tmpfs_mb: int) -> None:
    """Move this (single-threaded) worker into fresh namespaces; returns as their pid 1.

    The original process stays outside, waits for pid 1 and exits with its status; pid 1
    dies with it (PDEATHSIG), taking its whole pid namespace along.
    """
    _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS),
           "unshare")
    child = os.fork()
    if child:
        for fd in range(3):
            os.close(fd)  # only pid 1 keeps the pipes to the pool, so its death reads as EOF
        signal.signal(signal.SIGTERM, lambda *_: os.kill(child, signal.SIGKILL))
        _, status = os.waitpid(child, 0)
        os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    socket.sethostname("sandbox")
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    _reveal_interpreter()
    attr = _MountAttr(_MOUNT_ATTR_RDONLY_NOSUID, 0, 0, 0)
    _check(_libc.syscall(_SYS_MOUNT_SETATTR, _AT_FDCWD, b"/", _AT_RECURSIVE,
                         ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr))),
           "mount_setattr(/, read-only)")
    # New mounts after the read-only pass stay as asked.
    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    _mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV,
           f"size={tmpfs_mb}m,nr_inodes={tmpfs_mb * 64},mode=0711")
    _mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=64k,mode=0755")


def blocking_ancestor(path: str) -> tuple[str, str] | None:
    """(dir, child) for the first directory on `path` that others cannot traverse."""
    parts = os.path.realpath(path).split("/")[1:]
    current = "/"
    for part in parts:
        if not os.stat(current).st_mode & stat.S_IXOTH:
            return current, part
        current = os.path.join(current, part)
    return None


def _reveal_interpreter() -> None:
    """Make the interpreter and this package readable for the executor uid.

    E.g. pyenv under /root (0700): /root is covered with a 0755 tmpfs holding only a bind
    mount of /root/.pyenv. Done before the read-only pass, which then covers these too.
    """
    import sandbox

    needed = {sys.base_prefix, sys.prefix, os.path.dirname(os.path.dirname(sandbox.__file__))}
    blocked = {hit for p in needed if (hit := blocking_ancestor(p))}
    if not blocked:
        return
    _mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0700")
    staged = []
    for i, (parent, child) in enumerate(sorted(blocked)):
        stage = f"/tmp/{i}"
        os.mkdir(stage)
        _mount(os.path.join(parent, child), stage, None, MS_BIND | MS_REC)
        staged.append((parent, child, stage))
    for parent in sorted({p for p, _, _ in staged}):
        _mount("tmpfs", parent, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
    for parent, child, stage in staged:
        target = os.path.join(parent, child)
        os.makedirs(target, exist_ok=True)
        _mount(stage, target, None, MS_BIND | MS_REC)
        _check(_libc.umount2(stage.encode(), MNT_DETACH), f"umount {stage}")
    _check(_libc.umount2(b"/tmp", MNT_DETACH), "umount staging /tmp")


def minimal_env(workdir: str) -> dict[str, str]:
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir,
            "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}


def confine_child(*, workdir: str, uid: int | None, rlimits: dict[int, int],
                  landlock_fd: int | None, seccomp_filter: seccomp.Template) -> None:
    """Last steps in the forked child before model code: identity, limits, filters."""
    if uid is not None:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)  # all uids non-zero: every capability is dropped
    os.chdir(workdir)
    os.environ.clear()
    os.environ.update(minimal_env(workdir))
    for which, value in rlimits.items():
        soft_hard = value if isinstance(value, tuple) else (value, value)
        resource.setrlimit(which, soft_hard)
    if landlock_fd is not None:
        prctl(38, 1)  # PR_SET_NO_NEW_PRIVS, required by Landlock
        landlock.restrict_self(landlock_fd)
        os.close(landlock_fd)
    seccomp_filter.install(os.getpid())
