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
        self._mirrored = Counter(
            "leadgate_openlines_mirrored",
            "Customers' messages copied into the line, by result (delivered, retry, "
            "throttled, halted, dead)",
            ["result"],
            registry=r,
        )
        self._reported = Counter(
            "leadgate_openlines_delivery_reports",
            "Sellers' answers reported back to the line, by result (delivered, undelivered)",
            ["result"],
            registry=r,
        )
        self._answers = Counter(
            "leadgate_openlines_answers",
            "Sellers' answers from the line, by outcome (queued, empty, unknown_chat)",
            ["outcome"],
            registry=r,
        )
        self.dialogs_finished = Counter(
            "leadgate_openlines_dialogs_finished",
            "Dialogs the line closed",
            registry=r,
        )
        self.pending = Gauge(
            "leadgate_openlines_pending",
            "Outbox rows for Open Lines waiting (messages to copy, reports to send)",
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

    def mirrored(self, result: str) -> None:
        self._mirrored.labels(result).inc()

    def reported(self, result: str) -> None:
        self._reported.labels(result).inc()

    def answer(self, outcome: str) -> None:
        self._answers.labels(outcome).inc()
