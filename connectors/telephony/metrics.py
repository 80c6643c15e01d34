"""Telephony counters, on the app's own registry (see gateway.metrics)."""

from __future__ import annotations

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

    def webhook(self, provider: str, kind: str, result: str) -> None:
        self.webhooks.labels(provider, kind, result).inc()
