"""run_trainjob against a Kubernetes API stand-in on loopback: the exact requests, idempotent
create/attach, node-0 log streaming, failures, timeouts, cancellation, and the RBAC it needs.

    .venv/bin/python -m pytest -q tests/integration/test_trainjob_standin.py
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import yaml
from kubeflow_trainer_api import models

from components.trainjob import (
    TrainJobConflict,
    TrainJobFailed,
    TrainJobSpec,
    TrainJobTimeout,
    build_trainjob,
    job_state,
    run_trainjob,
)
from components.trainjob_logs import JOB_SELECTOR, NODE0_SELECTOR
from tests.k8s_standin import Phase, PodLog, StandIn, fixture, pod, rbac_attributes
from tests.manifest_helpers import build

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CREATED, RUNNING = fixture("trainjob-status-created"), fixture("trainjob-status-running")
COMPLETE, FAILED = fixture("trainjob-status-complete"), fixture("trainjob-status-failed")
JOBS = "/apis/trainer.kubeflow.org/v1alpha1/namespaces/dultra/trainjobs"


def fast_spec(**kw) -> TrainJobSpec:
    base = dict(image="ghcr.io/dultra/dultra-trainer:0.1.0", run_id="run-1", namespace="dultra", nodes=2,
                gpus_per_node=8, args=["train", "--config", "configs/tiny.yaml", "--resume", "true"],
                poll_s=0.02, log_idle_s=2.0, timeout_s=30.0)
    return TrainJobSpec(**{**base, **kw})


def run(api: StandIn, spec: TrainJobSpec) -> tuple[dict, list[str], list[str]]:
    """(final job, node-0 lines, [trainjob] status lines)."""
    out = io.StringIO()
    job = run_trainjob(spec, api.client(), out=out)
    lines = out.getvalue().splitlines()
    return job, [x for x in lines if not x.startswith("[trainjob]")], [x for x in lines if x.startswith("[trainjob]")]


def happy(spec: TrainJobSpec) -> tuple[list[Phase], dict[str, PodLog]]:
    job = spec.job_name()
    logs = {"p1": PodLog(["dultra-accelerate: node 0 of 2, 8 processes", "train: config {...}",
                          "step 1 reward 0.50", "step 2 reward 0.71"])}
    return [Phase(None, [], until=2),
            Phase(CREATED, [pod("pod-unschedulable", "p1", job)], until=3),
            Phase(CREATED, [pod("pod-container-creating", "p1", job)], until=1),
            Phase(RUNNING, [pod("pod-running", "p1", job)], until="logs:p1"),
            Phase(COMPLETE, [pod("pod-succeeded", "p1", job)])], logs


def test_creates_once_streams_node0_and_returns_the_completed_job():
    spec = fast_spec(stuck_s=0.01)  # Unschedulable is not a stuck reason: it may wait for capacity
    phases, logs = happy(spec)
    with StandIn(phases, logs) as api:
        job, node, status = run(api, spec)
    assert job_state(job)[0] == "Complete"
    assert node == logs["p1"].lines
    (post,) = api.calls("POST")
    assert post.path == JOBS and post.body == build_trainjob(spec, "dultra")
    assert models.TrainerV1alpha1TrainJob.from_dict(post.body).to_dict() == post.body
    assert not api.calls("DELETE")
    selectors = {NODE0_SELECTOR.format(name=spec.job_name()), JOB_SELECTOR.format(name=spec.job_name())}
    assert {r.query["labelSelector"] for r in api.calls("GET", "/pods")} == selectors  # node 0; all (2 nodes)
    first, *rest = api.calls("GET", "/log")
    assert first.path.endswith("/pods/p1/log")
    assert {k: v.lower() for k, v in first.query.items()} == {"container": "node", "follow": "true", "timestamps": "true"}
    assert rest and all("sinceSeconds" in r.query for r in rest)  # the final drain replays little
    said = "\n".join(status)
    assert f"created TrainJob dultra/{spec.job_name()}" in said
    assert "Unschedulable: 0/4 nodes are available: 4 Insufficient nvidia.com/gpu" in said
    assert "ContainerCreating" in said and "complete" in said
    # Unschedulable past stuck_s is said once, and waited on (an autoscaler may add nodes).
    (unschedulable,) = [s for s in status if "no node for node 0" in s]
    assert unschedulable.startswith(f"[trainjob] TrainJob dultra/{spec.job_name()}: no node for node 0 after ")
    assert "still waiting, up to the 30s timeout" in unschedulable
    assert unschedulable.endswith(f"to give up: kubectl -n dultra delete trainjob {spec.job_name()}")


def test_a_retried_step_attaches_to_the_running_job():
    spec = fast_spec()
    job = spec.job_name()
    logs = {"p1": PodLog(["step 7", "step 8"])}
    phases = [Phase(RUNNING, [pod("pod-running", "p1", job)], until="logs:p1"),
              Phase(COMPLETE, [pod("pod-succeeded", "p1", job)])]
    with StandIn(phases, logs, existing=build_trainjob(spec, "dultra")) as api:
        final, node, status = run(api, spec)
    assert job_state(final)[0] == "Complete" and node == ["step 7", "step 8"]
    assert [(r.method, r.path) for r in api.requests[:2]] == [("POST", JOBS), ("GET", f"{JOBS}/{job}")]
    assert len(api.calls("POST")) == 1 and not api.calls("DELETE")
    assert any(f"attached to existing TrainJob dultra/{job} (Running)" in s for s in status)


def test_attaching_to_a_finished_job_returns_with_its_logs():
    spec = fast_spec()
    logs = {"p1": PodLog(["step 99", "train: saved final"], ended=True)}
    with StandIn([Phase(COMPLETE, [pod("pod-succeeded", "p1", spec.job_name())])], logs,
                 existing=build_trainjob(spec, "dultra")) as api:
        final, node, _ = run(api, spec)
    assert job_state(final)[0] == "Complete" and node == ["step 99", "train: saved final"]
    assert [r.method for r in api.requests if "/log" not in r.path and "/pods" not in r.path] == ["POST", "GET", "GET"]
    assert {k: v.lower() for k, v in api.calls("GET", "/log")[0].query.items()}["follow"] == "false"


def test_attaching_to_a_failed_job_raises_without_touching_it():
    spec = fast_spec()
    with StandIn([Phase(FAILED, [])], existing=build_trainjob(spec, "dultra")) as api:
        with pytest.raises(TrainJobFailed, match=r"already failed \(ReachedMaxRestarts: jobset failed due to "
                                                 r"reaching max number of restarts\)") as err:
            run(api, spec)
    assert "\n" not in str(err.value)
    assert [r.method for r in api.requests] == ["POST", "GET"]


def test_recreate_failed_replaces_the_failed_job_and_follows_the_new_one():
    spec = fast_spec(recreate_failed=True)
    job = spec.job_name()
    logs = {"p2": PodLog(["train: resumed from checkpoint-50 at step 50", "step 51"])}
    phases = [Phase(FAILED, [], until=1), Phase(RUNNING, [pod("pod-running", "p2", job)], until="logs:p2"),
              Phase(COMPLETE, [pod("pod-succeeded", "p2", job)])]
    with StandIn(phases, logs, existing=build_trainjob(spec, "dultra")) as api:
        final, node, _ = run(api, spec)
    assert job_state(final)[0] == "Complete" and node == logs["p2"].lines
    calls = [(r.method, r.path.removeprefix(JOBS)) for r in api.requests][:6]
    assert calls == [("POST", ""), ("GET", f"/{job}"), ("DELETE", f"/{job}"), ("GET", f"/{job}"),
                     ("GET", f"/{job}"), ("POST", "")]
    assert api.calls("DELETE")[0].query == {"propagationPolicy": "Foreground"}
    assert api.calls("POST")[1].body == build_trainjob(spec, "dultra")


def test_a_job_from_a_different_spec_is_a_conflict():
    spec = fast_spec()
    other = build_trainjob(fast_spec(args=["train", "--config", "configs/other.yaml"]), "dultra")
    with StandIn([Phase(RUNNING, [])], existing=other) as api:
        with pytest.raises(TrainJobConflict, match="exists with a different spec; delete it"):
            run(api, spec)
    assert [r.method for r in api.requests] == ["POST", "GET"]


def test_a_failing_job_raises_after_printing_node0s_last_lines():
    spec = fast_spec()
    job = spec.job_name()
    logs = {"p1": PodLog(["step 1", "Traceback (most recent call last):", "RuntimeError: NCCL timeout"])}
    phases = [Phase(RUNNING, [pod("pod-running", "p1", job)], until="logs:p1"),
              Phase(FAILED, [pod("pod-failed", "p1", job)])]
    out = io.StringIO()
    with StandIn(phases, logs) as api:
        with pytest.raises(TrainJobFailed) as err:
            run_trainjob(spec, api.client(), out=out)
    assert str(err.value) == (f"TrainJob dultra/{job} failed: ReachedMaxRestarts: "
                              "jobset failed due to reaching max number of restarts")
    assert [x for x in out.getvalue().splitlines() if not x.startswith("[trainjob]")] == logs["p1"].lines
    assert not api.calls("DELETE")


def test_a_restarted_node0_pod_is_followed_and_each_line_printed_once():
    spec = fast_spec()
    job = spec.job_name()
    logs = {"a": PodLog(["a1", "a2", "a3"]), "b": PodLog(["b1 resumed", "b2"])}
    phases = [Phase(RUNNING, [pod("pod-running", "a", job)], until="logs:a"),
              Phase(RUNNING, [pod("pod-failed", "a", job),
                              pod("pod-running", "b", job, created="2026-01-05T10:41:00Z")], until="logs:b"),
              Phase(COMPLETE, [pod("pod-failed", "a", job), pod("pod-succeeded", "b", job, created="2026-01-05T10:41:00Z")])]
    with StandIn(phases, logs) as api:
        _, node, _ = run(api, spec)
    assert node == ["a1", "a2", "a3", "b1 resumed", "b2"]


def test_a_dropped_stream_resumes_without_repeating_lines():
    spec = fast_spec()
    job = spec.job_name()
    logs = {"p1": PodLog([f"step {i}" for i in range(8)], drop_after=3)}
    phases = [Phase(RUNNING, [pod("pod-running", "p1", job)], until="logs:p1"),
              Phase(COMPLETE, [pod("pod-succeeded", "p1", job)])]
    with StandIn(phases, logs) as api:
        _, node, _ = run(api, spec)
    assert node == logs["p1"].lines
    assert "sinceSeconds" not in api.calls("GET", "/log")[0].query
    assert "sinceSeconds" in api.calls("GET", "/log")[1].query


@pytest.mark.parametrize("lines, delay", [
    (["loading 8B weights", "step 1"], 0.8),  # a silent stream is reopened
    ([f"step {i}" for i in range(120)], 0.01),  # a busy one is cut, and resumes without losing or repeating lines
])
def test_a_stream_is_reopened_after_log_idle_s(lines, delay):
    spec = fast_spec(log_idle_s=0.3)
    job = spec.job_name()
    logs = {"p1": PodLog(lines, delay=delay)}
    phases = [Phase(RUNNING, [pod("pod-running", "p1", job)], until="logs:p1"),
              Phase(COMPLETE, [pod("pod-succeeded", "p1", job)])]
    with StandIn(phases, logs) as api:
        _, node, _ = run(api, spec)
    assert node == logs["p1"].lines
    assert len(api.calls("GET", "/log")) >= 3


def test_a_job_that_keeps_logging_still_times_out():
    """The follow stream never went idle, so the deadline was never looked at."""
    spec = fast_spec(timeout_s=0.5, log_idle_s=5)
    job = spec.job_name()
    logs = {"p1": PodLog([f"step {i}" for i in range(400)], delay=0.01)}
    out = io.StringIO()
    with StandIn([Phase(RUNNING, [pod("pod-running", "p1", job)])], logs) as api:
        with pytest.raises(TrainJobTimeout, match=r"deleted: not finished after 0s \(Running\)"):
            run_trainjob(spec, api.client(), out=out)
    assert len(api.calls("DELETE")) == 1
    assert 0 < out.getvalue().count("step ") < 300  # given up on while node 0 still logged (4 s of lines)


def test_timeout_deletes_the_job():
    spec = fast_spec(timeout_s=0.5)
    with StandIn([Phase(CREATED, [pod("pod-container-creating", "p1", spec.job_name())])]) as api:
        with pytest.raises(TrainJobTimeout, match=r"deleted: not finished after 0s \(Pending\)"):
            run(api, spec)
    (delete,) = api.calls("DELETE")
    assert delete.path == f"{JOBS}/{spec.job_name()}" and delete.query == {"propagationPolicy": "Foreground"}


def test_a_node0_stuck_on_its_image_fails_and_deletes_the_job():
    spec = fast_spec(stuck_s=0.3)
    with StandIn([Phase(CREATED, [pod("pod-image-pull-backoff", "p1", spec.job_name())])]) as api:
        with pytest.raises(TrainJobFailed, match=r"ImagePullBackOff: Back-off pulling image") as err:
            run(api, spec)
    assert "\n" not in str(err.value)
    assert len(api.calls("DELETE")) == 1


def test_a_node_without_a_machine_is_named_while_node_0_waits_for_it():
    spec = fast_spec(stuck_s=0.05)
    job = spec.job_name()
    logs = {"p1": PodLog(["dultra-accelerate: node 0 of 2, 8 processes"]), "p2": PodLog(["node 1 up"])}
    node0 = pod("pod-running", "p1", job)
    phases = [Phase(RUNNING, [node0, pod("pod-unschedulable", "p2", job, node=1)], until=8),
              Phase(RUNNING, [node0, pod("pod-running", "p2", job, node=1)], until=2),
              Phase(COMPLETE, [pod("pod-succeeded", "p1", job), pod("pod-succeeded", "p2", job, node=1)])]
    with StandIn(phases, logs) as api:
        _, node, status = run(api, spec)
    assert node == logs["p1"].lines and not api.calls("GET", "/pods/p2/log")  # node 0's log only
    said = "\n".join(status)
    assert f"TrainJob dultra/{job}: Running; node-0 pod p1: Running; node-1 pod p2: Pending (Unschedulable: 0/4 " \
           "nodes are available: 4 Insufficient nvidia.com/gpu" in said
    (unschedulable,) = [s for s in status if "no node for node 1 after" in s]
    assert "(node-1 pod p2: Pending (Unschedulable" in unschedulable and not api.calls("DELETE")
    assert status[-2].endswith("Running; node-0 pod p1: Running")  # node 1 got a machine


def test_a_node_stuck_on_its_image_fails_and_deletes_the_job():
    spec = fast_spec(stuck_s=0.3, nodes=3)
    job = spec.job_name()
    with StandIn([Phase(CREATED, [pod("pod-running", "p1", job), pod("pod-image-pull-backoff", "p2", job, node=1),
                                  pod("pod-image-pull-backoff", "p3", job, node=2)])],
                 logs={"p1": PodLog(["waiting for the other nodes"])}) as api:
        with pytest.raises(TrainJobFailed, match=r"deleted: node-1 pod p2: Pending \(ImagePullBackOff: Back-off"):
            run(api, spec)
    assert len(api.calls("DELETE")) == 1


@pytest.mark.parametrize("status, message", [
    ("status-forbidden", 'cannot create TrainJob dultra/{job}: 403 Forbidden: trainjobs.trainer.kubeflow.org is '
                         'forbidden: User "system:serviceaccount:dultra:default-editor" cannot create resource'),
    ("status-runtime-not-found", 'cannot create TrainJob dultra/{job}: 422 Unprocessable Entity: admission webhook'),
])
def test_a_refused_create_is_one_clear_line(status, message):
    spec = fast_spec()
    with StandIn([Phase(None, [])], create_error=status) as api:
        with pytest.raises(TrainJobFailed) as err:
            run(api, spec)
    text = str(err.value)
    assert text.startswith(message.format(job=spec.job_name())) and "\n" not in text
    assert ("Role dultra-trainjobs" in text) == (status == "status-forbidden")
    if status == "status-runtime-not-found":
        assert text.endswith('clusterTrainingRuntime.trainer.kubeflow.org "dultra-accelerate" not found')


def test_an_api_outage_is_waited_out():
    spec = fast_spec()
    job = spec.job_name()
    logs = {"p1": PodLog(["step 1", "step 2"])}
    phases = [Phase(RUNNING, [pod("pod-running", "p1", job)], until=1),
              Phase(RUNNING, [], until=4, error="status-unavailable"),
              Phase(RUNNING, [pod("pod-running", "p1", job)], until="logs:p1"),
              Phase(COMPLETE, [pod("pod-succeeded", "p1", job)])]
    with StandIn(phases, logs) as api:
        final, node, status = run(api, spec)
    assert job_state(final)[0] == "Complete" and node == ["step 1", "step 2"]
    assert sum("Kubernetes API error, retrying: cannot poll: 503 Service Unavailable" in s for s in status) == 1


def test_a_long_api_outage_fails_the_step():
    spec = fast_spec(api_outage_s=0.3)
    phases = [Phase(RUNNING, [], until=1), Phase(RUNNING, [], error="status-unavailable")]
    with StandIn(phases, existing=build_trainjob(spec, "dultra")) as api:
        with pytest.raises(TrainJobFailed, match=rf"cannot follow TrainJob dultra/{spec.job_name()} for 0s: "
                                                 r"503 Service Unavailable: the server is currently unable"):
            run(api, spec)


def test_a_forbidden_pod_list_fails_in_one_line_naming_the_role():
    spec = fast_spec()
    with StandIn([Phase(RUNNING, [])], pods_error="status-forbidden-pods") as api:
        with pytest.raises(TrainJobFailed) as err:
            run(api, spec)
    assert str(err.value) == (f"cannot follow TrainJob dultra/{spec.job_name()}: 403 Forbidden: pods is forbidden: "
                              'User "system:serviceaccount:dultra:dultra-pipeline" cannot list resource "pods" in '
                              'API group "" in the namespace "dultra" (the run\'s service account needs the Role '
                              "dultra-trainjobs)")


CHILD = """
import json, sys
from kubernetes import client
from components.trainjob import TrainJobSpec, run_trainjob
run_trainjob(TrainJobSpec(**json.loads(sys.argv[2])), client.ApiClient(client.Configuration(host=sys.argv[1])))
"""


def test_sigterm_leaves_the_job_running_and_the_retried_step_attaches_to_it():
    """An evicted or preempted step pod gets SIGTERM as a cancelled one does: the job must survive."""
    spec = fast_spec()
    job = spec.job_name()
    logs = {"p1": PodLog([f"step {i}" for i in range(80)], delay=0.05)}
    phases = [Phase(RUNNING, [pod("pod-running", "p1", job)], until="logs:p1"),
              Phase(COMPLETE, [pod("pod-succeeded", "p1", job)])]
    with StandIn(phases, logs) as api:
        proc = subprocess.Popen([sys.executable, "-c", CHILD, api.url, json.dumps(asdict(spec))], cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"})
        shown = []
        for line in proc.stdout:  # the step follows the node's log: stop it once it has shown some
            shown.append(line)
            if "step 2" in line:
                break
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
        stdout = "".join(shown) + stdout
        assert proc.returncode == 1, stderr
        assert stderr.strip().splitlines()[-1] == (
            f"components.trainjob.TrainJobCancelled: step stopped; TrainJob dultra/{job} keeps running (a retry "
            f"of the step attaches to it); to stop it: kubectl -n dultra delete trainjob {job}")
        assert "step 2" in stdout and f"stopped (received SIGTERM): TrainJob dultra/{job} keeps running" in stdout
        assert not api.calls("DELETE") and job in api.store
        final, node, status = run(api, spec)  # the retried step
    assert job_state(final)[0] == "Complete" and node[-1] == "step 79"
    assert any(f"attached to existing TrainJob dultra/{job} (Running)" in s for s in status)
    assert len(api.calls("POST")) == 2 and not api.calls("DELETE")


def role_rules(name: str) -> set[tuple[str, str, str]]:
    docs = build(REPO / "manifests" / "base")
    (role,) = [d for d in docs if d["kind"] == "Role" and d["metadata"]["name"] == name]
    return {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
            for v in rule["verbs"]}


def test_the_role_allows_every_request_and_grants_nothing_unused():
    used: set[tuple[str, str, str]] = set()
    spec = fast_spec()
    with StandIn(*happy(spec)) as api:
        run(api, spec)
    used |= {rbac_attributes(r) for r in api.requests}
    spec = fast_spec(recreate_failed=True)
    with StandIn([Phase(FAILED, [], until=1), Phase(COMPLETE, [])], existing=build_trainjob(spec, "dultra")) as api:
        run(api, spec)
    used |= {rbac_attributes(r) for r in api.requests}
    assert used == role_rules("dultra-trainjobs")


def test_the_pipelines_multi_node_stage_goes_through_a_trainjob(tmp_path, monkeypatch):
    """components.steps.run_stage with nodes > 1, its default client from a kubeconfig."""
    from components.steps import Launcher, run_stage

    launcher = Launcher(nodes=2, gpus_per_node=8, accelerate_config="configs/accelerate/hsdp.yaml",
                        trainjob={"image": "registry.example.com/dultra-trainer:1", "run_id": "run-42",
                                  "namespace": "dultra", "poll_s": 0.02})
    spec = fast_spec(run_id="run-42")
    job = spec.job_name()
    logs = {"p1": PodLog(["step 1"])}
    phases = [Phase(RUNNING, [pod("pod-running", "p1", job)], until="logs:p1"),
              Phase(COMPLETE, [pod("pod-succeeded", "p1", job)])]
    with StandIn(phases, logs) as api:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "standin",
            "clusters": [{"name": "standin", "cluster": {"server": api.url}}],
            "contexts": [{"name": "standin", "context": {"cluster": "standin", "user": "u"}}],
            "users": [{"name": "u", "user": {"token": "t"}}]}))
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        artifact = tmp_path / "artifact.jsonl"  # a KFP artifact: only the launching pod has it
        artifact.write_text('{"id": "x"}\n')
        final = run_stage("train", "configs/tiny.yaml", {"steps": 3, "data": str(artifact)},
                          str(tmp_path / "work"), launcher)
    assert final == tmp_path / "work" / "train" / "final"
    (post,) = api.calls("POST")
    trainer = post.body["spec"]["trainer"]
    assert post.body["metadata"]["name"] == job and trainer["image"] == "registry.example.com/dultra-trainer:1"
    assert trainer["args"][0] == "train" and trainer["args"][2].endswith("configs/tiny.yaml")
    shared = tmp_path / "work" / "train" / "data.jsonl"
    assert trainer["args"][3:] == ["--steps", "3", "--data", str(shared), "--output-dir",
                                   str(tmp_path / "work" / "train"), "--resume", "true"]
    assert shared.read_text() == artifact.read_text()
    assert (trainer["numNodes"], trainer["numProcPerNode"]) == (2, 8)
    assert {"name": "DULTRA_ACCELERATE_CONFIG", "value": "configs/accelerate/hsdp.yaml"} in trainer["env"]
