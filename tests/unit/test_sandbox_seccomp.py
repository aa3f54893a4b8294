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
    assert len(template.slots) == 5  # kill (pid, -pid), tgkill, rt_sigqueueinfo, rt_tgsigqueueinfo
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
        socket.socketpair()[0].close()  # AF_UNIX pairs stay allowed
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


def test_landlock_confines_writes_to_one_dir():
    abi = landlock.abi_version()
    if abi == 0:
        pytest.skip("this kernel has no Landlock")  # the executor then relies on the other layers
    allowed = tempfile.mkdtemp()
    outside = tempfile.mkdtemp()

    def child() -> int:
        os.setsid()
        import ctypes

        ctypes.CDLL(None).prctl(38, 1, 0, 0, 0)
        landlock.confine(allowed, abi)
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

    assert in_child(child) == 0
    assert os.listdir(outside) == []
