"""The compiled pipeline users upload: fresh, every parameter documented, cluster settings set."""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml
from kfp import compiler, components

from components.trainjob import TrainJobSpec
from pipelines.dultra_pipeline import (
    COMPILED,
    S3_SECRET,
    SANDBOX_CLIENT_LABEL,
    WORKSPACE_PVC,
    build_pipeline,
    compile_pipeline,
    dultra_pipeline,
)

ROOT = Path(__file__).resolve().parents[2]


def test_committed_yaml_is_up_to_date(tmp_path, monkeypatch):
    monkeypatch.delenv("DULTRA_TRAINER_IMAGE", raising=False)
    fresh = compile_pipeline(tmp_path / "p.yaml").read_text()
    assert fresh == COMPILED.read_text(), "stale: run `python -m pipelines.dultra_pipeline` and commit the YAML"


def _docs() -> list[dict]:
    return list(yaml.safe_load_all(COMPILED.read_text()))


def test_every_parameter_round_trips_with_default_and_description():
    loaded = components.load_component_from_file(str(COMPILED))
    inputs = loaded.component_spec.inputs
    signature = inspect.signature(dultra_pipeline.pipeline_func)
    assert set(inputs) == set(signature.parameters)
    kinds = {str: "STRING", int: "NUMBER_INTEGER", float: "NUMBER_DOUBLE"}
    raw = _docs()[0]["root"]["inputDefinitions"]["parameters"]
    required = [name for name, d in raw.items() if not d.get("isOptional")]
    assert required == ["s3_destination"]  # the UI asks for it: no default bucket is the user's
    for name, param in signature.parameters.items():
        assert inputs[name].default == (None if name in required else param.default), name
        assert raw[name]["parameterType"] == kinds[param.annotation], name
        assert len(raw[name].get("description", "")) > 15, f"{name} has no description in the UI"


def _platform() -> dict:
    return _docs()[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def test_every_step_mounts_the_workspace_and_only_publish_sees_s3_credentials():
    platform = _platform()
    executors = _docs()[0]["deploymentSpec"]["executors"]
    assert set(platform) == {name for name in executors if "gpu-limit" not in name}  # that one only prints a number
    for name, spec in platform.items():
        assert spec["pvcMount"] == [{"constant": WORKSPACE_PVC, "mountPath": "/workspace",
                                     "pvcNameParameter": {"runtimeValue": {"constant": WORKSPACE_PVC}}}], name
        has_secret = "secretAsEnv" in spec
        assert has_secret == ("publish" in name), name
    publish = next(v for k, v in platform.items() if "publish" in k)
    assert publish["secretAsEnv"][0]["secretName"] == S3_SECRET
    assert {e["envVar"] for e in publish["secretAsEnv"][0]["keyToEnv"]} == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}


def _container_tasks() -> dict[str, dict]:
    """Every container task of the compiled pipeline, however deep in conditions: name ->
    {task, executor, resources, platform, condition (the trigger of its branch, "" at top level)}."""
    spec = _docs()[0]
    components = spec["components"]
    dags = {"root": spec["root"]["dag"], **{n: c["dag"] for n, c in components.items() if "dag" in c}}
    conditions = {t["componentRef"]["name"]: t["triggerPolicy"]["condition"]
                  for dag in dags.values() for t in dag["tasks"].values() if "triggerPolicy" in t}
    executors, platform = spec["deploymentSpec"]["executors"], _platform()
    found = {}
    for owner, dag in dags.items():
        for name, task in dag["tasks"].items():
            executor = components[task["componentRef"]["name"]].get("executorLabel")
            if executor:
                found[name] = {"task": task, "executor": executor, "condition": conditions.get(owner, ""),
                               "resources": executors[executor]["container"]["resources"],
                               "platform": platform.get(executor, {})}
    return found


def _one(tasks: dict[str, dict], prefix: str, condition: str) -> dict:
    (found,) = [t for name, t in tasks.items() if name.startswith(prefix) and t["condition"] == condition]
    return found


NODES = "int(inputs.parameter_values['pipelinechannel--nodes']) > 1"
GPUS = "int(inputs.parameter_values['pipelinechannel--gpus_per_node']) > 0"


def _overlay_toleration() -> dict:
    patches = yaml.safe_load((ROOT / "manifests" / "overlays" / "gpu" / "runtime-gpu.yaml").read_text())
    (toleration,) = next(p["value"] for p in patches if p["path"].endswith("/tolerations"))
    return toleration


def test_multi_node_grpo_is_a_small_pod_without_gpus_and_one_node_grpo_trains_on_its_gpus():
    tasks = _container_tasks()
    assert sorted(n for n in tasks if n.startswith("train-grpo")) == ["train-grpo", "train-grpo-2"]
    watcher, trainer = _one(tasks, "train-grpo", NODES), _one(tasks, "train-grpo", f"!({NODES})")
    assert watcher["resources"] == {"cpuRequest": 1.0, "memoryRequest": 2.147483648, "resourceCpuRequest": "1",
                                    "resourceMemoryRequest": "2Gi"}  # no accelerator
    assert set(watcher["platform"]) == {"pvcMount", "podMetadata"}  # no GPU toleration, /dev/shm, nor sandbox label
    assert "labels" not in watcher["platform"]["podMetadata"]
    assert trainer["resources"]["resourceCpuRequest"] == "8" and trainer["resources"]["resourceMemoryRequest"] == "64Gi"
    assert trainer["resources"]["accelerator"]["resourceCount"] == "{{$.inputs.parameters['pipelinechannel--gpu-limit-2-Output']}}"
    key, value = SANDBOX_CLIENT_LABEL
    assert trainer["platform"]["podMetadata"]["labels"] == {key: value}
    for task in (watcher, trainer):  # a retry resumes from the checkpoint, or attaches to the TrainJob
        # Argo does not retry a deleted pod: the autoscaler must not remove its node.
        assert task["platform"]["podMetadata"]["annotations"] == {"cluster-autoscaler.kubernetes.io/safe-to-evict": "false"}
        retry = task["task"]["retryPolicy"]
        assert retry["maxRetryCount"] == 3 and retry["backoffFactor"] == 2.0
        # Argo retries only within backoffMaxDuration of the first start: every attempt must fit.
        window = int(retry["backoffMaxDuration"].removesuffix("s"))
        assert window >= (retry["maxRetryCount"] + 1) * TrainJobSpec.timeout_s
        assert task["task"]["inputs"]["parameters"]["gpus_per_node"]  # the channel reaches the branch


def test_evaluation_takes_one_gpu_or_none():
    tasks = _container_tasks()
    on_gpu, on_cpu = _one(tasks, "evaluate", GPUS), _one(tasks, "evaluate", f"!({GPUS})")
    assert on_gpu["resources"]["accelerator"] == {"count": "1", "resourceCount": "1", "resourceType": "nvidia.com/gpu",
                                                  "type": "nvidia.com/gpu"}
    assert "accelerator" not in on_cpu["resources"]
    for task in (on_gpu, on_cpu):
        assert task["task"]["inputs"]["parameters"]["checkpoint"]["componentInputParameter"].endswith("oneof-1")


def test_gpu_steps_tolerate_the_gpu_taint_and_get_a_memory_backed_shm():
    tasks = _container_tasks()
    gpu_steps = {n for n, t in tasks.items() if "accelerator" in t["resources"]}
    assert gpu_steps == {"warmstart-planner", "train-grpo-2", "evaluate"}
    warm = tasks["warmstart-planner"]["resources"]["accelerator"]
    assert warm["resourceCount"] == "{{$.inputs.parameters['pipelinechannel--gpu-limit-Output']}}"
    for name, task in tasks.items():
        platform = task["platform"]
        assert platform.get("tolerations") == ([_overlay_toleration()] if name in gpu_steps else None), name
        shm = platform.get("emptyDirMounts")
        assert shm == ([{"medium": "Memory", "mountPath": "/dev/shm", "sizeLimit": "16Gi", "volumeName": "dshm"}]
                       if name in gpu_steps else None), name


def test_gpu_limits_from_parameters_are_strings_as_the_kfp_driver_needs():
    """KFP's driver (backend/src/v2/driver, resolvePodSpecInputRuntimeParameter) reads a limit's
    parameter as a string; from the int gpus_per_node it would set no GPU limit at all."""
    spec, tasks = _docs()[0], _container_tasks()
    placeholders = {}
    for name, task in tasks.items():
        count = task["resources"].get("accelerator", {}).get("resourceCount", "")
        if found := re.fullmatch(r"\{\{\$\.inputs\.parameters\['(.+)'\]\}\}", count):
            source = task["task"]["inputs"]["parameters"][found[1]]
            if "taskOutputParameter" in source:  # another task's output: its declared type
                producer = tasks[source["taskOutputParameter"]["producerTask"]]["task"]["componentRef"]["name"]
                outputs = spec["components"][producer]["outputDefinitions"]["parameters"]
                placeholders[name] = outputs[source["taskOutputParameter"]["outputParameterKey"]]["parameterType"]
            else:  # a pipeline parameter
                pipeline_inputs = spec["root"]["inputDefinitions"]["parameters"]
                placeholders[name] = pipeline_inputs[found[1].removeprefix("pipelinechannel--")]["parameterType"]
    assert placeholders == {"warmstart-planner": "STRING", "train-grpo-2": "STRING"}
    for limit, user in (("gpu-limit", "warmstart-planner"), ("gpu-limit-2", "train-grpo-2")):  # in its user's branch
        assert tasks[limit]["task"]["inputs"]["parameters"]["gpus_per_node"]["componentInputParameter"].endswith(
            "gpus_per_node")
        assert limit in tasks[user]["task"]["dependentTasks"]  # the driver reads the limit when the user starts
    assert tasks["gpu-limit-2"]["condition"] == tasks["train-grpo-2"]["condition"] != ""


def test_caching_is_off_and_the_label_goes_to_steps_that_call_the_sandbox():
    key, value = SANDBOX_CLIENT_LABEL
    tasks = _container_tasks()
    labelled = {n for n, t in tasks.items() if t["platform"].get("podMetadata", {}).get("labels") == {key: value}}
    assert labelled == {"train-grpo-2", "evaluate", "evaluate-2"}
    assert all(not t["task"].get("cachingOptions", {}).get("enableCache") for t in tasks.values())


def test_steps_work_in_the_mounted_workspace_which_is_no_cluster_parameter(tmp_path):
    assert "workspace" not in inspect.signature(dultra_pipeline.pipeline_func).parameters
    for name, task in _container_tasks().items():
        given = task["task"]["inputs"]["parameters"].get("workspace")
        if name.startswith(("prepare", "pretrain", "warmstart", "train-grpo", "evaluate")):
            assert given == {"runtimeValue": {"constant": "/workspace"}}, name
    local = build_pipeline(str(tmp_path / "ws"))  # what pipelines/demo.py runs under kfp.local
    compiler.Compiler().compile(local, str(tmp_path / "local.yaml"))
    assert f"constant: {tmp_path / 'ws'}" in (tmp_path / "local.yaml").read_text()


def test_trainer_image_defaults_to_the_image_the_steps_run(tmp_path):
    image = "registry.example.com/dultra/dultra-trainer:9.9"
    out = tmp_path / "p.yaml"
    subprocess.run([sys.executable, "-m", "pipelines.dultra_pipeline", str(out)], cwd=ROOT, check=True,
                   env={**os.environ, "DULTRA_TRAINER_IMAGE": image}, capture_output=True)
    spec = next(yaml.safe_load_all(out.read_text()))
    assert spec["root"]["inputDefinitions"]["parameters"]["trainer_image"]["defaultValue"] == image
    assert {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()} == {image}
