"""Run a dultra training stage on several nodes as a Kubeflow Trainer TrainJob.

    from components.trainjob import TrainJobSpec, run_trainjob
    run_trainjob(TrainJobSpec(image="ghcr.io/dultra/dultra-trainer:0.1.0", run_id=kfp_run_id, nodes=2,
                              gpus_per_node=8, args=["train", "--config", "configs/llada-8b-math.yaml",
                                                     "--output-dir", "/workspace/runs/RUN/train", "--resume", "true"]))

Every node runs the ClusterTrainingRuntime `dultra-accelerate` (manifests/runtime): `accelerate
launch` with the rendezvous that the Trainer's torch plugin hands each node (PET_NNODES,
PET_NODE_RANK, PET_MASTER_ADDR, ...), one process per GPU, then `python -m dultra.cli ARGS`, with
the workspace volume (`dultra-workspace`) at /workspace. `run_trainjob`

- creates the TrainJob under a name derived from the Kubeflow run id and the stage, so a retried
  pipeline step attaches to the job it created before instead of starting a second one (a job
  that already succeeded returns at once; one that failed raises, or is replaced when
  `recreate_failed`; one created from a different spec raises TrainJobConflict);
- prints node 0's log lines as they come, across pod restarts and dropped streams, and waits
  out Kubernetes API outages shorter than `api_outage_s`;
- says what any node waits for (no machine, an image that does not pull), and says so when a
  node stays unschedulable for `stuck_s` (and keeps waiting: an autoscaler may add nodes);
- returns the finished TrainJob, or raises TrainJobFailed when it fails, when a node is stuck
  (image or config errors) for `stuck_s`, or after `timeout_s` (TrainJobTimeout), deleting the job
  in the last two cases. A step stopped by SIGTERM (a cancelled run, but also an evicted or
  preempted pod, which Kubernetes cannot tell apart) raises TrainJobCancelled and leaves the job
  running, so that the retried step attaches to it; delete a cancelled run's job by its label
  (kubectl delete trainjob -l dultra.dev/kfp-run-id=RUN_ID).

The service account needs the Role `dultra-trainjobs` (manifests/base/rbac.yaml): trainjobs
create/get/delete, pods list, pods/log get. This module imports no Kubeflow Pipelines code.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import urllib3
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from kubernetes.utils.quantity import parse_quantity

from components.trainjob_logs import Node0Logs, PodState, other_nodes

GROUP, VERSION, PLURAL = "trainer.kubeflow.org", "v1alpha1", "trainjobs"
RUNTIME = "dultra-accelerate"  # manifests/runtime: the ClusterTrainingRuntime every node runs
WORKSPACE_PVC = "dultra-workspace"  # mounted by the runtime on every node (manifests/base/pvc.yaml)
WORKSPACE_MOUNT = "/workspace"
SANDBOX_CLIENT_LABEL = ("dultra.dev/sandbox-client", "true")  # the runtime's pods carry it (sandbox ingress)
SA_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
SPEC_HASH = "dultra.dev/spec-sha256"
RUN_ID = "dultra.dev/kfp-run-id"
# Pod waiting reasons that do not fix themselves (a missing Secret key, a wrong image name).
STUCK_REASONS = frozenset({"CreateContainerConfigError", "CreateContainerError", "InvalidImageName",
                           "ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull"})
# Reported after stuck_s but waited on: capacity may come (cluster autoscaler, a finishing job).
UNSCHEDULABLE = "Unschedulable"
# The Trainer's torch plugin owns these (its webhook rejects TrainJobs that set them).
RESERVED_ENV = frozenset({"PET_NNODES", "PET_NPROC_PER_NODE", "PET_NODE_RANK", "PET_MASTER_ADDR",
                          "PET_MASTER_PORT"})
# JobSet names pods <job>-node-<job index>-<pod index>: a 63-character hostname limits the job's name.
MAX_NAME = 45
NAME_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class TrainJobFailed(RuntimeError):
    """The TrainJob failed, could not be created, or was stopped; the message is one line."""


class TrainJobTimeout(TrainJobFailed):
    """The TrainJob did not finish within `timeout_s` (it was deleted)."""


class TrainJobCancelled(TrainJobFailed):
    """The step was stopped (SIGTERM or Ctrl-C) while the TrainJob ran (the job keeps running)."""


class TrainJobConflict(TrainJobFailed):
    """A TrainJob with this name exists but was created from a different spec."""


@dataclass(frozen=True)
class SecretEnv:
    """An environment variable of every node read from a Secret, e.g. SecretEnv("HF_TOKEN", "dultra-hf", "token")."""

    name: str  # the environment variable
    secret: str  # a Secret in the TrainJob's namespace
    key: str  # the key in that Secret


@dataclass
class TrainJobSpec:
    """One multi-node run of `python -m dultra.cli ARGS` (see the module docstring)."""

    image: str  # trainer image of every node (the pipeline's trainer_image)
    args: list[str]  # `dultra` arguments, e.g. ["train", "--config", FILE, "--output-dir", DIR, "--resume", "true"]
    nodes: int = 2  # machines
    gpus_per_node: int = 0  # GPUs per machine, one process each; 0: CPU nodes, one process each
    run_id: str = ""  # Kubeflow run id: with args[0] it names the job (so retries attach), and labels it
    name: str = ""  # TrainJob name; empty: trainjob_name(run_id, args[0])
    namespace: str = ""  # empty: this pod's namespace (its service account's namespace file)
    runtime: str = RUNTIME  # ClusterTrainingRuntime the nodes run
    accelerate_config: str = ""  # accelerate config in the image; empty: the runtime's (configs/accelerate/ddp.yaml)
    env: dict[str, str] = field(default_factory=dict)  # environment of every node
    secret_env: list[SecretEnv] = field(default_factory=list)  # environment from Secrets
    # CPU and memory requests per node, e.g. "32" and "512Gi"; empty: the runtime's. Kubeflow
    # Trainer >= 2.3 merges resourcesPerNode into the runtime's resources key by key; older
    # releases replace them wholesale, so there set both.
    cpu: str = ""
    memory: str = ""
    timeout_s: float = 72 * 3600  # give up (and delete the job) after this long
    stuck_s: float = 900  # give up when a node waits this long on an image or config error (say so if unschedulable)
    poll_s: float = 10  # status poll interval while nothing streams
    log_idle_s: float = 120  # reconnect a log stream open (or silent) this long, and check the status
    api_outage_s: float = 300  # the Kubernetes API failing this long fails the step (shorter outages are waited out)
    recreate_failed: bool = False  # on attach, replace a failed job with a new one (it resumes) instead of raising

    def job_name(self) -> str:
        return self.name or trainjob_name(self.run_id, self.args[0] if self.args else "")

    def validate(self) -> None:
        """Raises ValueError naming the first wrong field."""
        if not self.image:
            raise ValueError("TrainJobSpec.image is empty")
        if not self.args:
            raise ValueError("TrainJobSpec.args is empty: give the dultra command, e.g. ['train', '--config', FILE]")
        if self.nodes < 1 or self.gpus_per_node < 0:
            raise ValueError(f"TrainJobSpec needs nodes >= 1 and gpus_per_node >= 0, got {self.nodes} and {self.gpus_per_node}")
        name = self.job_name()
        if len(name) > MAX_NAME or not NAME_RE.match(name):
            raise ValueError(f"TrainJob name {name!r} must be a DNS label of at most {MAX_NAME} characters")
        names = list(self.env) + [s.name for s in self.secret_env] + list(_implied_env(self))
        for env_name in names:
            if not ENV_RE.match(env_name):
                raise ValueError(f"invalid environment variable name {env_name!r}")
            if env_name in RESERVED_ENV:
                raise ValueError(f"{env_name} is set by the Trainer's torch plugin on every node; do not set it")
        if dupes := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"environment variables set twice: {', '.join(dupes)}")
        for what, quantity in (("cpu", self.cpu), ("memory", self.memory)):
            check_quantity(quantity, f"TrainJobSpec.{what}")
        if min(self.timeout_s, self.stuck_s, self.poll_s, self.log_idle_s, self.api_outage_s) <= 0:
            raise ValueError("TrainJobSpec timeouts and intervals must be positive")


def check_quantity(text: str, what: str) -> None:
    """Refuse a CPU or memory request Kubernetes would reject only when the job is created
    (`512 GB`, `lots`, `0`); empty means the runtime's."""
    if not text:
        return
    try:
        ok = parse_quantity(text) > 0
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"{what} {text!r} is not a positive Kubernetes quantity, e.g. 32, 500m, 512Gi or 64G")


def trainjob_name(run_id: str, stage: str) -> str:
    """A DNS-label name, the same for every retry of a run's stage: dultra-train-<12 hex>."""
    if not run_id:
        raise ValueError("TrainJobSpec needs a name or a run_id (a deterministic name lets a retried step "
                         "attach to its job instead of starting another)")
    slug = re.sub(r"[^a-z0-9]+", "-", stage.lower()).strip("-")[:12].strip("-") or "job"
    return f"dultra-{slug}-{hashlib.sha256(f'{run_id}/{stage}'.encode()).hexdigest()[:12]}"


def _implied_env(spec: TrainJobSpec) -> dict[str, str]:
    env = {}
    if spec.gpus_per_node == 0:
        env["ACCELERATE_USE_CPU"] = "true"  # else accelerate runs each CPU process alone (no gloo group)
    if spec.accelerate_config:
        env["DULTRA_ACCELERATE_CONFIG"] = spec.accelerate_config  # read by the runtime's launch script
    return env


def _label_value(text: str) -> str:
    return re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", re.sub(r"[^A-Za-z0-9_.-]", "-", text)[:63])


def build_trainjob(spec: TrainJobSpec, namespace: str) -> dict[str, Any]:
    """The TrainJob object `run_trainjob` creates (pure: what the API receives, byte for byte as JSON)."""
    spec.validate()
    env = [{"name": k, "value": v} for k, v in {**spec.env, **_implied_env(spec)}.items()]
    env += [{"name": s.name, "valueFrom": {"secretKeyRef": {"name": s.secret, "key": s.key}}} for s in spec.secret_env]
    trainer: dict[str, Any] = {
        "image": spec.image,
        "args": list(spec.args),
        "numNodes": spec.nodes,
        "numProcPerNode": max(spec.gpus_per_node, 1),
        "env": sorted(env, key=lambda e: e["name"]),
    }
    # The GPU count always, 0 included: merged into a GPU runtime, it would otherwise keep the runtime's.
    resources: dict[str, dict[str, str]] = {"limits": {"nvidia.com/gpu": str(spec.gpus_per_node)}}
    requests = {k: v for k, v in (("cpu", spec.cpu), ("memory", spec.memory)) if v}
    if requests:
        resources["requests"] = requests
    trainer["resourcesPerNode"] = resources
    job_spec = {
        "runtimeRef": {"apiGroup": GROUP, "kind": "ClusterTrainingRuntime", "name": spec.runtime},
        "trainer": trainer,
    }
    labels = {"app.kubernetes.io/part-of": "dultra", "app.kubernetes.io/managed-by": "dultra-pipeline"}
    annotations = {SPEC_HASH: spec_hash(job_spec)}
    if spec.run_id:
        labels[RUN_ID] = _label_value(spec.run_id)
        annotations[RUN_ID] = spec.run_id
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TrainJob",
        "metadata": {"name": spec.job_name(), "namespace": namespace, "labels": labels, "annotations": annotations},
        "spec": job_spec,
    }


def spec_hash(job_spec: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(job_spec, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def current_namespace(path: str = SA_NAMESPACE_FILE) -> str:
    """The namespace this pod runs in (Kubernetes mounts it with the service-account token)."""
    try:
        return Path(path).read_text().strip()
    except OSError:
        raise TrainJobFailed(f"no namespace given and {path} is unreadable (not in a pod?): "
                             "set TrainJobSpec.namespace") from None


def default_api_client() -> k8s.ApiClient:
    """In a pod: its service account; elsewhere: the current context of $KUBECONFIG or ~/.kube/config."""
    from kubernetes import config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        try:  # $KUBECONFIG read now: the client's own default was fixed when it was imported
            config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or None)
        except (config.ConfigException, OSError) as err:
            raise TrainJobFailed(f"no Kubernetes credentials: not in a pod, and no usable kubeconfig ({err})") from None
    return k8s.ApiClient()


def job_state(job: dict[str, Any]) -> tuple[str, str, str]:
    """(state, reason, message) of a TrainJob: Complete, Failed, Suspended, Running or Pending."""
    status = job.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
    for state in ("Failed", "Complete", "Suspended"):
        if state in conditions:
            c = conditions[state]
            return state, c.get("reason", ""), " ".join(str(c.get("message", "")).split())
    active = sum(j.get("active", 0) for j in status.get("jobsStatus") or [])
    return ("Running" if active else "Pending"), "", ""


class _Jobs:
    """The TrainJob calls (errors stay ApiException: callers decide what is transient)."""

    def __init__(self, api: k8s.ApiClient, namespace: str, name: str):
        self.api, self.namespace, self.name = k8s.CustomObjectsApi(api), namespace, name
        self.ref = f"{namespace}/{name}"

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.api.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, body)

    def get(self) -> dict[str, Any] | None:
        try:
            return self.api.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, self.name)
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    def delete(self) -> None:
        try:
            self.api.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, self.name,
                                                     propagation_policy="Foreground")
        except ApiException as err:
            if err.status != 404:
                raise


def _transient(err: BaseException) -> bool:
    """API server restarts, overload and network blips: wait them out, do not fail training."""
    if isinstance(err, ApiException):
        return err.status in (429, 500, 502, 503, 504)
    return isinstance(err, urllib3.exceptions.HTTPError | OSError)


def _api_failure(doing: str, err: BaseException) -> TrainJobFailed:
    """A one-line TrainJobFailed from an API error."""
    if not isinstance(err, ApiException):
        return TrainJobFailed(f"cannot {doing}: {' '.join(str(err).split())}")
    try:
        detail = json.loads(err.body).get("message", "")
    except (TypeError, ValueError, AttributeError):
        detail = err.body or ""
    detail = " ".join(str(detail).split())
    hint = " (the run's service account needs the Role dultra-trainjobs)" if err.status == 403 and "cannot " in detail else ""
    return TrainJobFailed(f"cannot {doing}: {err.status} {err.reason}: {detail}{hint}")


def _say(out: TextIO, text: str) -> None:
    out.write(f"[trainjob] {text}\n")
    out.flush()


def _submit(jobs: _Jobs, body: dict[str, Any], spec: TrainJobSpec, out: TextIO, deadline: float) -> None:
    """Create the job, or attach to the one a previous attempt of this step created."""
    try:
        jobs.create(body)
        _say(out, f"created TrainJob {jobs.ref}: {spec.nodes} nodes x {max(spec.gpus_per_node, 1)} "
                  f"{'GPU' if spec.gpus_per_node else 'CPU'} processes, runtime {spec.runtime}")
        return
    except ApiException as err:
        if err.status != 409:
            raise _api_failure(f"create TrainJob {jobs.ref}", err) from None
    existing = jobs.get()
    if existing is None:  # deleted between the two calls
        return _submit(jobs, body, spec, out, deadline)
    if existing.get("metadata", {}).get("annotations", {}).get(SPEC_HASH) != body["metadata"]["annotations"][SPEC_HASH]:
        raise TrainJobConflict(f"TrainJob {jobs.ref} exists with a different spec; delete it "
                               f"(kubectl delete trainjob -n {jobs.namespace} {jobs.name}) or use another name")
    state, reason, message = job_state(existing)
    being_deleted = bool(existing["metadata"].get("deletionTimestamp"))
    if state == "Failed" and not spec.recreate_failed and not being_deleted:
        raise TrainJobFailed(f"TrainJob {jobs.ref} already failed ({reason}: {message}); retrying the step "
                             f"does not restart it: delete it or set recreate_failed")
    if state == "Failed" or being_deleted:
        _say(out, f"replacing TrainJob {jobs.ref} ({'being deleted' if being_deleted else 'failed: ' + reason})")
        jobs.delete()
        while jobs.get() is not None:  # foreground deletion: gone once its pods are
            if time.monotonic() > deadline:
                raise TrainJobTimeout(f"TrainJob {jobs.ref} was still being deleted at the timeout")
            time.sleep(spec.poll_s)
        return _submit(jobs, body, spec, out, deadline)
    _say(out, f"attached to existing TrainJob {jobs.ref} ({state})")


class _Follower:
    """Polls the job and streams node 0 until the job finishes, fails, sticks or times out."""

    def __init__(self, jobs: _Jobs, logs: Node0Logs, spec: TrainJobSpec, out: TextIO, deadline: float):
        self.jobs, self.logs, self.spec, self.out, self.deadline = jobs, logs, spec, out, deadline
        self.seen: tuple[str, ...] = ()  # what was last said about the job and node 0
        self.stuck_since: float | None = None  # a node waiting on an image or config error since
        self.unschedulable_since: float | None = None  # a node waiting for a machine since
        self.said_unschedulable = False  # for this wait
        self.outage_since: float | None = None  # the API failing since

    def run(self) -> dict[str, Any]:
        while True:
            try:
                finished, printed = self.poll()
                self.outage_since = None
            except (ApiException, urllib3.exceptions.HTTPError, OSError) as err:
                if not _transient(err):
                    raise _api_failure(f"follow TrainJob {self.jobs.ref}", err) from None
                now = time.monotonic()
                if self.outage_since is None:
                    self.outage_since = now
                    _say(self.out, f"Kubernetes API error, retrying: {_api_failure('poll', err)}")
                if now - self.outage_since >= self.spec.api_outage_s or now >= self.deadline:
                    raise _api_failure(f"follow TrainJob {self.jobs.ref} for {now - self.outage_since:.0f}s", err) from None
                finished, printed = None, False
            if finished is not None:
                return finished
            if not printed:
                time.sleep(max(min(self.spec.poll_s, self.deadline - time.monotonic()), 0))

    def poll(self) -> tuple[dict[str, Any] | None, bool]:
        """One round: (the finished job or None, whether log lines were printed)."""
        jobs, spec = self.jobs, self.spec
        job = jobs.get()
        if job is None:
            raise TrainJobFailed(f"TrainJob {jobs.ref} was deleted while the step waited for it")
        state, reason, message = job_state(job)
        if state in ("Complete", "Failed"):
            self.logs.pump(follow=False)  # node 0's last lines
            if state == "Failed":
                raise TrainJobFailed(f"TrainJob {jobs.ref} failed: {reason}: {message}")
            _say(self.out, f"TrainJob {jobs.ref} complete")
            return job, True
        idle_s = max(min(spec.log_idle_s, self.deadline - time.monotonic()), 0.1)
        printed = self.logs.pump(follow=True, idle_s=idle_s)
        pod: PodState | None = self.logs.state
        # Nodes 1.. that wait on something (no machine, a bad image) hold node 0 in the rendezvous.
        blocked = [p for p in self.other_nodes() if not p.started and p.reason in STUCK_REASONS | {UNSCHEDULABLE}]
        now_seen = (state, reason) + ((pod.name, pod.phase, pod.reason) if pod else ()) + \
            tuple((p.name, p.reason) for p in blocked)
        if now_seen != self.seen:  # say what changed, not every poll
            self.seen = now_seen
            more = f" (and {len(blocked) - 1} more nodes)" if len(blocked) > 1 else ""
            _say(self.out, f"TrainJob {jobs.ref}: {state}" + (f" ({reason})" if reason else "")
                 + (f"; {pod.describe()}" if pod else "; node-0 pod not created yet")
                 + (f"; {blocked[0].describe()}{more}" if blocked else ""))
        now = time.monotonic()
        waiting = [p for p in ([pod] if pod else []) + blocked if not p.started]
        stuck = next((p for p in waiting if p.reason in STUCK_REASONS), None)
        self.stuck_since = (self.stuck_since or now) if stuck else None
        if stuck is not None and now - self.stuck_since >= spec.stuck_s:
            jobs.delete()
            raise TrainJobFailed(f"TrainJob {jobs.ref} deleted: {stuck.describe()} for {now - self.stuck_since:.0f}s")
        self.report_unschedulable(next((p for p in waiting if p.reason == UNSCHEDULABLE), None), now)
        if now >= self.deadline:
            jobs.delete()
            raise TrainJobTimeout(f"TrainJob {jobs.ref} deleted: not finished after {spec.timeout_s:.0f}s ({state})")
        return None, printed

    def other_nodes(self) -> list[PodState]:
        if self.spec.nodes < 2:
            return []
        return other_nodes(self.logs.core, self.jobs.namespace, self.jobs.name, self.logs.connect_s)

    def report_unschedulable(self, pod: PodState | None, now: float) -> None:
        """Say once per wait when a node finds no machine for stuck_s; keep waiting (up to timeout_s)."""
        if pod is None:
            self.unschedulable_since, self.said_unschedulable = None, False
            return
        self.unschedulable_since = self.unschedulable_since or now
        waited = now - self.unschedulable_since
        if waited >= self.spec.stuck_s and not self.said_unschedulable:
            self.said_unschedulable = True
            _say(self.out, f"TrainJob {self.jobs.ref}: no node for node {pod.node} after {waited:.0f}s "
                           f"({pod.describe()}); still waiting, up to the {self.spec.timeout_s:.0f}s timeout, for "
                           "nodes to free up or be added; to give up: "
                           f"kubectl -n {self.jobs.namespace} delete trainjob {self.jobs.name}")


@contextlib.contextmanager
def _sigterm_stops():
    """Kubernetes stops the step's pod with SIGTERM (a cancelled run, an eviction, a preemption):
    raise, so that the step ends with one clear line; the job is left running for a retry."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise TrainJobCancelled("received SIGTERM")

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_trainjob(spec: TrainJobSpec, api_client: k8s.ApiClient | None = None, *,
                 out: TextIO | None = None) -> dict[str, Any]:
    """Create (or attach to) the TrainJob, stream node 0's logs to `out`, return the finished job.

    Raises TrainJobFailed (or its subclasses TrainJobTimeout, TrainJobCancelled, TrainJobConflict)
    with a one-line message; ValueError for a bad spec. `api_client` defaults to the pod's
    service account (or the kubeconfig outside a cluster). SIGTERM and Ctrl-C stop following the
    job, not the job: a pod evicted mid-training would otherwise throw away a multi-node run that
    the step's retry attaches to.
    """
    out = out or sys.stdout
    deadline = time.monotonic() + spec.timeout_s
    body = build_trainjob(spec, spec.namespace or current_namespace())
    api = api_client or default_api_client()
    jobs = _Jobs(api, body["metadata"]["namespace"], body["metadata"]["name"])
    with _sigterm_stops():
        try:
            _submit(jobs, body, spec, out, deadline)
            return _Follower(jobs, Node0Logs(k8s.CoreV1Api(api), jobs.namespace, jobs.name, out),
                             spec, out, deadline).run()
        except (TrainJobCancelled, KeyboardInterrupt) as err:
            _say(out, f"stopped ({err or 'interrupt'}): TrainJob {jobs.ref} keeps running")
            raise TrainJobCancelled(f"step stopped; TrainJob {jobs.ref} keeps running (a retry of the step attaches "
                                    f"to it); to stop it: kubectl -n {jobs.namespace} delete trainjob {jobs.name}"
                                    ) from None
        except ApiException as err:  # outside the follow loop: _submit's lookups and deletions
            raise _api_failure(f"manage TrainJob {jobs.ref}", err) from None
