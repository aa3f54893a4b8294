"""The contract between the code reward and whatever executes code (the sandbox client).

    class MyRunner:
        def run_tests(self, code: str, tests: Sequence[CodeTest]) -> tuple[int, int]: ...

`run_tests` executes `code` against each test (semantics in `dultra.data.CodeTest`: an
"assert" test runs `code + "\\n" + test.source` as one script, an "io" test feeds stdin
and compares stdout) and returns `(passed, total)` with `total == len(tests)`.
A test that fails, raises, times out or exceeds its memory limit is a failed test: the
model's fault, counted in `total`. Only when the runner itself cannot judge (service
down, overloaded, HTTP error) does it raise `SandboxUnavailable`; the code reward then
returns None for that completion, and GRPO drops it from its group (dultra.md section 5).
`TestsRefused` (tests it will never run, such as a stdin over its size limit) is also None,
with a warning: one oversized test must not stop a training run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from dultra.data.example import CodeTest


class SandboxUnavailable(RuntimeError):
    """The runner could not execute the tests (infrastructure, not the program's fault)."""


class TestsRefused(ValueError):
    """The runner refused the tests as given (a stdin or a test over the service's size
    limits): the task's data is at fault, not the program, so the sample cannot be scored."""


@runtime_checkable
class CodeRunner(Protocol):
    def run_tests(self, code: str, tests: Sequence[CodeTest]) -> tuple[int, int]:
        """(number of tests passed, number of tests); raises SandboxUnavailable."""
        ...
