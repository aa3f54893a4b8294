"""manifests/: every kustomization builds, validates strictly offline, and agrees with the code
that uses it (components/trainjob.py, the pipeline's names, the sandbox's NetworkPolicy).

    .venv/bin/python -m pytest -q tests/unit/test_manifests.py
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml
from kubeflow_trainer_api import models

from components import trainjob
from components.trainjob_logs import CONTAINER
from tests.manifest_helpers import build, kustomize, validate

REPO = Path(__file__).resolve().parents[2]
M = REPO / "manifests"
BUILDS = {"base": M / "base", "runtime": M / "runtime", "dev": M / "overlays" / "dev", "gpu": M / "overlays" / "gpu"}


def find(docs: list[dict], kind: str, name: str | None = None) -> dict:
    (doc,) = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    return doc


def runtime_pod(docs: list[dict]) -> dict:
    rjob = find(docs, "ClusterTrainingRuntime")["spec"]["template"]["spec"]["replicatedJobs"][0]
    return rjob["template"]["spec"]["template"]


@pytest.mark.parametrize("name", BUILDS)
def test_builds_and_validates_strictly_offline(name, tmp_path):
    docs = build(BUILDS[name])
    core = [d for d in docs if not d["apiVersion"].startswith("trainer.kubeflow.org/")]
    result = validate(core, tmp_path / "core.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("passed") == len(core) and "WARN" not in result.stdout + result.stderr


@pytest.mark.parametrize("name", ["runtime", "dev", "gpu"])
def test_the_runtime_reads_whole_with_the_trainer_api_and_its_job_validates(name, tmp_path):
    runtime = find(build(BUILDS[name]), "ClusterTrainingRuntime")
    assert models.TrainerV1alpha1ClusterTrainingRuntime.from_dict(runtime).to_dict() == runtime
    assert "namespace" not in runtime["metadata"]  # cluster-scoped, whichever overlay applies it
    rjob = runtime["spec"]["template"]["spec"]["replicatedJobs"][0]
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "node"}, "spec": rjob["template"]["spec"]}
    result = validate([job], tmp_path / "job.yaml")
    assert result.returncode == 0 and "passed" in result.stdout, result.stdout + result.stderr


def test_the_runtime_is_what_trainjob_and_the_torch_plugin_expect():
    docs = build(BUILDS["runtime"])
    runtime = find(docs, "ClusterTrainingRuntime")
    assert runtime["metadata"]["name"] == trainjob.RUNTIME
    assert runtime["metadata"]["labels"]["trainer.kubeflow.org/framework"] == "torch"
    assert "torch" in runtime["spec"]["mlPolicy"]
    rjob = runtime["spec"]["template"]["spec"]["replicatedJobs"][0]
    assert rjob["name"] == "node"
    assert rjob["template"]["metadata"]["labels"]["trainer.kubeflow.org/trainjob-ancestor-step"] == "trainer"
    assert rjob["template"]["spec"]["backoffLimit"] == 0  # one failed rank fails the group at once
    pod = rjob["template"]["spec"]["template"]
    (node,) = pod["spec"]["containers"]
    assert node["name"] == CONTAINER
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in node["volumeMounts"]}
    assert volumes[mounts[trainjob.WORKSPACE_MOUNT]]["persistentVolumeClaim"]["claimName"] == trainjob.WORKSPACE_PVC
    shm = volumes[mounts["/dev/shm"]]["emptyDir"]
    assert shm["medium"] == "Memory" and shm["sizeLimit"]
    env = {e["name"]: e.get("value") for e in node["env"]}
    assert (REPO / env["DULTRA_ACCELERATE_CONFIG"]).is_file()
    script = node["command"][2]
    assert node["command"][:2] == ["bash", "-c"] and node["command"][3] == "dultra-accelerate"
    for needed in ("accelerate launch", '--config_file "${DULTRA_ACCELERATE_CONFIG}"', "${PET_NNODES}",
                   "${PET_NODE_RANK}", "${PET_MASTER_ADDR}", "${PET_MASTER_PORT}", '-m dultra.cli "$@"'):
        assert needed in script


def test_trainer_pods_meet_restricted_pod_security_and_skip_the_mesh():
    pod = runtime_pod(build(BUILDS["gpu"]))
    spec, meta = pod["spec"], pod["metadata"]
    assert meta["annotations"]["sidecar.istio.io/inject"] == "false"
    assert spec["automountServiceAccountToken"] is False and spec["restartPolicy"] == "Never"
    sc = spec["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["seccompProfile"]["type"] == "RuntimeDefault" and sc["runAsUser"] > 0
    for container in spec["containers"]:
        csc = container["securityContext"]
        assert csc["allowPrivilegeEscalation"] is False and csc["capabilities"] == {"drop": ["ALL"]}
    assert not any(k in spec for k in ("hostNetwork", "hostPID", "hostIPC"))
    assert all(set(v) & {"persistentVolumeClaim", "emptyDir"} for v in spec["volumes"])  # no hostPath


def test_trainer_pods_are_admitted_by_the_sandbox_network_policy():
    policy = find(build(M / "sandbox"), "NetworkPolicy")["spec"]
    (source,) = [s for s in policy["ingress"][0]["from"] if "podSelector" in s]
    labels = runtime_pod(build(BUILDS["runtime"]))["metadata"]["labels"]
    assert source["namespaceSelector"] == {}  # from any namespace: TrainJobs run in the pipeline's
    assert all(labels.get(k) == v for k, v in source["podSelector"]["matchLabels"].items())
    assert dict([trainjob.SANDBOX_CLIENT_LABEL]) == source["podSelector"]["matchLabels"]


def test_base_namespace_account_volume_and_least_privilege_rbac():
    docs = build(BUILDS["base"])
    ns = find(docs, "Namespace")
    assert ns["metadata"]["name"] == "dultra"
    labels = ns["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "baseline"
    assert labels["pod-security.kubernetes.io/audit"] == "restricted"
    assert "pod-security.kubernetes.io/warn" not in labels  # it would warn on every Kubeflow Pipelines pod
    assert all(d["metadata"]["namespace"] == "dultra" for d in docs if d["kind"] != "Namespace")
    # A profile namespace keeps its `part-of: kubeflow-profile`, which Kubeflow's network policies admit.
    assert "app.kubernetes.io/part-of" not in labels
    assert all(d["metadata"]["labels"]["app.kubernetes.io/part-of"] == "dultra" for d in docs if d["kind"] != "Namespace")
    find(docs, "ServiceAccount", "dultra-pipeline")
    pvc = find(docs, "PersistentVolumeClaim", trainjob.WORKSPACE_PVC)
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]  # nodes of a TrainJob are different machines
    subjects = {d["metadata"]["name"]: [s["name"] for s in d["subjects"]] for d in docs if d["kind"] == "RoleBinding"}
    assert subjects == {"dultra-trainjobs": ["dultra-pipeline", "default-editor"], "dultra-kfp-run": ["dultra-pipeline"]}
    for binding in (d for d in docs if d["kind"] == "RoleBinding"):
        assert all(s["kind"] == "ServiceAccount" and s["namespace"] == "dultra" for s in binding["subjects"])
        find(docs, "Role", binding["roleRef"]["name"])
    kfp_run = {(g, r, v) for rule in find(docs, "Role", "dultra-kfp-run")["rules"] for g in rule["apiGroups"]
               for r in rule["resources"] for v in rule["verbs"]}
    assert kfp_run == {("argoproj.io", "workflowtaskresults", "create"), ("argoproj.io", "workflowtaskresults", "patch"),
                       ("", "configmaps", "get"), ("", "secrets", "get"), ("", "pods", "get")}
    for role in (d for d in docs if d["kind"] == "Role"):
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], role["metadata"]["name"]
            if set(rule["resources"]) & {"secrets", "configmaps"}:
                assert rule["resourceNames"] and rule["verbs"] == ["get"]  # named objects only


def test_names_agree_with_the_pipeline():
    from pipelines import dultra_pipeline as p

    assert (p.WORKSPACE_PVC, p.WORKSPACE_MOUNT) == (trainjob.WORKSPACE_PVC, trainjob.WORKSPACE_MOUNT)
    assert p.SANDBOX_CLIENT_LABEL == trainjob.SANDBOX_CLIENT_LABEL
    secret = yaml.safe_load((M / "examples" / "s3-secret.yaml").read_text())
    assert secret["metadata"]["name"] == p.S3_SECRET
    makefile_image = re.search(r"^TRAINER_IMAGE \?= (\S+)$", (REPO / "Makefile").read_text(), re.M).group(1)
    (node,) = runtime_pod(build(BUILDS["runtime"]))["spec"]["containers"]
    assert node["image"] == makefile_image


def test_the_example_secret_holds_placeholders_and_is_never_applied(tmp_path):
    secret = yaml.safe_load((M / "examples" / "s3-secret.yaml").read_text())
    result = validate([secret], tmp_path / "secret.yaml")
    assert result.returncode == 0 and "passed" in result.stdout, result.stdout + result.stderr
    assert set(secret["stringData"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    assert all(v.startswith("REPLACE-WITH-") for v in secret["stringData"].values())
    for name in BUILDS:  # re-applying an overlay must not overwrite the real Secret
        assert not [d for d in build(BUILDS[name]) if d["kind"] == "Secret"], name


def test_dev_overlay_is_small_and_runs_the_sandbox_on_runc():
    docs = build(BUILDS["dev"])
    pvc = find(docs, "PersistentVolumeClaim")
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"] and pvc["spec"]["resources"]["requests"]["storage"] == "50Gi"
    deployment = find(docs, "Deployment", "dultra-sandbox")
    assert "runtimeClassName" not in deployment["spec"]["template"]["spec"]
    assert not [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    assert find(docs, "HorizontalPodAutoscaler")["spec"]["minReplicas"] == 1
    (node,) = runtime_pod(docs)["spec"]["containers"]
    assert "nvidia.com/gpu" not in str(node["resources"])


def test_gpu_overlay_uses_gvisor_gpus_and_registry_images():
    docs = build(BUILDS["gpu"])
    pvc = find(docs, "PersistentVolumeClaim")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"] and pvc["spec"]["resources"]["requests"]["storage"] == "2Ti"
    sandbox = find(docs, "Deployment", "dultra-sandbox")["spec"]["template"]["spec"]
    assert sandbox["runtimeClassName"] == find(docs, "RuntimeClass")["metadata"]["name"] == "gvisor"
    pod = runtime_pod(docs)["spec"]
    (node,) = pod["containers"]
    assert node["resources"]["limits"]["nvidia.com/gpu"] == "8"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert {v["name"]: v for v in pod["volumes"]}["dshm"]["emptyDir"]["sizeLimit"] == "64Gi"
    images = [c["image"] for c in sandbox["containers"] + pod["containers"]]
    assert len(images) == 2 and all("/" in i.split(":")[0] and ":" in i for i in images)  # from a registry


def _example_job_pod(name: str, tmp_path) -> dict:
    """The pod spec of examples/NAME, a valid Job that mounts the workspace volume."""
    job = yaml.safe_load((M / "examples" / name).read_text())
    result = validate([job], tmp_path / "job.yaml")
    assert result.returncode == 0 and "passed" in result.stdout, result.stdout + result.stderr
    pod = job["spec"]["template"]["spec"]
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == trainjob.WORKSPACE_PVC
    return pod


def test_the_fetch_models_example_writes_to_the_workspace(tmp_path):
    pod = _example_job_pod("fetch-models-job.yaml", tmp_path)
    assert pod["securityContext"]["fsGroup"] == runtime_pod(build(BUILDS["runtime"]))["spec"]["securityContext"]["fsGroup"]
    script = pod["containers"][0]["command"][-1]
    assert 'local_dir="/workspace/models/LLaDA-8B-Instruct"' in script
    config = yaml.safe_load((REPO / "configs" / "llada-8b-math.yaml").read_text())
    assert config["warmstart"]["model"] == "/workspace/models/LLaDA-8B-Instruct"  # where the configs look


def test_the_workspace_owner_example_hands_the_volume_to_the_steps_user(tmp_path):
    pod = _example_job_pod("workspace-owner-job.yaml", tmp_path)
    (container,) = pod["containers"]
    assert container["volumeMounts"] == [{"name": "workspace", "mountPath": trainjob.WORKSPACE_MOUNT}]
    runtime = runtime_pod(build(BUILDS["runtime"]))["spec"]["securityContext"]
    user = f"{runtime['runAsUser']}:{runtime['runAsGroup']}"
    assert user == "1000:1000" and container["command"][-1].startswith(f"set -e\nchown {user} /workspace\n")
    assert re.search(r"^USER 1000$", (REPO / "docker" / "Dockerfile").read_text(), re.M)  # what the steps run as
    # Root, but only what chown/chmod need: within the namespace's baseline Pod Security.
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN", "FOWNER"]}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert "kubectl apply -f manifests/examples/workspace-owner-job.yaml" in (REPO / "README.md").read_text()


def test_the_readme_standalone_recipe_moves_every_namespaced_piece(tmp_path):
    readme = (REPO / "README.md").read_text()
    command = re.search(r"`(kubectl kustomize manifests/base \| sed '([^']+)' \| kubectl apply -f -)`", readme)
    assert command, "README lost the standalone Pipelines recipe"
    rendered = subprocess.run(["sed", command.group(2)], input=kustomize(BUILDS["base"]),
                              check=True, capture_output=True, text=True).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    namespaced = [d for d in docs if d["kind"] != "Namespace"]
    assert namespaced and all(d["metadata"]["namespace"] == "kubeflow" for d in namespaced)
    assert all(s["namespace"] == "kubeflow" for d in docs if d["kind"] == "RoleBinding" for s in d["subjects"])


def test_the_readme_sandbox_url_is_the_service():
    service = find(build(M / "sandbox"), "Service")
    url = f"http://{service['metadata']['name']}.{service['metadata']['namespace']}.svc:{service['spec']['ports'][0]['port']}"
    readme = (REPO / "README.md").read_text()
    assert url == "http://dultra-sandbox.dultra-sandbox.svc:8080" and readme.count(url) >= 2
