"""Telegram metrics per bot, on the app's registry. Replies are also counted by the core
as leadgate_messages_total{channel="telegram", account=<bot>}."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class TelegramMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.updates = Counter(
            "leadgate_telegram_updates",
            "Telegram updates handled, by bot and kind (message, start, contact, edit,"
            " group, bot, blocked, other, ...)",
            ["bot", "kind"],
            registry=r,
        )
        self.received = Counter(
            "leadgate_telegram_received",
            "Telegram updates received (stored in the inbox), by bot and way (webhook,"
            " polling) and whether new or a duplicate",
            ["bot", "way", "result"],
            registry=r,
        )
        self.webhook_errors = Counter(
            "leadgate_telegram_webhook_errors",
            "Webhook posts refused, by bot and reason (secret, not_json, no_update_id, ...)",
            ["bot", "reason"],
            registry=r,
        )
        self.replies = Counter(
            "leadgate_telegram_replies",
            "sendMessage outcomes, by bot and result (sent, retry, undeliverable, halt, unknown)",
            ["bot", "result"],
            registry=r,
        )
        self.polling_errors = Counter(
            "leadgate_telegram_polling_errors",
            "getUpdates failures, by bot and reason (conflict, unauthorized, network, ...)",
            ["bot", "reason"],
            registry=r,
        )
        self.poison = Counter(
            "leadgate_telegram_poison_updates",
            "Updates that are no Telegram update leadgate can read, by bot and stage"
            " (getupdates: kept in the quarantine and skipped; handling: dead-lettered)",
            ["bot", "stage"],
            registry=r,
        )
        self.last_update = Gauge(
            "leadgate_telegram_last_update_timestamp_seconds",
            "When the bot last received an update (unix time)",
            ["bot"],
            registry=r,
        )

    def reply(self, bot: str, result: str) -> None:
        self.replies.labels(bot, result).inc()
