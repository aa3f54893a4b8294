"""Code correctness: fraction of the task's unit tests the completion's program passes.

    reward = CodeReward(runner=sandbox_client)           # anything with run_tests(code, tests)
    reward(completions, tests=[ex.tests, ...], code_prefix=[ex.code_prefix, ...])

The program is `code_prefix` followed by the completion's program: its first closed
```python block, else what follows an unclosed fence, else its whole text
(dultra.data.answers.extract_code). An empty one: 0.0 without calling the runner. The runner
raising SandboxUnavailable: None, so the sample is dropped from its group instead of
being punished for an infrastructure failure; so is a test the runner refuses to run
(TestsRefused: a stdin over the service's size limit), with a warning. Identical programs
for the same tests (a GRPO group at low temperature repeats itself) are run once.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from dultra.data.answers import extract_code
from dultra.data.example import CodeTest
from dultra.rewards.runner import CodeRunner, SandboxUnavailable, TestsRefused

Tests = tuple[CodeTest, ...]


def _as_tests(tests: Sequence[CodeTest | Mapping[str, Any]]) -> Tests:
    """Tests as loaded (CodeTest) or as they come out of JSON (dicts)."""
    return tuple(t if isinstance(t, CodeTest) else CodeTest.from_dict(dict(t)) for t in tests)


def _fraction(runner: CodeRunner, program: str, tests: Tests) -> float | None:
    try:
        passed, total = runner.run_tests(program, tests)
    except SandboxUnavailable:
        return None
    except TestsRefused as err:
        warnings.warn(f"code reward: a sample cannot be scored: {err}", stacklevel=1)
        return None
    if total != len(tests) or not 0 <= passed <= total:
        raise ValueError(f"runner returned ({passed}, {total}) for {len(tests)} tests")
    return passed / total


@dataclass
class CodeReward:
    """Pass fraction in [0, 1] per completion, or None where the runner was unavailable."""

    runner: CodeRunner  # executes the tests (the sandbox client in production)
    max_workers: int = 8  # run_tests calls in flight at once (each waits on the sandbox)

    def __call__(
        self,
        completions: Sequence[str],
        tests: Sequence[Sequence[CodeTest | Mapping[str, Any]]],
        code_prefix: Sequence[str] | None = None,
        **_: object,
    ) -> list[float | None]:
        """completions: N texts; tests: N test lists; code_prefix: N strings or None.

        A completion whose task has no tests gets None (nothing to score it against).
        """
        n = len(completions)
        prefixes = list(code_prefix) if code_prefix is not None else [""] * n
        if len(tests) != n or len(prefixes) != n:
            raise ValueError(f"{n} completions but {len(tests)} test lists and {len(prefixes)} prefixes")
        out: list[float | None] = [None] * n
        jobs: dict[tuple[str, Tests], Future] = {}
        waiting: list[tuple[int, tuple[str, Tests]]] = []
        with ThreadPoolExecutor(max_workers=max(1, self.max_workers)) as pool:
            for i, (text, task_tests, prefix) in enumerate(zip(completions, tests, prefixes)):
                code = extract_code(text)
                if not task_tests:
                    continue
                if code is None:
                    out[i] = 0.0
                    continue
                key = (f"{prefix.rstrip()}\n\n{code}" if prefix.strip() else code, _as_tests(task_tests))
                if key not in jobs:
                    jobs[key] = pool.submit(_fraction, self.runner, *key)
                waiting.append((i, key))
            for i, key in waiting:
                out[i] = jobs[key].result()
        return out
