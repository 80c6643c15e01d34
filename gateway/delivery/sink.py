"""The Sink protocol: `deliver(batch) -> results`, idempotent per lead and per event.

The worker claims outbox items, hands them to a sink as Deliveries and records what each
Result says. Sinks never raise for a delivery problem: they answer per item, so a batch
where half the leads got through keeps those, and the worker alone decides about retries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from gateway.models import EventRecord, Lead
from gateway.redact import redact
from gateway.store.base import OutboxItem, OutboxState


class Status(StrEnum):
    DELIVERED = "delivered"  # took effect (remote_id: the CRM's id, when there is one)
    SKIPPED = "skipped"  # nothing to do by design (JUNK not sent): done, counted apart
    RETRY = "retry"  # transient failure: counts as an attempt, backs off
    DEAD = "dead"  # permanent failure: to the dead-letter queue now
    WAIT = "wait"  # not yet possible (a merge whose lead is not in the CRM): no attempt used
    THROTTLE = "throttle"  # the sink asked us to slow down: nothing was done, no attempt used
    HALT = "halt"  # credentials refused: stop delivering and alert, no attempt used


@dataclass(frozen=True, slots=True)
class Delivery:
    item: OutboxItem
    lead: Lead
    event: EventRecord | None  # the event the item is about (the merged one, or the first)
    # The lead's id in this sink when its lead.created went through (merges comment there).
    lead_remote_id: str | None = None
    # State of the lead's own lead.created item (None: gone, purged after delivery).
    lead_state: OutboxState | None = None
    # `lead` comes without its events (a merge carries its own event, never the history);
    # this says how many there are.
    event_count: int = 0

    @property
    def maybe_sent(self) -> bool:
        """An earlier attempt may have reached the sink: look before creating again."""
        return self.item.attempted


@dataclass(frozen=True, slots=True)
class Result:
    outbox_id: int
    status: Status
    remote_id: str | None = None
    error: str | None = None
    retry_after: float | None = None  # seconds, when the sink said how long to wait


class Sink(Protocol):
    name: str
    # True when the sink acts outside this process: the worker then flags each item as
    # attempted (durably) before deliver(), so a retry knows to look before it creates.
    marks_attempts: bool

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def ready(self) -> None:
        """Return when a request could go out now (rate limits): claim only after this."""

    async def deliver(self, batch: Sequence[Delivery]) -> list[Result]:
        """One Result per Delivery, in any order. Idempotent: a Delivery seen before (even
        one whose answer was lost) must not take effect twice."""


def masked(text: str, *secrets: str | None) -> str:
    """`text` with every secret replaced: error strings carry URLs, URLs carry secrets, and
    an error that echoes a request path carries a piece of one. The given secrets go whole;
    then every registered secret (gateway.redact: the sinks register their URLs' parts)
    in whatever spelling it was echoed."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return redact(text)
