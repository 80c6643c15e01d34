"""The Store protocol: what the pipeline needs from persistence, whatever backs it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from gateway.models import Channel, EventRecord, Lead, LeadEvent, LeadStatus, Receipt


class StoreUnavailable(RuntimeError):
    """A write could not be made durable; nothing in it was acknowledged. Callers answer 503
    (or back off), never 2xx."""


@dataclass(frozen=True, slots=True)
class PersonMatch:
    """What the store knows of the person behind an event, found by identity keys."""

    lead_id: str | None = None  # the lead this event joins: an open one in the window, or a reply's
    matched_on: str | None = None  # "phone", "email", "vk", "reply", ...
    previous_owner: str | None = None  # seller of the person's most recent real lead, any age


@dataclass(frozen=True, slots=True)
class Plan:
    """The pipeline's decision for one event, taken with the match in hand.

    create: `lead` is the new lead. merge: join `lead_id`. keep: store the event, make no lead.
    """

    action: str  # "create" | "merge" | "keep"
    lead: Lead | None = None
    lead_id: str | None = None
    matched_on: str | None = None
    # merge: the reaction deadline this contact asks for. It replaces the lead's when that
    # one had already passed when the contact came (a customer calling again a week later
    # needs a callback again); an earlier deadline still running stays.
    sla_due_at: datetime | None = None


Planner = Callable[[PersonMatch], Plan]


@dataclass(frozen=True, slots=True)
class LeadQuery:
    channel: Channel | None = None
    status: LeadStatus | None = None
    assigned_to: str | None = None
    since: datetime | None = None
    before_id: str | None = None  # paging cursor: leads older than this id
    limit: int = 50


# What an outbox row asks a sink to do; written by the store, read by the sinks.
KIND_CREATED = "lead.created"
KIND_MERGED = "lead.merged"


@dataclass(frozen=True, slots=True)
class OutboxItem:
    id: int
    lead_id: str
    event_id: str
    kind: str  # KIND_CREATED | KIND_MERGED
    state: str  # "pending" | "delivered" | "dead"
    attempts: int
    next_attempt_at: datetime
    created_at: datetime
    last_error: str | None = None
    delivered_at: datetime | None = None
    remote_id: str | None = None  # the sink's id for what was delivered (CRM lead/comment id)
    attempted: bool = False  # a delivery attempt was started before (it may have landed)


# --- outbox (delivery) ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OutboxUpdate:
    """What became of one claimed item; the worker writes a batch of these in one go.

    state "delivered": done (`remote_id` kept; for lead.created also as the lead's link).
    state "pending": try again at `next_attempt_at`. state "dead": to the dead-letter queue.
    `count_attempt` adds one to attempts; `attempted` (when not None) resets the flag that
    says an attempt may have reached the sink (False when the sink certainly saw nothing).
    """

    id: int
    state: str
    error: str | None = None
    remote_id: str | None = None
    next_attempt_at: datetime | None = None
    count_attempt: bool = True
    attempted: bool | None = None


@dataclass(frozen=True, slots=True)
class OutboxStats:
    pending: int
    dead: int
    oldest_pending_at: datetime | None  # created_at of the oldest pending item


@dataclass(frozen=True, slots=True)
class DeliveryView:
    """What a sink needs for one outbox item: the lead *without* its history (a person who
    posts a thousand times has a thousand events; no delivery carries them), the one event
    the item is about, and how many events the lead has."""

    lead: Lead  # events == ()
    event: EventRecord | None  # None when the item's event is not on this lead
    event_count: int


@dataclass(frozen=True, slots=True)
class LeadLink:
    """Where a lead stands with a sink: its lead.created item's state and the remote id."""

    state: str | None  # None when the lead.created row is gone (purged after delivery)
    remote_id: str | None


@dataclass(frozen=True, slots=True)
class Quarantined:
    """Input that was authentic but could not be made into an event: kept, not dropped."""

    channel: str
    reason: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


class Store(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise if the store cannot serve; for /readyz."""

    async def record(
        self,
        event: LeadEvent,
        keys: Sequence[str],
        since: datetime,
        plan: Planner,
        checkpoint: tuple[str, str] | None = None,
    ) -> Receipt:
        """Store `event` durably and return its receipt; the one write path.

        Atomically with respect to other record() calls: if (channel, external_id) or the
        event's idempotency key was seen, return the original receipt as `replayed` (after it
        is durable). Otherwise find the person by `keys` (an open lead is one with status NEW
        and last event at or after `since`), call `plan` with the match, and persist the lead,
        the event and an outbox row in one transaction before returning. A `checkpoint`
        (name, value) — a poller's position — is saved in that same transaction, so a crash
        can neither skip the event nor take it twice.
        """

    async def get_lead(self, lead_id: str) -> Lead | None: ...

    async def delivery_view(self, lead_id: str, event_id: str) -> DeliveryView | None:
        """The lead without its events, its event `event_id`, and its event count; None
        when there is no such lead. Costs the same for a lead of one event or of 10,000."""

    async def list_leads(self, query: LeadQuery) -> list[Lead]:
        """Newest first, without events (use get_lead for those)."""

    async def assignment_counts(self, since: datetime) -> dict[str, int]:
        """Leads assigned per seller since a moment, to seed fair round robin."""

    async def quarantine(
        self, item: Quarantined, checkpoint: tuple[str, str] | None = None
    ) -> None: ...

    async def save_checkpoint(self, name: str, value: str) -> None:
        """Durably move a poller's position (for input that made no event)."""

    async def get_checkpoint(self, name: str) -> str | None: ...

    async def outbox(self, state: str | None = None, limit: int = 100) -> list[OutboxItem]: ...

    # --- outbox (delivery) ----------------------------------------------------------------

    async def claim_outbox(
        self, now: datetime, limit: int, *, mark: bool = True
    ) -> list[OutboxItem]:
        """Pending items due at `now`, oldest first. With `mark`, each is durably flagged as
        attempted before this returns (the items keep their previous flag), so a crash while
        the sink works leaves a trace that makes the next attempt look before it creates."""

    async def update_outbox(self, sink: str, updates: Sequence[OutboxUpdate], at: datetime) -> None:
        """Record the outcomes of claimed items, all in one transaction."""

    async def lead_links(self, sink: str, lead_ids: Sequence[str]) -> dict[str, LeadLink]:
        """For merges: whether each lead reached `sink`, and as which remote id."""

    async def retry_outbox(self, ids: Sequence[int] | None, now: datetime) -> int:
        """Make dead (or waiting) items due now with fresh attempts; None = all dead ones."""

    async def outbox_stats(self) -> OutboxStats: ...

    async def purge_outbox(self, delivered_before: datetime) -> None:
        """Forget delivered items older than a moment (lead links are kept)."""
