"""The sandbox manifests build with kustomize, validate strictly, and keep the hardening.

    .venv/bin/python -m pytest -q tests/unit/test_sandbox_manifests.py
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.manifest_helpers import build, validate

REPO = Path(__file__).resolve().parents[2]
BASE = REPO / "manifests" / "sandbox"
GVISOR = BASE / "overlays" / "gvisor"


def by_kind(docs: list[dict]) -> dict[str, dict]:
    return {doc["kind"]: doc for doc in docs}


@pytest.mark.parametrize("path", [BASE, GVISOR], ids=["base", "gvisor"])
def test_validates_strictly_offline(path, tmp_path):
    docs = build(path)
    result = validate(docs, tmp_path / "all.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("passed") == len(docs)


def test_base_has_every_piece_in_its_namespace():
    docs = by_kind(build(BASE))
    assert set(docs) == {"Namespace", "ServiceAccount", "Deployment", "Service", "NetworkPolicy",
                         "HorizontalPodAutoscaler", "PodDisruptionBudget"}
    for kind, doc in docs.items():
        if kind != "Namespace":
            assert doc["metadata"]["namespace"] == "dultra-sandbox", kind
    labels = docs["Namespace"]["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_pod_is_restricted():
    deployment = by_kind(build(BASE))["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"]
    assert sc["seccompProfile"]["type"] == "RuntimeDefault"
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert mounts == {"/work", "/tmp"}  # the only writable places, both size-limited
    assert all(v["emptyDir"].get("sizeLimit") for v in pod["volumes"])
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_network_policy_denies_egress_and_admits_only_clients():
    docs = by_kind(build(BASE))
    policy = docs["NetworkPolicy"]["spec"]
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    assert policy["egress"] == []
    pod_labels = docs["Deployment"]["spec"]["template"]["metadata"]["labels"]
    selector = policy["podSelector"]["matchLabels"]  # an empty one would select every pod
    assert selector and all(pod_labels.get(k) == v for k, v in selector.items())
    sources = policy["ingress"][0]["from"]
    assert sources[0]["podSelector"] == {"matchLabels": {"dultra.dev/sandbox-client": "true"}}


def test_autoscaler_and_disruption_budget_target_the_deployment():
    docs = by_kind(build(BASE))
    hpa, pdb = docs["HorizontalPodAutoscaler"]["spec"], docs["PodDisruptionBudget"]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "dultra-sandbox"}
    assert hpa["minReplicas"] >= 2 and pdb["minAvailable"] >= 1
    # The autoscaler owns the replica count: one in the Deployment would reset it on each apply.
    for overlay in (BASE, GVISOR, REPO / "manifests" / "overlays" / "dev", REPO / "manifests" / "overlays" / "gpu"):
        sandbox = [d for d in build(overlay) if d["kind"] == "Deployment" and d["metadata"]["name"] == "dultra-sandbox"]
        assert sandbox and all("replicas" not in d["spec"] for d in sandbox), overlay
    pod_labels = docs["Deployment"]["spec"]["template"]["metadata"]["labels"]
    selector = pdb["selector"]["matchLabels"]
    assert selector and all(pod_labels.get(k) == v for k, v in selector.items())


def test_gvisor_overlay_sets_the_runtime_class():
    docs = by_kind(build(GVISOR))
    assert docs["RuntimeClass"]["handler"] == "runsc"
    name = docs["RuntimeClass"]["metadata"]["name"]
    assert docs["Deployment"]["spec"]["template"]["spec"]["runtimeClassName"] == name
    assert "runtimeClassName" not in by_kind(build(BASE))["Deployment"]["spec"]["template"]["spec"]
