"""The mailbox's own Prometheus series, on the app's registry (shown on /metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class EmailMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.last_fetch = Gauge(
            "leadgate_email_last_fetch_timestamp_seconds",
            "When a mailbox folder was last read successfully (Unix time)",
            ["mailbox", "folder"],
            registry=registry,
        )
        self.connected = Gauge(
            "leadgate_email_connected",
            "1 while the poller holds a working connection to the folder",
            ["mailbox", "folder"],
            registry=registry,
        )
        self.taken = Counter(
            "leadgate_email_messages",
            "Customer messages taken from a mailbox, by pipeline outcome",
            ["mailbox", "outcome"],
            registry=registry,
        )
        self.skipped = Counter(
            "leadgate_email_skipped",
            "Messages kept for inspection instead of becoming leads, by reason",
            ["mailbox", "reason"],
            registry=registry,
        )
        self.errors = Counter(
            "leadgate_email_errors",
            "Mailbox errors by kind (connection, login, folder, store, malformed, internal)",
            ["mailbox", "kind"],
            registry=registry,
        )
        self.resyncs = Counter(
            "leadgate_email_resyncs",
            "UIDVALIDITY changes that made a folder be read again",
            ["mailbox", "folder"],
            registry=registry,
        )
        self.auto_replies = Counter(
            "leadgate_email_auto_replies",
            "Auto-replies by result (sent, limited, failed, dropped)",
            ["result"],
            registry=registry,
        )
