"""Open Lines metrics, on the app's registry (gateway.metrics.Metrics.registry)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class OpenLinesMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self._events = Counter(
            "leadgate_openlines_events",
            "Calls from Bitrix24 (installation, events) by event and outcome",
            ["event", "outcome"],
            registry=r,
        )
        self._refreshes = Counter(
            "leadgate_openlines_token_refreshes",
            "Access token renewals by outcome (ok, peer, refused, failed, busy)",
            ["outcome"],
            registry=r,
        )
        self._requests = Counter(
            "leadgate_openlines_requests",
            "REST requests as the application, by outcome (ok, expired_token, query_limit, ...)",
            ["outcome"],
            registry=r,
        )
        self.halted = Gauge(
            "leadgate_openlines_halted",
            "1 while the application is not installed or Bitrix24 refuses it",
            registry=r,
        )

    def event(self, event: str, outcome: str) -> None:
        self._events.labels(event, outcome).inc()

    def refresh(self, outcome: str) -> None:
        self._refreshes.labels(outcome).inc()

    def request(self, outcome: str) -> None:
        self._requests.labels(outcome).inc()
