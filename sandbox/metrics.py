"""Prometheus metrics of the service: executions by status, latency, queue depth.

    curl -s localhost:8080/metrics | grep sandbox_
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from sandbox import STATUSES

disable_created_metrics()  # the *_created series only add noise to scrapes
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    """One registry per app, so tests can run several apps in one process."""

    def __init__(self, stats: Callable[[], dict]):
        self.registry = CollectorRegistry()
        self.executions = Counter(
            "sandbox_executions", "Executions finished, by status", ["status"],
            registry=self.registry)
        for status in STATUSES:
            self.executions.labels(status)  # export zeros, so rates exist from the start
        self.latency = Histogram(
            "sandbox_execution_seconds", "Time from request to result of one execution",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry)
        Gauge("sandbox_queue_depth", "Requests waiting for an idle worker",
              registry=self.registry).set_function(lambda: stats()["queue_depth"])
        Gauge("sandbox_workers_busy", "Workers running an execution now",
              registry=self.registry).set_function(lambda: stats()["busy"])
        Gauge("sandbox_worker_restarts", "Workers replaced after dying or hanging",
              registry=self.registry).set_function(lambda: stats()["restarts"])

    def observe(self, result: dict, seconds: float) -> None:
        self.executions.labels(result["status"]).inc()
        self.latency.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
