"""What a test may know about stored state: the Store protocol, never the tables.

A test that runs the gateway in-process asks the app's own store (`app[STORE]`); a test
whose gateway is another process opens the file with a store in the client role, as the
CLI does. The helpers page through the protocol's listings to see everything.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

from gateway.models import Channel, Lead
from gateway.store.base import (
    EventQuery,
    LeadQuery,
    OutboxItem,
    QuarantineEntry,
    Store,
    StoredEvent,
)
from gateway.store.sqlite import SQLiteStore, StoreRole

T = TypeVar("T")
PAGE = 500


@asynccontextmanager
async def client_store(path: Path) -> AsyncIterator[Store]:
    """The store at `path` opened beside its server (no lock taken, reads only here)."""
    store = SQLiteStore(path, role=StoreRole.CLIENT)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def read(path: Path, work: Callable[[Store], Awaitable[T]]) -> T:
    async with client_store(path) as store:
        return await work(store)


async def all_leads(store: Store, query: LeadQuery | None = None) -> list[Lead]:
    """Every lead matching `query` (its limit is the page size), newest first."""
    query = query or LeadQuery(limit=PAGE)
    out: list[Lead] = []
    while True:
        page = await store.list_leads(query)
        out += page
        if len(page) < query.limit:
            return out
        query = LeadQuery(
            channel=query.channel,
            status=query.status,
            assigned_to=query.assigned_to,
            since=query.since,
            before_id=page[-1].id,
            limit=query.limit,
        )


async def all_events(
    store: Store, channel: Channel | None = None, external_id: str | None = None
) -> list[StoredEvent]:
    """Every stored event (kept ones too), oldest first."""
    out: list[StoredEvent] = []
    after: str | None = None
    while True:
        page = await store.list_events(
            EventQuery(channel=channel, external_id=external_id, after_id=after, limit=PAGE)
        )
        out += page
        if len(page) < PAGE:
            return out
        after = page[-1].record.id


async def all_outbox(store: Store) -> list[OutboxItem]:
    out: list[OutboxItem] = []
    while True:
        page = await store.outbox(None, PAGE, after_id=out[-1].id if out else 0)
        out += page
        if len(page) < PAGE:
            return out


async def all_quarantine(store: Store, channel: str | None = None) -> list[QuarantineEntry]:
    out: list[QuarantineEntry] = []
    while True:
        page = await store.list_quarantine(channel, PAGE, after_id=out[-1].id if out else 0)
        out += page
        if len(page) < PAGE:
            return out


async def outbox_of(path: Path) -> list[OutboxItem]:
    """The outbox of the store at `path`, oldest first."""
    return await read(path, all_outbox)
