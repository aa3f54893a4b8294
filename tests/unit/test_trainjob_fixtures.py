"""The API responses the stand-in replays are valid objects of their kinds (tests/fixtures/k8s).

    .venv/bin/python -m pytest -q tests/unit/test_trainjob_fixtures.py
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from kubeflow_trainer_api import models
from kubernetes.client import V1Status

from components.trainjob_logs import NODE0_SELECTOR, pod_state
from tests.k8s_standin import FIXTURES, fixture, pod

PODS = sorted(FIXTURES.glob("pod-*.json"))


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("trainjob-status-*.json")), ids=lambda p: p.stem)
def test_trainjob_statuses_read_whole_with_the_trainer_api_model(path):
    data = json.loads(path.read_text())
    status = models.TrainerV1alpha1TrainJobStatus.from_dict(data)
    assert json.loads(status.model_dump_json(by_alias=True, exclude_none=True)) == data


def test_pods_validate_strictly(tmp_path):
    tool = Path(sys.executable).parent / "kubernetes-validate"
    result = subprocess.run([str(tool), "--strict", *map(str, PODS)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("passed") == len(PODS) == 6


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("status-*.json")), ids=lambda p: p.stem)
def test_error_statuses_have_only_status_fields(path):
    data = json.loads(path.read_text())
    assert set(data) <= set(V1Status.attribute_map.values()) and data["kind"] == "Status"
    assert data["code"] in (403, 404, 409, 422, 503) and data["message"]


def test_node0_selector_matches_the_fixture_pods():
    wanted = dict(term.split("=") for term in NODE0_SELECTOR.format(name="dultra-train-abc").split(","))
    labels = pod("pod-running", "p", "dultra-train-abc")["metadata"]["labels"]
    assert all(labels[k] == v for k, v in wanted.items())


@pytest.mark.parametrize("name, expected", [
    ("pod-unschedulable", ("Pending", False, "Unschedulable")),
    ("pod-container-creating", ("Pending", False, "ContainerCreating")),
    ("pod-image-pull-backoff", ("Pending", False, "ImagePullBackOff")),
    ("pod-running", ("Running", True, "")),
    ("pod-failed", ("Failed", True, "Error")),
    ("pod-succeeded", ("Succeeded", True, "Completed")),
])
def test_pod_state_reads_each_fixture(name, expected):
    from kubernetes.client import ApiClient

    obj = ApiClient()._ApiClient__deserialize(fixture(name), "V1Pod")
    state = pod_state(obj)
    assert (state.phase, state.started, state.reason) == expected


@pytest.mark.parametrize("ns", [1_767_607_200_000_000_000, 1_767_607_200_500_000_000, 1_767_607_200_123_456_789])
def test_kubelet_timestamps_parse_to_the_nanosecond(ns):
    from components.trainjob_logs import parse_timestamp
    from tests.k8s_standin import kubelet_time

    assert parse_timestamp(kubelet_time(ns)) == ns
    assert parse_timestamp("2026-01-05T10:00:00+01:00") == 1_767_603_600_000_000_000
    assert parse_timestamp("2026-01-05T11:00:00.5+02:00") == 1_767_603_600_500_000_000
    assert parse_timestamp("2026-01-05T05:30:00.123456789-03:30") == 1_767_603_600_123_456_789
    assert parse_timestamp("step") is None and parse_timestamp("") is None
