"""The compiled pipeline users upload: fresh, every parameter documented, cluster settings set."""

from __future__ import annotations

import inspect

import yaml
from kfp import components

from pipelines.dultra_pipeline import (
    COMPILED,
    S3_SECRET,
    SANDBOX_CLIENT_LABEL,
    WORKSPACE_PVC,
    compile_pipeline,
    dultra_pipeline,
)


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
    for name, param in signature.parameters.items():
        assert inputs[name].default == param.default, name
        assert raw[name]["parameterType"] == kinds[param.annotation], name
        assert len(raw[name].get("description", "")) > 15, f"{name} has no description in the UI"


def _platform() -> dict:
    return _docs()[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def test_every_step_mounts_the_workspace_and_only_publish_sees_s3_credentials():
    platform = _platform()
    executors = _docs()[0]["deploymentSpec"]["executors"]
    assert set(platform) == set(executors)
    for name, spec in platform.items():
        assert spec["pvcMount"] == [{"constant": WORKSPACE_PVC, "mountPath": "/workspace",
                                     "pvcNameParameter": {"runtimeValue": {"constant": WORKSPACE_PVC}}}], name
        has_secret = "secretAsEnv" in spec
        assert has_secret == ("publish" in name), name
    publish = next(v for k, v in platform.items() if "publish" in k)
    assert publish["secretAsEnv"][0]["secretName"] == S3_SECRET
    assert {e["envVar"] for e in publish["secretAsEnv"][0]["keyToEnv"]} == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}


def test_training_steps_take_gpus_from_parameters_and_grpo_retries():
    executors = _docs()[0]["deploymentSpec"]["executors"]
    for name in ("exec-warmstart-planner", "exec-train-grpo", "exec-evaluate"):
        resources = executors[name]["container"]["resources"]
        assert resources["accelerator"]["resourceType"] == "nvidia.com/gpu"
        assert "gpus_per_node" in str(resources["accelerator"]["resourceCount"])
    tasks = _docs()[0]["root"]["dag"]["tasks"]
    retry = tasks["train-grpo"]["retryPolicy"]
    assert retry["maxRetryCount"] == 3 and retry["backoffFactor"] == 2.0
    labels = {k: v.get("podMetadata", {}).get("labels", {}) for k, v in _platform().items()}
    key, value = SANDBOX_CLIENT_LABEL
    assert labels["exec-train-grpo"] == {key: value} and labels["exec-evaluate"] == {key: value}
    assert all(not tasks[t].get("cachingOptions", {}).get("enableCache") for t in tasks)
