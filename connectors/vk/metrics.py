"""VK's own Prometheus series, per community (label `community`: the group id), on the
app's registry. Documented in docs/channels/vk.md."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from connectors.vk.api import VkError


class VkMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.events = Counter(
            "leadgate_vk_events",
            "Callback API events by community, type and result",
            ["community", "type", "result"],
            registry=registry,
        )
        self.api_calls = Counter(
            "leadgate_vk_api_calls",
            "VK API calls by community, method and result (ok or the error kind)",
            ["community", "method", "result"],
            registry=registry,
        )
        self.catch_up_leads = Counter(
            "leadgate_vk_catch_up_leads",
            "Lead-form applications found by leadForms.getLeads that no event had brought",
            ["community"],
            registry=registry,
        )
        self.last_catch_up = Gauge(
            "leadgate_vk_last_catch_up_timestamp_seconds",
            "When the lead-form catch-up last completed (Unix time)",
            ["community"],
            registry=registry,
        )

    def event(self, community: str, kind: str, result: str) -> None:
        self.events.labels(community, kind, result).inc()

    def call(self, community: str, method: str, error: VkError | None = None) -> None:
        result = "ok" if error is None else error.kind.value
        self.api_calls.labels(community, method, result).inc()
