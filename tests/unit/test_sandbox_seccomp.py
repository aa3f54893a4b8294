"""The hand-assembled seccomp filter and the Landlock ruleset, on the real kernel.

Each check runs in a forked child (filters cannot be removed), which reports back through
its exit status.
"""

from __future__ import annotations

import errno
import os
import socket
import tempfile

import pytest

from sandbox import landlock, seccomp


def in_child(fn) -> int:
    pid = os.fork()
    if pid == 0:
        try:
            code = fn()
        except BaseException:  # noqa: B036 - any failure is reported as a status
            code = 99
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_filter_checks_the_architecture_first():
    prog = seccomp.build_filter(1234, "x86_64")
    assert prog[0] == (0x20, 0, 0, 4)  # load seccomp_data.arch
    assert prog[2] == (0x06, 0, 0, 0x80000000)  # wrong arch: kill the process
    assert prog[-1] == (0x06, 0, 0, 0x7FFF0000)  # default: allow
    assert seccomp.build_filter(1234, "aarch64") != prog
    with pytest.raises(OSError):
        seccomp.build_filter(1234, "mips")


def test_template_patches_exactly_the_pid_constants():
    template = seccomp.Template()
    # kill (pid, -pid), tgkill, rt_sigqueueinfo, rt_tgsigqueueinfo, prlimit64, four sched_set*,
    # setpriority, ioprio_set
    assert len(template.slots) == 12
    assert sum(negative for _, negative in template.slots) == 1


def test_installed_filter_blocks_network_signals_and_escapes():
    def child() -> int:
        seccomp.Template().install(os.getpid())
        failures = 0
        for family, kind in ((socket.AF_INET, socket.SOCK_STREAM), (socket.AF_INET6, socket.SOCK_DGRAM),
                             (socket.AF_PACKET, socket.SOCK_RAW)):
            try:
                socket.socket(family, kind)
                failures += 1
            except OSError as err:
                failures += err.errno not in (errno.EACCES, errno.EPERM)
        left, right = socket.socketpair()  # AF_UNIX pairs stay allowed, send/recv included
        left.send(b"x")
        failures += right.recv(1) != b"x"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind("\0dultra-seccomp-test")  # an abstract address: no file
        listener.listen()
        dgram = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        for call in (lambda: socket.socket(socket.AF_UNIX).connect("\0dultra-seccomp-test"),
                     lambda: dgram.sendto(b"x", "\0dultra-seccomp-test"),
                     lambda: dgram.sendmsg([b"x"], [], 0, "\0dultra-seccomp-test")):
            try:
                call()
                failures += 1
            except PermissionError:
                pass
        for call in (lambda: os.kill(os.getppid(), 0), lambda: os.kill(-1, 0), os.setsid,
                     lambda: os.setpgid(0, 0)):
            try:
                call()
                failures += 1
            except PermissionError:
                pass
        os.kill(os.getpid(), 0)  # itself: allowed
        grandchild = os.fork()  # plain fork still works
        if grandchild == 0:
            os._exit(7)
        _, status = os.waitpid(grandchild, 0)
        failures += os.waitstatus_to_exitcode(status) != 7
        return min(failures, 50)

    assert in_child(child) == 0


def test_installed_filter_keeps_other_processes_of_the_uid_out_of_reach():
    """Limits, scheduling and SIGIO ownership reach any process of the same uid (the server
    itself in an unprivileged pod); a run may only change its own."""
    import fcntl
    import resource
    import struct

    def child() -> int:
        parent = os.getppid()
        seccomp.Template().install(os.getpid())
        failures = 0
        denied = [
            lambda: resource.prlimit(parent, resource.RLIMIT_NOFILE),
            lambda: os.sched_setaffinity(parent, os.sched_getaffinity(0)),
            lambda: os.setpriority(os.PRIO_PROCESS, parent, 19),
            lambda: os.setpriority(os.PRIO_USER, 0, 19),
        ]
        r, w = os.pipe()
        denied += [
            lambda: fcntl.fcntl(r, fcntl.F_SETOWN, parent),
            lambda: fcntl.fcntl(r, 10, 9),  # F_SETSIG
            lambda: fcntl.ioctl(r, 0x8901, struct.pack("i", parent)),  # FIOSETOWN
        ]
        for call in denied:
            try:
                call()
                failures += 1
            except PermissionError:
                pass
        # its own limits, priority and affinity stay adjustable, and other fcntl calls work
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft - 1, hard))
        resource.prlimit(os.getpid(), resource.RLIMIT_NOFILE, (soft - 2, hard))
        failures += resource.getrlimit(resource.RLIMIT_NOFILE)[0] != soft - 2
        os.setpriority(os.PRIO_PROCESS, 0, 5)
        os.sched_setaffinity(0, os.sched_getaffinity(0))
        fcntl.fcntl(w, fcntl.F_SETFL, os.O_NONBLOCK)
        failures += not fcntl.fcntl(w, fcntl.F_GETFL) & os.O_NONBLOCK
        return min(failures, 50)

    assert in_child(child) == 0


def test_landlock_confines_writes_to_one_dir():
    abi = landlock.abi_version()
    if abi == 0:
        pytest.skip("this kernel has no Landlock")  # the executor then relies on the other layers
    allowed = tempfile.mkdtemp()
    outside = tempfile.mkdtemp()
    ruleset = landlock.make_ruleset(allowed, abi)  # as the executor: made once, applied in each forked child

    def child() -> int:
        os.setsid()
        import ctypes

        ctypes.CDLL(None).prctl(38, 1, 0, 0, 0)
        landlock.restrict_self(ruleset)
        with open(os.path.join(allowed, "ok"), "w") as f:
            f.write("x")
        try:
            open(os.path.join(outside, "no"), "w")
            return 1
        except PermissionError:
            pass
        if abi >= 6:
            try:
                os.kill(os.getppid(), 0)
                return 2
            except PermissionError:
                pass
        return 0

    try:
        assert in_child(child) == 0
    finally:
        os.close(ruleset)
    assert os.listdir(outside) == []
