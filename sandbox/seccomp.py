"""A seccomp-BPF filter for executions, assembled by hand (no libseccomp needed).

    python -c "from sandbox.seccomp import build_filter; print(len(build_filter(1234)))"

Installed in every execution after fork, on every host (root, Docker, an unprivileged
Kubernetes pod), because it needs no privilege: only `no_new_privs`. It is the layer that
still holds where namespaces are refused. What it denies, with EPERM/EACCES (never a kill,
so Python raises a clean `PermissionError` the harness can report):

- `socket()` for any family but AF_UNIX: no TCP, UDP, raw, packet or netlink sockets.
- `connect`, `sendmsg`/`sendmmsg` and `sendto` with an address: a Unix socket reaches no
  listener outside the run (in namespaces mode the host's filesystem sockets, dbus or
  journald, are otherwise in reach). `socketpair` with send/recv still works.
- `io_uring_setup`: io_uring can open sockets without the `socket()` syscall.
- signals outside the execution's own process group: `kill` only to 0, itself or its
  own group; `tgkill`/`rt_sigqueueinfo` only to itself; `tkill`, pidfd signalling denied.
- `setsid`/`setpgid`: every descendant stays in the group the worker kills at the end.
- reaching other processes of the same uid (all of them in an unprivileged pod: the
  server, the workers, other runs): `prlimit64`, `sched_setaffinity`/`setscheduler`/
  `setparam`/`setattr` only on itself (pid 0 or its own), `setpriority` and `ioprio_set`
  only on itself, `migrate_pages`/`move_pages` denied, and no signal owner on a file
  (`fcntl` F_SETOWN/F_SETOWN_EX/F_SETSIG, `ioctl` FIOSETOWN/SIOCSPGRP): SIGIO to any
  pid would go around the signal rules above, on kernels without Landlock's signal scope.
- `ptrace`, `process_vm_readv/writev`: no reading other processes' memory.
- SysV shared memory, semaphores and message queues, and POSIX message queues: these
  outlive the process that made them, so a run could leave data for the next one.
- namespace and mount changes (`unshare`, `setns`, `clone` with CLONE_NEW*, `clone3`
  answers ENOSYS so libc falls back to `clone`), `mount`, `pivot_root`, `chroot`, `bpf`,
  `perf_event_open`, `userfaultfd`, keyrings.

It does NOT filter file access (Landlock and permissions do that), memory or CPU (rlimits
do), or syscalls not listed here. Syscall numbers are known for x86_64 and aarch64 only;
on another architecture `build_filter` raises and the executor reports that seccomp is
unavailable.
"""

from __future__ import annotations

import ctypes
import errno
import platform
import struct

# BPF opcodes (linux/filter.h) and seccomp return values (linux/seccomp.h).
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_AND_K = 0x54
_RET_K = 0x06
_RET_ALLOW = 0x7FFF0000
_RET_KILL_PROCESS = 0x80000000
_RET_ERRNO = 0x00050000

# struct seccomp_data: int nr; u32 arch; u64 ip; u64 args[6] (low word first on LE).
_OFF_NR, _OFF_ARCH = 0, 4


def _arg(i: int) -> int:
    return 16 + 8 * i


_AF_UNIX = 1
_PRIO_PROCESS = 0
_IOPRIO_WHO_PROCESS = 1
_F_SETOWN, _F_SETSIG, _F_SETOWN_EX = 8, 10, 15
_FIOSETOWN, _SIOCSPGRP = 0x8901, 0x8902
# CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET
_CLONE_NEW_MASK = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000

_ARCHES = {
    "x86_64": (
        0xC000003E,
        dict(
            socket=41, kill=62, tkill=200, tgkill=234, rt_sigqueueinfo=129,
            rt_tgsigqueueinfo=297, pidfd_send_signal=424, pidfd_open=434, pidfd_getfd=438,
            setsid=112, setpgid=109, ptrace=101, process_vm_readv=310, process_vm_writev=311,
            unshare=272, setns=308, clone=56, clone3=435, mount=165, umount2=166,
            pivot_root=155, chroot=161, bpf=321, perf_event_open=298, userfaultfd=323,
            keyctl=250, add_key=248, request_key=249, io_uring_setup=425, fsopen=430,
            fsmount=432, move_mount=429, open_tree=428, mount_setattr=442,
            shmget=29, semget=64, msgget=68, mq_open=240, prlimit64=302, setpriority=141,
            sched_setparam=142, sched_setscheduler=144, sched_setaffinity=203, sched_setattr=314,
            ioprio_set=251, migrate_pages=256, move_pages=279, fcntl=72, ioctl=16,
            connect=42, sendto=44, sendmsg=46, sendmmsg=307,
        ),
    ),
    "aarch64": (
        0xC00000B7,
        dict(
            socket=198, kill=129, tkill=130, tgkill=131, rt_sigqueueinfo=138,
            rt_tgsigqueueinfo=240, pidfd_send_signal=424, pidfd_open=434, pidfd_getfd=438,
            setsid=157, setpgid=154, ptrace=117, process_vm_readv=270, process_vm_writev=271,
            unshare=97, setns=268, clone=220, clone3=435, mount=40, umount2=39,
            pivot_root=41, chroot=51, bpf=280, perf_event_open=241, userfaultfd=282,
            keyctl=219, add_key=217, request_key=218, io_uring_setup=425, fsopen=430,
            fsmount=432, move_mount=429, open_tree=428, mount_setattr=442,
            shmget=194, semget=190, msgget=186, mq_open=180, prlimit64=261, setpriority=140,
            sched_setparam=118, sched_setscheduler=119, sched_setaffinity=122, sched_setattr=274,
            ioprio_set=30, migrate_pages=238, move_pages=239, fcntl=25, ioctl=29,
            connect=203, sendto=206, sendmsg=211, sendmmsg=269,
        ),
    ),
}
_DENY = (
    "tkill", "pidfd_send_signal", "pidfd_open", "pidfd_getfd", "setsid", "setpgid",
    "ptrace", "process_vm_readv", "process_vm_writev", "unshare", "setns", "mount",
    "umount2", "pivot_root", "chroot", "bpf", "perf_event_open", "userfaultfd", "keyctl",
    "add_key", "request_key", "io_uring_setup", "fsopen", "fsmount", "move_mount",
    "open_tree", "mount_setattr", "shmget", "semget", "msgget", "mq_open", "migrate_pages",
    "move_pages", "connect", "sendmsg", "sendmmsg",
)


def _ins(code: int, k: int = 0, jt: int = 0, jf: int = 0) -> tuple[int, int, int, int]:
    return (code, jt, jf, k & 0xFFFFFFFF)


def _errno(e: int) -> tuple[int, int, int, int]:
    return _ins(_RET_K, _RET_ERRNO | e)


def _only_values(checks: list[tuple[int, list[int]]], err: int) -> list:
    """Block: allow when, for every (arg, allowed) check, args[arg] (low 32 bits) is one of
    `allowed`; else fail with err."""
    block = []
    for arg, allowed in checks:
        block.append(_ins(_LD_W_ABS, _arg(arg)))
        n = len(allowed)
        for i, value in enumerate(allowed):
            # jump over the remaining compares and the errno return to the next check
            block.append(_ins(_JEQ_K, value, jt=n - i))
        block.append(_errno(err))
    return block + [_ins(_RET_K, _RET_ALLOW)]


def _only_null(arg: int, err: int) -> list:
    """Block: allow when args[arg] is 0 in both words (a NULL pointer), else fail with err."""
    return [
        _ins(_LD_W_ABS, _arg(arg)),
        _ins(_JEQ_K, 0, jf=2),  # low word set: to the errno return
        _ins(_LD_W_ABS, _arg(arg) + 4),
        _ins(_JEQ_K, 0, jt=1),
        _errno(err),
        _ins(_RET_K, _RET_ALLOW),
    ]


def _deny_values(arg: int, denied: list[int], err: int) -> list:
    """Block: fail with err when args[arg] (low 32 bits) is one of `denied`, else allow."""
    block = [_ins(_LD_W_ABS, _arg(arg))]
    n = len(denied)
    for i, value in enumerate(denied):
        block.append(_ins(_JEQ_K, value, jt=n - i))  # to the errno return after the compares
    return block + [_ins(_RET_K, _RET_ALLOW), _errno(err)]


def build_filter(self_pid: int, machine: str | None = None) -> list[tuple[int, int, int, int]]:
    """The filter's instructions for a process whose pid (and process group id) is self_pid."""
    machine = machine or platform.machine()
    if machine not in _ARCHES:
        raise OSError(errno.ENOSYS, f"no seccomp syscall table for {machine}")
    audit_arch, nr = _ARCHES[machine]
    neg_self = -self_pid & 0xFFFFFFFF
    itself = [0, self_pid]
    rules: list[tuple[int, list]] = [
        (nr["socket"], _only_values([(0, [_AF_UNIX])], errno.EACCES)),
        (nr["kill"], _only_values([(0, [0, self_pid, neg_self])], errno.EPERM)),
        (nr["tgkill"], _only_values([(0, [self_pid])], errno.EPERM)),
        (nr["rt_sigqueueinfo"], _only_values([(0, [self_pid])], errno.EPERM)),
        (nr["rt_tgsigqueueinfo"], _only_values([(0, [self_pid])], errno.EPERM)),
        *((nr[name], _only_values([(0, itself)], errno.EPERM)) for name in (
            "prlimit64", "sched_setparam", "sched_setscheduler", "sched_setaffinity", "sched_setattr")),
        (nr["setpriority"], _only_values([(0, [_PRIO_PROCESS]), (1, itself)], errno.EPERM)),
        (nr["ioprio_set"], _only_values([(0, [_IOPRIO_WHO_PROCESS]), (1, itself)], errno.EPERM)),
        (nr["sendto"], _only_null(4, errno.EPERM)),  # send() on a connected socket passes NULL
        (nr["fcntl"], _deny_values(1, [_F_SETOWN, _F_SETSIG, _F_SETOWN_EX], errno.EPERM)),
        (nr["ioctl"], _deny_values(1, [_FIOSETOWN, _SIOCSPGRP], errno.EPERM)),
        (nr["clone3"], [_errno(errno.ENOSYS)]),
        (
            nr["clone"],
            [
                _ins(_LD_W_ABS, _arg(0)),
                _ins(_AND_K, _CLONE_NEW_MASK),
                _ins(_JEQ_K, 0, jt=1),
                _errno(errno.EPERM),
                _ins(_RET_K, _RET_ALLOW),
            ],
        ),
    ]
    rules += [(nr[name], [_errno(errno.EPERM)]) for name in _DENY]

    prog = [
        _ins(_LD_W_ABS, _OFF_ARCH),
        _ins(_JEQ_K, audit_arch, jt=1),
        _ins(_RET_K, _RET_KILL_PROCESS),
        _ins(_LD_W_ABS, _OFF_NR),
    ]
    if machine == "x86_64":
        # x32 ABI syscalls (nr | 0x40000000) would bypass the numbers above.
        prog += [_ins(_JGE_K, 0x40000000, jf=1), _ins(_RET_K, _RET_KILL_PROCESS)]
    for number, block in rules:
        # Blocks always return, so the accumulator still holds nr on the skip path.
        prog.append(_ins(_JEQ_K, number, jf=len(block)))
        prog += block
    prog.append(_ins(_RET_K, _RET_ALLOW))
    if any(jt > 255 or jf > 255 for _, jt, jf, _ in prog):
        raise AssertionError("BPF jump out of range")
    return prog


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
_libc = ctypes.CDLL(None, use_errno=True)


def _assemble(prog: list[tuple[int, int, int, int]]) -> bytearray:
    return bytearray(b"".join(struct.pack("<HBBI", *ins) for ins in prog))


class Template:
    """The filter assembled once per worker; a child only patches in its own pid.

    Work done in a forked child costs copy-on-write page faults, so the child does no
    assembly: it copies these bytes, writes its pid at the recorded offsets, installs.
    """

    def __init__(self, machine: str | None = None):
        # Two builds with different pids differ exactly at the pid-dependent constants.
        a, b = (_assemble(build_filter(pid, machine)) for pid in (0x1111111, 0x2222222))
        self.raw = a
        self.count = len(a) // 8
        self.slots = []
        for offset in range(4, len(a), 8):  # k is the 4-byte field at +4 of each instruction
            ka, kb = (struct.unpack_from("<I", x, offset)[0] for x in (a, b))
            if ka != kb:
                self.slots.append((offset, ka == (-0x1111111 & 0xFFFFFFFF)))

    def install(self, self_pid: int) -> None:
        """Set no_new_privs and install the filter on the calling (single-threaded) process."""
        raw = bytearray(self.raw)
        for offset, negative in self.slots:
            struct.pack_into("<I", raw, offset, (-self_pid if negative else self_pid) & 0xFFFFFFFF)
        buf = (ctypes.c_char * len(raw)).from_buffer(raw)
        fprog = _SockFprog(self.count, ctypes.cast(buf, ctypes.c_void_p))
        if _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
        if _libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")


def install(self_pid: int) -> None:
    """One-off install (tests, tools); workers keep a Template instead."""
    Template().install(self_pid)
