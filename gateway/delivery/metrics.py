"""Delivery metrics, registered on the app's own registry (gateway.metrics.Metrics.registry)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class DeliveryMetrics:
    def __init__(self, registry: CollectorRegistry, sink: str) -> None:
        self.sink = sink
        r = registry
        self.depth = Gauge(
            "leadgate_outbox_depth", "Outbox items waiting to be delivered", registry=r
        )
        self.oldest_age = Gauge(
            "leadgate_outbox_oldest_pending_seconds",
            "Age of the oldest outbox item still waiting (0 when none)",
            registry=r,
        )
        self.dead = Gauge(
            "leadgate_outbox_dead", "Outbox items in the dead-letter queue", registry=r
        )
        self.latency = Histogram(
            "leadgate_delivery_seconds",
            "From accepting an event to its delivery to the sink",
            ["sink"],
            registry=r,
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 6 * 3600, 24 * 3600),
        ).labels(sink)
        self._results = Counter(
            "leadgate_deliveries",
            "Outbox items handled, by sink and result (delivered, skipped, retry, dead, ...)",
            ["sink", "result"],
            registry=r,
        )
        self._requests = Counter(
            "leadgate_sink_requests",
            "Requests to the sink by outcome (ok, query_limit, operation_limit, auth, ...)",
            ["sink", "outcome"],
            registry=r,
        )
        self.halted = Gauge(
            "leadgate_delivery_halted",
            "1 while the sink refuses our credentials and delivery is stopped",
            ["sink"],
            registry=r,
        ).labels(sink)
        self.failing = Gauge(
            "leadgate_delivery_failing",
            "1 while deliveries to the sink fail (readiness is degraded)",
            ["sink"],
            registry=r,
        ).labels(sink)

    def result(self, result: str, count: int = 1) -> None:
        self._results.labels(self.sink, result).inc(count)

    def request(self, outcome: str) -> None:
        self._requests.labels(self.sink, outcome).inc()
