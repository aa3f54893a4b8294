"""The TrainJob object components/trainjob.py sends: exact, valid for the Trainer's API, strict.

    .venv/bin/python -m pytest -q tests/unit/test_trainjob_spec.py
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from kubeflow_trainer_api import models

from components.trainjob import (
    MAX_NAME,
    NAME_RE,
    SecretEnv,
    TrainJobFailed,
    TrainJobSpec,
    build_trainjob,
    current_namespace,
    job_state,
    spec_hash,
    trainjob_name,
)
from tests.k8s_standin import fixture

ARGS = ["train", "--config", "configs/llada-8b-math.yaml", "--output-dir", "/workspace/runs/r1/train",
        "--resume", "true"]


def gpu_spec(**kw) -> TrainJobSpec:
    base = dict(image="ghcr.io/dultra/dultra-trainer:0.1.0", args=ARGS, nodes=4, gpus_per_node=8,
                run_id="3c6a1f0e-8d2b-4e57-9f1a-2b3c4d5e6f70", env={"NCCL_DEBUG": "WARN"},
                secret_env=[SecretEnv("HF_TOKEN", "dultra-hf", "token")], cpu="32", memory="512Gi")
    return TrainJobSpec(**{**base, **kw})


def roundtrip(model, obj: dict) -> dict:
    """The object as the trainer-api model reads it: unknown or misspelt fields drop out."""
    return model.from_dict(obj).to_dict()


def test_gpu_trainjob_is_exactly_this():
    body = build_trainjob(gpu_spec(), "dultra")
    name = trainjob_name("3c6a1f0e-8d2b-4e57-9f1a-2b3c4d5e6f70", "train")
    assert body == {
        "apiVersion": "trainer.kubeflow.org/v1alpha1",
        "kind": "TrainJob",
        "metadata": {
            "name": name,
            "namespace": "dultra",
            "labels": {"app.kubernetes.io/part-of": "dultra", "app.kubernetes.io/managed-by": "dultra-pipeline",
                       "dultra.dev/kfp-run-id": "3c6a1f0e-8d2b-4e57-9f1a-2b3c4d5e6f70"},
            "annotations": {"dultra.dev/spec-sha256": spec_hash(body["spec"]),
                            "dultra.dev/kfp-run-id": "3c6a1f0e-8d2b-4e57-9f1a-2b3c4d5e6f70"},
        },
        "spec": {
            "runtimeRef": {"apiGroup": "trainer.kubeflow.org", "kind": "ClusterTrainingRuntime",
                           "name": "dultra-accelerate"},
            "trainer": {
                "image": "ghcr.io/dultra/dultra-trainer:0.1.0",
                "args": ARGS,
                "numNodes": 4,
                "numProcPerNode": 8,
                "env": [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "dultra-hf", "key": "token"}}},
                        {"name": "NCCL_DEBUG", "value": "WARN"}],
                "resourcesPerNode": {"limits": {"nvidia.com/gpu": "8"},
                                     "requests": {"cpu": "32", "memory": "512Gi"}},
            },
        },
    }


@pytest.mark.parametrize("spec", [gpu_spec(), gpu_spec(gpus_per_node=0, cpu="", memory="", secret_env=[]),
                                  gpu_spec(accelerate_config="configs/accelerate/fsdp.yaml", run_id="",
                                           name="my-job")],
                         ids=["gpu", "cpu", "fsdp-named"])
def test_the_trainer_api_models_read_every_field(spec):
    body = build_trainjob(spec, "dultra")
    assert roundtrip(models.TrainerV1alpha1TrainJob, body) == body
    assert len(body["metadata"]["name"]) <= MAX_NAME and NAME_RE.match(body["metadata"]["name"])


def test_the_model_round_trip_catches_a_misspelt_field():
    body = build_trainjob(gpu_spec(), "dultra")
    body["spec"]["trainer"]["numNode"] = body["spec"]["trainer"].pop("numNodes")
    assert roundtrip(models.TrainerV1alpha1TrainJob, body) != body


def test_the_node_container_fields_validate_strictly_as_a_pod(tmp_path):
    trainer = build_trainjob(gpu_spec(), "dultra")["spec"]["trainer"]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "node"},
           "spec": {"containers": [{"name": "node", "image": trainer["image"], "args": trainer["args"],
                                    "env": trainer["env"], "resources": trainer["resourcesPerNode"]}]}}
    path = tmp_path / "pod.yaml"
    path.write_text(yaml.safe_dump(pod))
    tool = Path(sys.executable).parent / "kubernetes-validate"
    result = subprocess.run([str(tool), "--strict", str(path)], capture_output=True, text=True)
    assert result.returncode == 0 and "passed" in result.stdout, result.stdout + result.stderr


def test_cpu_nodes_run_one_gloo_process_each():
    trainer = build_trainjob(gpu_spec(gpus_per_node=0, cpu="", memory="", env={}, secret_env=[]), "ns")["spec"]["trainer"]
    assert trainer["numProcPerNode"] == 1
    assert trainer["env"] == [{"name": "ACCELERATE_USE_CPU", "value": "true"}]
    # GPU count 0, or a GPU runtime's limit would stay (merged); no CPU or memory: the runtime's stay
    assert trainer["resourcesPerNode"] == {"limits": {"nvidia.com/gpu": "0"}}


def test_accelerate_config_reaches_the_runtime_script():
    env = build_trainjob(gpu_spec(accelerate_config="configs/accelerate/fsdp.yaml"), "ns")["spec"]["trainer"]["env"]
    assert {"name": "DULTRA_ACCELERATE_CONFIG", "value": "configs/accelerate/fsdp.yaml"} in env


def test_names_are_stable_per_run_and_stage_and_differ_otherwise():
    a = trainjob_name("run-1", "train")
    assert a == trainjob_name("run-1", "train") == gpu_spec(run_id="run-1").job_name()
    assert len({a, trainjob_name("run-2", "train"), trainjob_name("run-1", "warmstart")}) == 3
    assert a.startswith("dultra-train-") and NAME_RE.match(a) and len(a) <= MAX_NAME
    assert NAME_RE.match(trainjob_name("R", "Weird_Stage.Name!" * 5))


def test_spec_hash_follows_the_spec_not_the_metadata():
    one, two = build_trainjob(gpu_spec(), "a"), build_trainjob(gpu_spec(), "b")
    assert one["metadata"]["annotations"] == two["metadata"]["annotations"]
    other = build_trainjob(gpu_spec(args=[*ARGS, "--steps", "10"]), "a")
    assert other["metadata"]["annotations"]["dultra.dev/spec-sha256"] != one["metadata"]["annotations"]["dultra.dev/spec-sha256"]


@pytest.mark.parametrize("change, message", [
    (dict(run_id="", name=""), "needs a name or a run_id"),
    (dict(name="Has_Upper"), "DNS label"),
    (dict(name="x" * (MAX_NAME + 1)), "DNS label"),
    (dict(nodes=0), "nodes >= 1"),
    (dict(args=[]), "args is empty"),
    (dict(image=""), "image is empty"),
    (dict(env={"PET_NNODES": "3"}), "PET_NNODES is set by the Trainer"),
    (dict(env={"HF_TOKEN": "x"}), "set twice: HF_TOKEN"),
    (dict(gpus_per_node=0, env={"ACCELERATE_USE_CPU": "false"}), "set twice: ACCELERATE_USE_CPU"),
    (dict(env={"BAD-NAME": "x"}), "invalid environment variable name"),
    (dict(poll_s=0), "must be positive"),
    (dict(cpu="lots"), "TrainJobSpec.cpu 'lots' is not a positive Kubernetes quantity"),
    (dict(memory="512 GB"), "TrainJobSpec.memory '512 GB' is not a positive Kubernetes quantity"),
])
def test_bad_specs_fail_with_one_clear_line(change, message):
    with pytest.raises(ValueError, match=message) as err:
        build_trainjob(gpu_spec(**change), "ns")
    assert "\n" not in str(err.value)


def test_namespace_comes_from_the_service_account_file(tmp_path):
    path = tmp_path / "namespace"
    path.write_text("kubeflow-user-example-com\n")
    assert current_namespace(str(path)) == "kubeflow-user-example-com"
    with pytest.raises(TrainJobFailed, match="set TrainJobSpec.namespace"):
        current_namespace(str(tmp_path / "missing"))


@pytest.mark.parametrize("status, state", [("created", ("Pending", "", "")), ("running", ("Running", "", "")),
                                           ("suspended", ("Suspended", "Suspended", "TrainJob is suspended")),
                                           ("complete", ("Complete", "AllJobsCompleted", "jobset completed successfully")),
                                           ("failed", ("Failed", "ReachedMaxRestarts",
                                                       "jobset failed due to reaching max number of restarts"))])
def test_job_state_reads_the_trainers_conditions(status, state):
    assert job_state({"status": fixture(f"trainjob-status-{status}")}) == state
    assert job_state({}) == ("Pending", "", "")


def test_no_credentials_is_one_clear_line(tmp_path, monkeypatch):
    from components.trainjob import default_api_client

    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    with pytest.raises(TrainJobFailed, match="no Kubernetes credentials: not in a pod, and no usable kubeconfig") as err:
        default_api_client()
    assert "\n" not in str(err.value)
