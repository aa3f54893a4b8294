"""What runs inside an execution, after isolation: the solution, then its tests.

    (not run directly: `sandbox.executor` calls `run_harness` in the forked child)

The verdict never comes from the program's stdout or exit code alone. The harness writes
progress lines `<token><json>` to a private pipe: `loaded` after the solution's top level,
`test` after each test snippet, `done` with the status at the end. The worker only
believes lines carrying the per-execution token, so `print("passed")`, `exit(0)` or
`os._exit(0)` before the asserts cannot pass (no `done` line). The functions used to report
are bound before the solution runs, so monkeypatching `os`, `json` or `sys` does not reach
them.

Limit: the solution runs in the harness's interpreter. A program that deliberately walks
its own stack frames or heap (sys._getframe, gc, ctypes) can find the token and forge a
report; that is reward hacking inside one address space, which no in-process harness
stops. I/O runs (`expected_stdout`) are compared by the worker, outside the process, and
cannot be forged this way.
"""

from __future__ import annotations

import builtins
import io
import json
import os
import sys
import traceback
from typing import NoReturn

# Exit code of a harness whose report pipe was taken away from it.
_REPORT_LOST = 3


def run_harness(request: dict, report_fd: int, token: str) -> NoReturn:
    """Execute request['code'] then its tests in this process, report, and _exit."""
    write, dumps, exit_, encode = os.write, json.dumps, os._exit, str.encode
    prefix = token

    def report(**message) -> None:
        try:
            write(report_fd, encode(prefix + dumps(message) + "\n"))
        except OSError:
            exit_(_REPORT_LOST)

    _fresh_stdio()
    tests = request.get("tests")
    namespace = {"__name__": "__main__" if tests is None else "solution", "__builtins__": builtins}
    status, detail = _run_solution(request["code"], namespace, tests is not None)
    passed = 0
    if status is None:
        report(phase="loaded")
        for i, test in enumerate(tests or ()):
            outcome, why = _run_snippet(test, f"<test {i}>", namespace)
            if outcome is None:
                passed += 1
                report(phase="test", passed=passed)
            elif status is None:
                status, detail = outcome, why
    _flush()
    report(phase="done", status=status or "passed", passed=passed, detail=detail)
    exit_(0)


def _run_solution(code: str, namespace: dict, has_tests: bool) -> tuple[str | None, str]:
    try:
        compiled = compile(code, "<solution>", "exec")
    except (SyntaxError, ValueError, OverflowError, RecursionError, MemoryError) as err:
        _print_exception(err)
        return "syntax_error", f"the code does not compile: {type(err).__name__}"
    try:
        exec(compiled, namespace)
    except SystemExit as err:
        if has_tests:
            return "failed", "the program exited before its tests ran"
        if err.code not in (None, 0):
            return "runtime_error", f"exit status {err.code!r}"
    except BaseException as err:  # noqa: B036 - the program's own failure, whatever it is
        _print_exception(err)
        return _classify(err), f"{type(err).__name__} in the solution"
    return None, ""


def _run_snippet(source: str, name: str, namespace: dict) -> tuple[str | None, str]:
    try:
        compiled = compile(source, name, "exec")
    except (SyntaxError, ValueError, OverflowError, RecursionError, MemoryError) as err:
        _print_exception(err)
        return "syntax_error", f"{name} does not compile"
    try:
        exec(compiled, namespace)
    except AssertionError as err:
        _print_exception(err)
        return "failed", f"assertion failed in {name}"
    except SystemExit:
        return "failed", f"the program exited during {name}"
    except BaseException as err:  # noqa: B036
        _print_exception(err)
        return _classify(err), f"{type(err).__name__} in {name}"
    return None, ""


def _classify(err: BaseException) -> str:
    return "memory_exceeded" if isinstance(err, MemoryError) else "runtime_error"


def _print_exception(err: BaseException) -> None:
    try:
        # Skip the harness's own frame: the traceback starts in the program.
        tb = err.__traceback__.tb_next if err.__traceback__ is not None else None
        traceback.print_exception(type(err), err, tb, limit=8, file=sys.__stderr__)
    except BaseException:  # noqa: B036 - a broken traceback must not hide the verdict
        pass


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


def _flush() -> None:
    for name in ("stdout", "stderr", "__stdout__", "__stderr__"):
        try:
            getattr(sys, name).flush()
        except BaseException:  # noqa: B036 - the program may have closed or replaced them
            pass
