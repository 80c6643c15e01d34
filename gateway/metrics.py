"""Prometheus metrics, on a registry of the app's own so several apps can live in one process."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from gateway.version import VERSION


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # Which version runs where: a constant 1 with the version as its label (the usual
        # *_build_info idiom), so a dashboard can show it and an alert can compare replicas.
        self.build_info = Gauge(
            "leadgate_build_info",
            "The running leadgate version (always 1)",
            ["version"],
            registry=r,
        )
        self.build_info.labels(VERSION).set(1)
        self.start_time = Gauge(
            "leadgate_start_time_seconds",
            "When this gateway process started (Unix time): uptime is time() minus this",
            registry=r,
        )
        self.start_time.set(time.time())
        self.events = Counter(
            "leadgate_events",
            "Inbound events accepted, by channel and outcome",
            ["channel", "outcome"],
            registry=r,
        )
        self.rejections = Counter(
            "leadgate_rejections",
            "Requests refused, by route and reason",
            ["route", "reason"],
            registry=r,
        )
        self.after_hours = Counter(
            "leadgate_after_hours_events",
            "Events that arrived outside working time",
            ["channel"],
            registry=r,
        )
        self.junk = Counter(
            "leadgate_junk_leads",
            "Leads created as JUNK, by reason",
            ["reason"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "leadgate_request_seconds",
            "HTTP request latency by route",
            ["route", "method"],
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )
        self.unassigned = Counter(
            "leadgate_unassigned_leads",
            "Leads created with no seller to assign",
            registry=r,
        )
        self.quarantined = Counter(
            "leadgate_quarantined",
            "Authentic input kept for inspection, by channel",
            ["channel"],
            registry=r,
        )
        self.ready = Gauge("leadgate_ready", "1 when /readyz is ok", registry=r)
        # 0 when an acknowledged event could be lost on a power cut of the store's host
        # (Redis without appendfsync always); `mode` is [store] durability, which says
        # whether the operator accepted that ("relaxed") or not ("always").
        self.store_durable = Gauge(
            "leadgate_store_durable",
            "1 when the store persists every write before the gateway answers",
            ["mode"],
            registry=r,
        )
        self.task_restarts = Counter(
            "leadgate_task_restarts",
            "Background tasks restarted after they failed or ended, by task",
            ["task"],
            registry=r,
        )
        # WebSocket sessions last minutes: they are kept out of leadgate_request_seconds.
        self.websockets = Gauge(
            "leadgate_websockets_open",
            "WebSocket connections open now, by route",
            ["route"],
            registry=r,
        )
        # labels() hashes and locks on every call; the hot path reuses the children.
        self._children: dict[tuple[Any, ...], Any] = {}

    def count(self, metric: Counter, *labels: str) -> None:
        """Increment a labelled counter through the cached child."""
        self._child(metric, *labels).inc()

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def observe_request(self, route: str, method: str, seconds: float) -> None:
        self._child(self.request_seconds, route, method).observe(seconds)

    def rejected(self, route: str, reason: str) -> None:
        self._child(self.rejections, route, reason).inc()

    def event(self, channel: str, outcome: str) -> None:
        self._child(self.events, channel, outcome).inc()

    def task_restarted(self, task: str) -> None:
        self._child(self.task_restarts, task).inc()
