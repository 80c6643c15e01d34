"""Metrics of the inbox and of messages to customers, on the app's registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class ChatMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.inbox_handled = Counter(
            "leadgate_inbox_handled",
            "Inbox entries handled, by channel, account and result (done, retry, dead)",
            ["channel", "account", "result"],
            registry=r,
        )
        self.inbox_pending = Gauge(
            "leadgate_inbox_pending",
            "Inbox entries waiting to be handled, by channel",
            ["channel"],
            registry=r,
        )
        self.inbox_dead = Gauge(
            "leadgate_inbox_dead",
            "Inbox entries that could not be handled (kept for a person), by channel",
            ["channel"],
            registry=r,
        )
        self.inbox_oldest = Gauge(
            "leadgate_inbox_oldest_pending_seconds",
            "Age of the oldest inbox entry still waiting (0 when none)",
            registry=r,
        )
        self.messages = Counter(
            "leadgate_messages",
            "Messages to customers by channel, account and result (queued, sent, retry,"
            " undeliverable, unconfirmed, halted)",
            ["channel", "account", "result"],
            registry=r,
        )
        self.messages_pending = Gauge(
            "leadgate_messages_pending",
            "Messages to customers waiting to be sent",
            registry=r,
        )
        self.sending_halted = Gauge(
            "leadgate_messages_halted",
            "1 while a channel account refuses our credentials and its sending is stopped",
            ["channel", "account"],
            registry=r,
        )
        self._known: set[str] = set()

    def message(self, channel: str, account: str, result: str, count: int = 1) -> None:
        self.messages.labels(channel, account, result).inc(count)

    def handled(self, channel: str, account: str, result: str) -> None:
        self.inbox_handled.labels(channel, account, result).inc()

    def inbox_depth(self, by_channel: dict[str, tuple[int, int]]) -> None:
        """Pending and dead per channel; a channel that drained is set back to 0."""
        for channel in self._known - set(by_channel):
            self.inbox_pending.labels(channel).set(0)
            self.inbox_dead.labels(channel).set(0)
        for channel, (pending, dead) in by_channel.items():
            self.inbox_pending.labels(channel).set(pending)
            self.inbox_dead.labels(channel).set(dead)
        self._known |= set(by_channel)
