"""What runs inside an execution, after isolation: the solution, then its tests.

    (not run directly: `sandbox.executor` calls `run_harness` in the forked child)

The verdict never comes from the program's stdout or exit code alone. The harness writes
progress lines `<token><json>` to a private one-way socket (fd 3, which the run cannot read
back): `loaded` after the solution's top level, `test` after each test snippet, `done` with
the status at the end. The worker only
believes lines carrying the per-execution token, and only calls a run `passed` when every
test reported in, so `print("passed")`, `exit(0)` or `os._exit(0)` before the asserts
cannot pass. Everything the harness calls after the solution starts (exec, compile, the
exception classes, os.write, the JSON string escape) is a C function or a closure bound
before it starts, so monkeypatching `builtins`, `os`, `json`, `sys` or the harness module
itself does not reach the harness; and the tests run with the builtins as they were before
the program ran.

Tests share the program's module namespace, as in HumanEval's own harness: names the
program defines at top level (even ones shadowing builtins) and patches it makes to other
modules (`math.isclose = ...`) are the program's semantics, and the tests see them.

Limit: the solution runs in the harness's interpreter. A program that deliberately walks
its own stack frames or heap (sys._getframe, gc, ctypes) can find the token and forge a
report, or read the assert tests that follow it; that is reward hacking inside one address
space, which no in-process harness stops. Likewise an assert compares the program's own
objects: a returned value whose `__eq__` always says True passes `assert f(2) == 4`, and a
top-level `def abs(x): return 0` passes `assert abs(f(2) - 4) < 1e-6` (hiding such names
from the tests would fail a task whose function is named `max` or whose program uses a
module the tests import, as the benchmarks' own harnesses run program and tests as one). I/O
runs resist both: the expected output never enters the process (the worker holds only its
digest, `sandbox.protocol.seal`) and the worker compares the program's stdout, as text,
with it. Where a policy might learn such tricks, prefer I/O tests.
"""

from __future__ import annotations

import builtins
import io
import json.encoder
import os
import sys
import traceback
from typing import NoReturn

# Exit code of a harness whose report channel was taken away from it.
_REPORT_LOST = 3


def run_harness(request: dict, report_fd: int, token: str) -> NoReturn:
    """Execute request['code'] then its tests in this process, report, and _exit.

    Everything called once the solution runs is bound here first, as locals and closures:
    module globals (`sys.modules["sandbox.harness"]`) and Python-level library functions
    (json.dumps, whose `__code__` a program may replace) are out of its reach. The report is
    assembled from C functions only.
    """
    write, exit_, encode, escape = os.write, os._exit, str.encode, json.encoder.encode_basestring_ascii
    compile_, exec_, str_, type_, getattr_ = builtins.compile, builtins.exec, str, type, getattr
    base, assertion, system_exit, memory = BaseException, AssertionError, SystemExit, MemoryError
    compile_errors = (SyntaxError, ValueError, OverflowError, RecursionError, MemoryError)
    print_tb, sys_ = traceback.print_exception, sys

    def report(phase: str, status: str | None = None, passed: int | None = None, detail: str | None = None):
        fields = [f'"phase": {escape(phase)}']
        if status is not None:
            fields += [f'"status": {escape(status)}', f'"passed": {str_(passed)}', f'"detail": {escape(detail)}']
        elif passed is not None:
            fields.append(f'"passed": {str_(passed)}')
        try:
            write(report_fd, encode(token + "{" + ", ".join(fields) + "}\n"))
        except base:
            exit_(_REPORT_LOST)

    def print_exception(err) -> None:
        try:
            # Skip the harness's own frame: the traceback starts in the program.
            tb = err.__traceback__.tb_next if err.__traceback__ is not None else None
            print_tb(type_(err), err, tb, limit=8, file=sys_.__stderr__)
        except base:  # a broken traceback must not hide the verdict
            pass

    def flush() -> None:
        for name in ("stdout", "stderr", "__stdout__", "__stderr__"):
            try:
                getattr_(sys_, name).flush()
            except base:  # the program may have closed or replaced them
                pass

    def run(source, name, namespace, solution=False, has_tests=False) -> tuple[str | None, str]:
        """Compile and exec one piece of code; (None, "") or (status, detail)."""
        try:
            compiled = compile_(source, name, "exec")
        except compile_errors as err:
            print_exception(err)
            return "syntax_error", f"{name} does not compile: {type_(err).__name__}"
        try:
            exec_(compiled, namespace)
        except system_exit as err:
            if solution and not has_tests:
                ok = err.code is None or err.code == 0
                return (None, "") if ok else ("runtime_error", f"exit status {err.code!r}")
            return "failed", f"the program exited in {name}, before its tests completed"
        except assertion as err:
            print_exception(err)
            return ("runtime_error" if solution else "failed"), f"assertion failed in {name}"
        except memory as err:
            print_exception(err)
            return "memory_exceeded", f"MemoryError in {name}"
        except base as err:  # the program's own failure, whatever it raised
            print_exception(err)
            return "runtime_error", f"{type_(err).__name__} in {name}"
        return None, ""

    _fresh_stdio()
    tests = request.get("tests")
    pristine = dict(builtins.__dict__)
    namespace = {"__name__": "__main__" if tests is None else "solution", "__builtins__": builtins}
    status, detail = run(request["code"], "<solution>", namespace, solution=True, has_tests=tests is not None)
    passed = 0
    if status is None:
        # Tests look builtins up in an untouched copy: `builtins.abs = lambda x: 0` in the
        # program cannot make `assert abs(got - want) < 1e-6` pass.
        namespace["__builtins__"] = pristine
        report("loaded")
        for test in tests or ():
            outcome, why = run(test, f"<test {passed}>", namespace)
            if outcome is None:
                passed += 1
                report("test", passed=passed)
            elif status is None:
                status, detail = outcome, why
    flush()
    report("done", status or "passed", passed, detail)
    exit_(0)


def _fresh_stdio() -> None:
    """Text streams on fds 0-2 (the worker's own stdio objects are not the program's)."""
    def stream(fd: int, mode: str) -> io.TextIOWrapper:
        raw = io.FileIO(fd, mode, closefd=False)
        buffered = io.BufferedReader(raw) if mode == "r" else io.BufferedWriter(raw)
        return io.TextIOWrapper(buffered, encoding="utf-8", errors="backslashreplace",
                                line_buffering=fd == 2)
    sys.stdin = sys.__stdin__ = stream(0, "r")
    sys.stdout = sys.__stdout__ = stream(1, "w")
    sys.stderr = sys.__stderr__ = stream(2, "w")
