"""The inbox: what a vendor pushed us, kept durably before we answer it, handled after.

Every push channel (a Telegram webhook, a VK callback, a Meta webhook, Bitrix24 events)
does the same four steps: verify the sender, `Inbox.put` the raw input (durable, and
idempotent on the vendor's own id for it), answer 2xx, and let the inbox worker
(gateway.inbox_worker) hand it to the handler the channel registered. A crash between
put and handling loses nothing: the entry is still pending and is handled after the
restart. A vendor's retry of the same input is a duplicate and changes nothing.

A handler turns one entry into events (pipeline.accept) whose external ids are the
vendor's message ids, so handling an entry twice (after a crash, or when a claim ran
out) replays those events and makes nothing new. It raises Unprocessable for input that
can never be handled (the entry is dead at once, kept for a person to look at), any
other exception for a passing failure (it is tried again with backoff, and is dead
after the attempt budget: `leadgate inbox list --state dead`, `leadgate inbox retry`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.store.base import Store


class InboxState(StrEnum):
    PENDING = "pending"  # waiting to be handled (or being handled, when claimed)
    DONE = "done"  # handled; the key stays so a repeat is a duplicate
    DEAD = "dead"  # could not be handled: kept for a person, until retried


@dataclass(frozen=True, slots=True)
class InboxEntry:
    """One piece of pushed input: (channel, account, key) is its identity."""

    channel: str  # the connector's channel ("telegram")
    account: str  # which of our accounts it came to (a bot's name)
    key: str  # the vendor's id for it (Telegram: update_id)
    body: bytes  # as received
    headers: dict[str, str] = field(default_factory=dict)  # only what handling needs
    # The customer's chat it belongs to, when it has one: entries of one (channel, account,
    # thread) are handled one at a time, in the order kept, so a message retried after a
    # failure is never overtaken by the next one of the same chat. None: no order.
    thread: str | None = None


@dataclass(frozen=True, slots=True)
class InboxItem:
    id: int
    channel: str
    account: str
    key: str
    body: bytes
    headers: dict[str, str]
    state: InboxState
    attempts: int
    received_at: datetime
    next_attempt_at: datetime
    last_error: str | None = None
    claimed_by: str | None = None
    claimed_until: datetime | None = None
    thread: str | None = None


@dataclass(frozen=True, slots=True)
class InboxUpdate:
    """What became of one claimed entry. PENDING: try again at `next_attempt_at`."""

    id: int
    state: InboxState
    error: str | None = None
    next_attempt_at: datetime | None = None
    count_attempt: bool = True


@dataclass(frozen=True, slots=True)
class InboxStats:
    pending: int
    dead: int
    oldest_pending_at: datetime | None


class Unprocessable(Exception):
    """Raised by a handler for an entry that can never be handled (not the vendor's
    format): it goes to the dead state at once, with this as its error."""


InboxHandler = Callable[[InboxItem], Awaitable[None]]


class Inbox:
    """The connectors' door to the inbox: put input, register the handler of a channel."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.handlers: dict[str, InboxHandler] = {}
        self._on_put: list[Callable[[], None]] = []

    def register(self, channel: str, handler: InboxHandler) -> None:
        """Entries of `channel` go to `handler` (one per channel)."""
        if channel in self.handlers:
            raise ValueError(f"the inbox of {channel!r} has a handler already")
        self.handlers[channel] = handler

    def on_put(self, callback: Callable[[], None]) -> None:
        """Called after every put that kept something new (the worker wakes up)."""
        self._on_put.append(callback)

    async def put(
        self,
        entries: Sequence[InboxEntry],
        checkpoint: tuple[str, str] | None = None,
        *,
        now: datetime | None = None,
    ) -> list[bool]:
        """Keep `entries` durably (with `checkpoint`, in one transaction) and return, per
        entry, False for a duplicate. Raises StoreUnavailable when nothing was kept: the
        caller answers 5xx (or backs off) so the vendor sends it again."""
        kept = await self.store.inbox_put(entries, now or datetime.now(UTC), checkpoint)
        if any(kept):
            for callback in self._on_put:
                callback()
        return kept
