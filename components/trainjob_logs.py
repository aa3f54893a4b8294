"""Follow the logs of a TrainJob's node-0 pod across pod restarts and dropped streams, and see
what its other nodes wait for.

    logs = Node0Logs(CoreV1Api(api_client), "dultra", "dultra-train-1a2b3c4d5e6f", out=sys.stdout)
    logs.pump(follow=True, idle_s=120)   # prints new lines; returns when the stream ends or idles
    logs.state                           # PodState of the newest node-0 pod (None before one exists)
    other_nodes(core, "dultra", "dultra-train-1a2b3c4d5e6f")  # PodStates of nodes 1.. by rank

Used by `components.trainjob.run_trainjob`. Lines are requested with kubelet timestamps, so a
reconnect (dropped connection, idle timeout, container restart) prints each line once: lines
at or before the last printed timestamp are skipped, and `sinceSeconds` (measured on this
machine's monotonic clock, so clock skew with the node does not matter) keeps the replay short.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TextIO

import urllib3
from kubernetes.client import CoreV1Api, V1Pod
from kubernetes.client.exceptions import ApiException

CONTAINER = "node"  # the trainer container of a Kubeflow Trainer torch runtime
# Node 0 of a TrainJob: JobSet labels its pods with the TrainJob's name, the replicated job and
# the Job index; the indexed Job adds the completion index, which the runtime uses as node rank.
NODE0_SELECTOR = ("jobset.sigs.k8s.io/jobset-name={name},jobset.sigs.k8s.io/replicatedjob-name=node,"
                  "jobset.sigs.k8s.io/job-index=0,batch.kubernetes.io/job-completion-index=0")
JOB_SELECTOR = "jobset.sigs.k8s.io/jobset-name={name},jobset.sigs.k8s.io/replicatedjob-name=node"
NODE_RANK = "batch.kubernetes.io/job-completion-index"  # the runtime's node rank for the pod
SINCE_MARGIN_S = 60  # replayed on reconnect beyond the time since the last line (request latency)


@dataclass(frozen=True)
class PodState:
    """What the newest pod of a node is doing."""

    name: str  # pod name
    uid: str  # pod uid (a recreated pod has the same labels and a new uid)
    phase: str  # Pending, Running, Succeeded, Failed, Unknown
    started: bool  # the trainer container runs or has run, so it has logs
    reason: str = ""  # why it waits or ended: ContainerCreating, ImagePullBackOff, Unschedulable, Error...
    message: str = ""  # the kubelet's or scheduler's message for `reason`
    restarts: int = 0  # restarts of the trainer container inside this pod
    node: str = "0"  # the node's rank

    def describe(self) -> str:
        detail = f" ({self.reason}: {self.message})" if self.reason and self.message else \
            f" ({self.reason})" if self.reason else ""
        return f"node-{self.node} pod {self.name}: {self.phase}{detail}"


def pod_state(pod: V1Pod) -> PodState:
    """The trainer container's state, else the scheduling state, of a pod."""
    meta, status = pod.metadata, pod.status
    base = dict(name=meta.name, uid=meta.uid or meta.name, phase=(status and status.phase) or "Unknown",
                node=(meta.labels or {}).get(NODE_RANK, "?"))
    for cs in (status and status.container_statuses) or []:
        if cs.name != CONTAINER:
            continue
        state, restarts = cs.state, cs.restart_count or 0
        if state and state.running:
            return PodState(**base, started=True, restarts=restarts)
        if state and state.terminated:
            t = state.terminated
            return PodState(**base, started=True, reason=t.reason or f"exit code {t.exit_code}",
                            message=(t.message or "").strip(), restarts=restarts)
        if state and state.waiting:
            # A restarted container waits with logs from its previous run still readable.
            return PodState(**base, started=restarts > 0, reason=state.waiting.reason or "",
                            message=(state.waiting.message or "").strip(), restarts=restarts)
    for cond in (status and status.conditions) or []:
        if cond.type == "PodScheduled" and cond.status == "False":
            return PodState(**base, started=False, reason=cond.reason or "", message=(cond.message or "").strip())
    return PodState(**base, started=False)


def _newest(pods: list[V1Pod]) -> V1Pod:
    return max(pods, key=lambda p: (p.metadata.creation_timestamp or datetime.min, p.metadata.name))


def other_nodes(core: CoreV1Api, namespace: str, job_name: str, connect_s: float = 10.0) -> list[PodState]:
    """The newest pod of each node but node 0, by rank: a node that finds no machine or cannot
    start leaves the others waiting in the rendezvous, with nothing in node 0's log."""
    by_rank: dict[str, list[V1Pod]] = {}
    for p in core.list_namespaced_pod(namespace, label_selector=JOB_SELECTOR.format(name=job_name),
                                      _request_timeout=(connect_s, 60)).items:
        by_rank.setdefault((p.metadata.labels or {}).get(NODE_RANK, "?"), []).append(p)
    by_rank.pop("0", None)
    return [pod_state(_newest(pods)) for _, pods in sorted(by_rank.items(), key=lambda kv: (len(kv[0]), kv[0]))]


def parse_timestamp(text: str) -> int | None:
    """RFC 3339 with up to 9 fractional digits (a kubelet log timestamp) -> ns since the epoch.
    containerd and CRI-O stamp lines in the node's zone: `...01.123456789+02:00`."""
    try:
        whole, _, rest = text.partition(".")
        digits = rest[:len(rest) - len(rest.lstrip("0123456789"))]  # the fraction, not the zone's digits
        zone = rest[len(digits):] if rest else whole[19:]
        seconds = datetime.fromisoformat(whole[:19] + (zone or "Z").replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
    return int(seconds) * 1_000_000_000 + int((digits + "000000000")[:9])


class Node0Logs:
    """Prints node 0's log lines to `out`, each once, whichever pod currently is node 0."""

    def __init__(self, core: CoreV1Api, namespace: str, job_name: str, out: TextIO, connect_s: float = 10.0):
        self.core, self.namespace, self.out, self.connect_s = core, namespace, out, connect_s
        self.selector = NODE0_SELECTOR.format(name=job_name)
        self.state: PodState | None = None
        self._last_ts: int | None = None  # newest printed line of the current pod (ns)
        self._last_seen = 0.0  # time.monotonic() when that line arrived

    def pump(self, follow: bool, idle_s: float = 120.0) -> bool:
        """Print the current node-0 pod's new lines; True when any line was printed.

        follow=True blocks while the container runs, up to `idle_s` in all: a job that keeps
        logging must not keep the caller from its status, stuck and timeout checks.
        """
        pods = self.core.list_namespaced_pod(self.namespace, label_selector=self.selector,
                                             _request_timeout=(self.connect_s, 60)).items
        if not pods:
            self.state = None
            return False
        state = pod_state(_newest(pods))
        printed = False
        if self.state is not None and state.uid != self.state.uid:
            if self.state.started:  # a lost stream may have left the old pod's last lines unread
                printed = self._stream(self.state.name, follow=False, idle_s=idle_s)
            self._last_ts = None
        self.state = state
        if state.started:
            printed = self._stream(state.name, follow=follow, idle_s=idle_s) or printed
        return printed

    def _stream(self, pod: str, follow: bool, idle_s: float) -> bool:
        kwargs = {}
        if self._last_ts is not None:
            kwargs["since_seconds"] = math.ceil(time.monotonic() - self._last_seen) + SINCE_MARGIN_S
        try:
            resp = self.core.read_namespaced_pod_log(
                pod, self.namespace, container=CONTAINER, follow=follow, timestamps=True,
                _preload_content=False, _request_timeout=(self.connect_s, max(idle_s, 0.1)), **kwargs)
        except ApiException as err:
            if err.status in (400, 404):  # not started yet, or deleted: the next pump sees why
                return False
            raise
        printed, pending = False, b""
        until = time.monotonic() + idle_s if follow else math.inf  # a finished log is read whole
        try:
            for chunk in resp.stream(8192, decode_content=True):
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    printed = self._emit(line) or printed
                if time.monotonic() >= until:  # the next pump reconnects where this one stopped
                    resp.close()  # unread: the connection must not go back to the pool
                    break
            else:
                if pending:  # a last line without a newline, complete since the stream ended cleanly
                    printed = self._emit(pending) or printed
        except (urllib3.exceptions.HTTPError, OSError):
            pass  # idle timeout or dropped connection: reconnect on the next pump
        finally:
            resp.release_conn()
        return printed

    def _emit(self, raw: bytes) -> bool:
        line = raw.decode("utf-8", errors="replace").rstrip("\r")
        stamp, _, text = line.partition(" ")
        ts = parse_timestamp(stamp)
        if ts is None:  # not timestamped (never from a kubelet): print as is
            text = line
        elif self._last_ts is not None and ts <= self._last_ts:
            return False  # printed before the reconnect
        else:
            self._last_ts, self._last_seen = ts, time.monotonic()
        self.out.write(text + "\n")
        self.out.flush()
        return True
