"""Request checks shared by the server and the in-process client."""

from __future__ import annotations

import os

import pytest

from sandbox import STATUSES
from sandbox.config import SandboxConfig
from sandbox.protocol import (
    RequestError,
    cap_output,
    normalize,
    output_digest,
    result,
    seal,
    total_of,
)

CONFIG = SandboxConfig(max_code_bytes=1000, max_request_bytes=2500)


def test_defaults_are_filled_in():
    request = normalize({"code": "print(1)"}, CONFIG)
    assert request == {"code": "print(1)", "tests": None, "stdin": None, "expected_stdout": None,
                       "timeout_s": CONFIG.default_timeout_s, "memory_mb": CONFIG.default_memory_mb}
    assert total_of(request) == 0
    assert total_of(normalize({"code": "", "tests": ["a", "b"]}, CONFIG)) == 2
    assert total_of(normalize({"code": "", "stdin": "1", "expected_stdout": "1"}, CONFIG)) == 1


@pytest.mark.parametrize(("raw", "message"), [
    ([], "JSON object"),
    ({}, "code is required"),
    ({"code": 1}, "code must be a string"),
    ({"code": "", "language": "c"}, "language must be 'python'"),
    ({"code": "", "extra": 1}, "unknown field(s): extra"),
    ({"code": "", "tests": "assert 1"}, "tests must be a list of strings"),
    ({"code": "", "tests": [1]}, "tests must be a list of strings"),
    ({"code": "", "tests": [], "stdin": ""}, "either tests or stdin"),
    ({"code": "", "timeout_s": 0}, "timeout_s must be between"),
    ({"code": "", "timeout_s": 1e9}, "timeout_s must be between"),
    ({"code": "", "timeout_s": True}, "timeout_s must be a number"),
    ({"code": "", "memory_mb": "512"}, "memory_mb must be a number"),
    ({"code": "x" * 1001}, "code is larger than 1000 bytes"),
    ({"code": "", "tests": ["é" * 501]}, "tests is larger than 1000 bytes"),
    ({"code": "", "stdin": "\ud800"}, "stdin is not valid Unicode text"),
    ({"code": "x" * 1000, "tests": ["y" * 1000, "z" * 501]}, "the request's text is larger than 2500 bytes"),
    ({"code": "", "memory_mb": CONFIG.max_memory_mb + 1}, "memory_mb must be between"),  # it bounds RLIMIT_AS
    ({"code": "", "memory_mb": 15}, "memory_mb must be between"),
    ({"code": "", "stdin": "", "expected_stdout": "x" * 1001}, "expected_stdout is larger than 1000 bytes"),
    ({"code": "x" * 1000, "stdin": "y" * 1000, "expected_stdout": "z" * 501},
     "the request's text is larger than 2500 bytes"),
])
def test_bad_requests_name_the_problem(raw, message):
    with pytest.raises(RequestError, match=message.replace("(", r"\(").replace(")", r"\)")):
        normalize(raw, CONFIG)


def test_batch_output_is_capped_in_order_keeping_every_status():
    results = [result("passed", stdout="a" * 60), result("failed", stderr="b" * 30, detail="AssertionError"),
               result("passed", stdout="c" * 50), result("passed", stdout="d" * 10)]
    capped = cap_output(results, 100)
    assert [r["status"] for r in capped] == ["passed", "failed", "passed", "passed"]
    assert [len(r["stdout"]) + len(r["stderr"]) for r in capped] == [60, 30, 0, 10]
    assert capped[2]["detail"] == "output dropped: the batch's output is over 100 bytes"
    assert capped[1]["detail"] == "AssertionError"
    assert cap_output(results, 1000) == results


def test_a_sealed_io_request_holds_only_the_digest_of_its_answer():
    request = normalize({"code": "print(1)", "stdin": "", "expected_stdout": "1  \n2\n\n"}, SandboxConfig())
    sealed = seal(request)
    assert "expected_stdout" not in sealed and "1  \n2" not in str(sealed) and total_of(sealed) == 1
    assert seal(sealed) == sealed and seal(normalize({"code": "x"}, SandboxConfig()))["tests"] is None
    # Equal up to trailing whitespace per line and trailing blank lines, and nothing more.
    assert sealed["expected_sha256"] == output_digest("1\n2") == output_digest("1 \t\n2 \n\n\n")
    assert len({output_digest(t) for t in ("1\n2", "1\n 2", "12", "1\n\n2", "1\r2x")}) == 5


def test_statuses_are_a_closed_set():
    assert len(STATUSES) == 8
    for status in STATUSES:
        assert result(status)["status"] == status
    with pytest.raises(AssertionError):
        result("crashed")


def test_config_reads_environment_overrides():
    config = SandboxConfig().with_env({"SANDBOX_WORKERS": "3", "SANDBOX_DEFAULT_TIMEOUT_S": "2.5",
                                       "SANDBOX_ISOLATION": "process"})
    assert (config.workers, config.default_timeout_s, config.isolation) == (3, 2.5, "process")
    idle, hard = config.wall_limits(1.0)
    assert idle == 1.0 * config.wall_factor + 1.0 and hard == 4 * idle


@pytest.mark.parametrize("bad", [{"workers": -1}, {"isolation": "chroot"}, {"port": 70000},
                                 {"default_timeout_s": 100.0}, {"max_output_bytes": 0}])
def test_config_rejects_nonsense(bad):
    with pytest.raises(ValueError):
        SandboxConfig(**bad)


def test_default_workers_follow_the_cgroup_cpu_quota(tmp_path):
    from sandbox.config import usable_cpus

    cpus = len(os.sched_getaffinity(0))
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("max 100000\n")
    assert usable_cpus(str(cpu_max)) == cpus
    cpu_max.write_text("150000 100000\n")  # 1.5 CPUs of quota: 2 workers' worth of CPUs
    assert usable_cpus(str(cpu_max)) == min(cpus, 2)
    assert usable_cpus(str(tmp_path / "missing")) == cpus
