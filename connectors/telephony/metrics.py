"""Telephony counters, on the app's own registry (see gateway.metrics)."""

from __future__ import annotations

from collections import Counter as Tally
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Counter


class TelephonyMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.webhooks = Counter(
            "leadgate_telephony_webhooks",
            "Telephony webhooks by provider, what they told (start, answer, end, ...) and result",
            ["provider", "kind", "result"],
            registry=registry,
        )
        self.unknown = Counter(
            "leadgate_telephony_unknown_events",
            "Telephony webhooks of event types leadgate does not handle: acknowledged, not stored",
            ["provider"],
            registry=registry,
        )
        self.steering = Counter(
            "leadgate_telephony_steering",
            "Answers to the start of a call that steered it, by provider and action",
            ["provider", "action"],
            registry=registry,
        )

        # For the /ops page, since start: webhooks by result, the last one, the last refusal.
        self.results: Tally[str] = Tally()
        self.last_at: datetime | None = None
        self.last_problem: tuple[str, str, datetime] | None = None

    def webhook(self, provider: str, kind: str, result: str, detail: str | None = None) -> None:
        self.webhooks.labels(provider, kind, result).inc()
        now = datetime.now(UTC)
        self.results[result] += 1
        self.last_at = now
        if result in ("unauthorized", "invalid"):
            self.last_problem = (provider, detail or result, now)
