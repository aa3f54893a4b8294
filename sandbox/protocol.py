"""The request and result shapes of /v1/run, checked without a web framework.

    python -c "from sandbox.protocol import normalize; from sandbox.config import SandboxConfig; print(normalize({'code': 'print(1)', 'expected_stdout': '1'}, SandboxConfig()))"

A request is either a test run (`tests`: snippets executed after the code, e.g. asserts or
`check(candidate)`; each counts as passed when it runs without an exception, and a
SystemExit, whoever raises it, fails it: use `unittest.main(exit=False)`), an I/O run
(`stdin` fed, `expected_stdout` compared up to trailing whitespace), or a plain run
(neither: passes when the program ends without error). The same checks serve the HTTP
server and the in-process client, so both reject bad input with the same message.
"""

from __future__ import annotations

import hashlib
from typing import Any

from sandbox import STATUSES
from sandbox.config import SandboxConfig

_FIELDS = {"language", "code", "tests", "stdin", "expected_stdout", "timeout_s", "memory_mb"}


class RequestError(ValueError):
    """A request the service refuses as malformed (HTTP 422); the caller must fix it."""


def normalize(raw: Any, config: SandboxConfig) -> dict:
    """Check one request and fill in defaults; raises RequestError naming the bad field."""
    if not isinstance(raw, dict):
        raise RequestError("a request must be a JSON object")
    unknown = set(raw) - _FIELDS
    if unknown:
        raise RequestError(f"unknown field(s): {', '.join(sorted(unknown))}")
    if raw.get("language", "python") != "python":
        raise RequestError(f"language must be 'python', got {raw.get('language')!r}")
    code = _text(raw, "code", required=True)
    tests = raw.get("tests")
    if tests is not None:
        if not isinstance(tests, list) or not all(isinstance(t, str) for t in tests):
            raise RequestError("tests must be a list of strings")
    stdin = _text(raw, "stdin")
    expected = _text(raw, "expected_stdout")
    if tests is not None and (stdin is not None or expected is not None):
        raise RequestError("give either tests or stdin/expected_stdout, not both")
    texts = [("code", code), *(("tests", t) for t in tests or ()), ("stdin", stdin), ("expected_stdout", expected)]
    total = sum(_size(name, value, config) for name, value in texts if value is not None)
    if total > config.max_request_bytes:
        raise RequestError(f"the request's text is larger than {config.max_request_bytes} bytes")
    timeout_s = _number(raw, "timeout_s", config.default_timeout_s, 0.001, config.max_timeout_s)
    memory_mb = int(_number(raw, "memory_mb", config.default_memory_mb, 16, config.max_memory_mb))
    return {
        "code": code,
        "tests": tests,
        "stdin": stdin,
        "expected_stdout": expected,
        "timeout_s": float(timeout_s),
        "memory_mb": memory_mb,
    }


def _text(raw: dict, name: str, required: bool = False) -> str | None:
    value = raw.get(name)
    if value is None:
        if required:
            raise RequestError(f"{name} is required")
        return None
    if not isinstance(value, str):
        raise RequestError(f"{name} must be a string")
    return value


def _size(name: str, value: str, config: SandboxConfig) -> int:
    """Bytes of UTF-8 of one string of a request, checked against max_code_bytes."""
    if len(value) > config.max_code_bytes:  # before encoding a huge string
        raise RequestError(f"{name} is larger than {config.max_code_bytes} bytes")
    try:
        size = len(value.encode())
    except UnicodeEncodeError:  # JSON can carry lone surrogates; programs get UTF-8 bytes
        raise RequestError(f"{name} is not valid Unicode text (it has a lone surrogate)") from None
    if size > config.max_code_bytes:
        raise RequestError(f"{name} is larger than {config.max_code_bytes} bytes")
    return size


def _number(raw: dict, name: str, default: float, low: float, high: float) -> float:
    value = raw.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RequestError(f"{name} must be a number")
    if not low <= value <= high:
        raise RequestError(f"{name} must be between {low} and {high}, got {value}")
    return value


def result(status: str, *, passed: int = 0, total: int = 0, stdout: str = "", stderr: str = "",
           duration_ms: float = 0.0, detail: str = "") -> dict:
    """A result object; `detail` says in a few words why a run did not pass."""
    if status not in STATUSES:
        raise AssertionError(f"unknown status {status!r}")
    return {
        "status": status,
        "passed": passed,
        "total": total,
        "stdout": stdout,
        "stderr": stderr,
        "duration_ms": round(duration_ms, 3),
        "detail": detail,
    }


def sandbox_error(detail: str, total: int = 0) -> dict:
    """The result of an infrastructure failure: never counted as the program's fault."""
    return result("sandbox_error", total=total, detail=detail)


class OutputBudget:
    """Stdout plus stderr that one batch's results may carry, spent as results are taken:
    once it is spent, a result loses its output (status, counts and detail stay)."""

    def __init__(self, limit: int):
        self.limit, self.used = limit, 0

    def take(self, r: dict) -> dict:
        size = len(r["stdout"]) + len(r["stderr"])
        if self.used + size > self.limit:
            detail = f"{r['detail']}; " if r["detail"] else ""
            return {**r, "stdout": "", "stderr": "",
                    "detail": f"{detail}output dropped: the batch's output is over {self.limit} bytes"}
        self.used += size
        return r


def cap_output(results: list[dict], limit: int) -> list[dict]:
    """Results in order, each keeping its output while the total stays within limit bytes."""
    budget = OutputBudget(limit)
    return [budget.take(r) for r in results]


def total_of(request: dict) -> int:
    """How many tests a request counts: its test snippets, 1 for an I/O run, 0 otherwise."""
    if request.get("tests") is not None:
        return len(request["tests"])
    return 1 if request.get("expected_stdout") is not None or request.get("expected_sha256") else 0


def seal(request: dict) -> dict:
    """The request as a worker gets it: `expected_stdout` replaced by `expected_sha256`, the
    digest of its normalized form, so the program cannot read the answer from its process."""
    expected = request.get("expected_stdout")
    sealed = {k: v for k, v in request.items() if k != "expected_stdout"}
    if expected is not None:
        sealed["expected_sha256"] = output_digest(expected)
    return sealed


def output_digest(text: str) -> str:
    """sha256 of stdout up to trailing whitespace on each line and trailing blank lines."""
    lines = [line.rstrip() for line in text.rstrip().splitlines()]
    return hashlib.sha256("\n".join(lines).encode("utf-8", "surrogatepass")).hexdigest()
