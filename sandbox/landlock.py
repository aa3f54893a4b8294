"""Landlock (Linux >= 5.13): unprivileged confinement of writes, TCP and signals.

    python -c "from sandbox.landlock import abi_version; print(abi_version())"

Applied to each execution after fork when the kernel offers it (ABI >= 1) and the
container's seccomp profile lets the syscalls through. Unlike namespaces it needs no
privilege, so it keeps working inside an unprivileged Kubernetes pod. What it confines,
by ABI version:

- ABI 1+: every write-like filesystem access (write, truncate, create, remove, rename,
  link, mknod) is denied outside the execution's working directory (and /dev/null).
- ABI 4+: TCP bind and connect are denied everywhere (seccomp already refuses sockets;
  this is a second layer).
- ABI 6+: signals and abstract unix sockets are scoped: the execution cannot signal or
  connect to the worker, the server or another execution.

It does NOT restrict reading files (file permissions and the non-root user do), nor UDP or
raw sockets (seccomp does), nor resource use (rlimits do).
"""

from __future__ import annotations

import ctypes
import os

_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1

_WRITE_FILE = 1 << 1
# Write-like rights per ABI: remove dir/file, make char/dir/reg/sock/fifo/block/sym,
# then REFER (ABI 2), TRUNCATE (ABI 3), IOCTL_DEV (ABI 5).
_FS_ABI1 = _WRITE_FILE | sum(1 << b for b in range(4, 13))
_FS_EXTRA = {2: 1 << 13, 3: 1 << 14, 5: 1 << 15}
_NET_BIND_CONNECT_TCP = (1 << 0) | (1 << 1)
_SCOPE_ABSTRACT_UNIX_AND_SIGNAL = (1 << 0) | (1 << 1)

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("fs", ctypes.c_uint64), ("net", ctypes.c_uint64), ("scoped", ctypes.c_uint64)]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def abi_version() -> int:
    """The kernel's Landlock ABI version, or 0 where Landlock is missing or blocked."""
    version = _libc.syscall(_SYS_CREATE_RULESET, None, ctypes.c_size_t(0), _CREATE_RULESET_VERSION)
    return max(int(version), 0)


def make_ruleset(writable_dir: str, abi: int) -> int:
    """A ruleset fd allowing writes only beneath writable_dir (and to /dev/null).

    Made once per worker; each execution only calls `restrict_self(fd)` after fork.
    """
    fs = _FS_ABI1 | sum(bit for v, bit in _FS_EXTRA.items() if abi >= v)
    attr = _RulesetAttr(fs, _NET_BIND_CONNECT_TCP if abi >= 4 else 0,
                        _SCOPE_ABSTRACT_UNIX_AND_SIGNAL if abi >= 6 else 0)
    size = 24 if abi >= 6 else 16 if abi >= 4 else 8
    ruleset = _libc.syscall(_SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), 0)
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset")
    try:
        _allow(ruleset, writable_dir, fs)
        _allow(ruleset, "/dev/null", _WRITE_FILE)
    except OSError:
        os.close(ruleset)
        raise
    return ruleset


def restrict_self(ruleset: int) -> None:
    """Confine the calling process and its future children (needs no_new_privs set first)."""
    if _libc.syscall(_SYS_RESTRICT_SELF, ctypes.c_int(ruleset), 0) != 0:
        raise OSError(ctypes.get_errno(), "landlock_restrict_self")


def _allow(ruleset: int, path: str, access: int) -> None:
    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    try:
        if os.path.isfile(path) or not os.path.isdir(path):
            access &= _WRITE_FILE | _FS_EXTRA[3]  # only file rights apply to a non-directory
        rule = _PathBeneath(access, fd)
        if _libc.syscall(_SYS_ADD_RULE, ctypes.c_int(ruleset), _RULE_PATH_BENEATH,
                         ctypes.byref(rule), 0) != 0:
            raise OSError(ctypes.get_errno(), f"landlock_add_rule({path})")
    finally:
        os.close(fd)
