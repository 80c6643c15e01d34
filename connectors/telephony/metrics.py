"""Telephony counters, on the app's own registry (see gateway.metrics)."""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Counter

from gateway.channels import StatusValue
from gateway.i18n import N_
from gateway.texts import Text


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

    def status(self, providers: Sequence[str]) -> Mapping[str, StatusValue]:
        """The connector's lines on the /ops page (keys are msgids: translated there)."""
        last_error: StatusValue = None
        if self.last_problem is not None:
            provider, detail, at = self.last_problem
            last_error = Text(N_("{provider}: {detail} ({at})"), provider=provider,
                              detail=detail, at=at)  # fmt: skip
        return {
            N_("Провайдеры"): ", ".join(providers),
            N_("Вебхуков принято с запуска"): self.results["accepted"] + self.results["ignored"],
            N_("Отклонено (подпись, токен)"): self.results["unauthorized"],
            N_("Нечитаемых (в карантине)"): self.results["invalid"],
            N_("Последний вебхук"): self.last_at,
            N_("Последняя ошибка"): last_error,
        }
