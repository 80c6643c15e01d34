"""The store's outbox methods: claim, update, links, retry, stats, purge, the migration."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway.models import Channel, Contact, Lead, LeadEvent, LeadStatus
from gateway.store.base import OutboxUpdate, Plan, PlanAction
from gateway.store.sqlite import SQLiteStore

T0 = datetime(2026, 1, 12, 8, 0, tzinfo=UTC)


async def seed(store: SQLiteStore, n: int) -> list[str]:
    """n leads, each with its lead.created row; returns the lead ids."""
    ids = []
    for i in range(n):
        event = LeadEvent(
            channel=Channel.ORDERS,
            external_id=f"o-{i}",
            occurred_at=T0,
            received_at=T0,
            contact=Contact(phones=(f"+7916000{i:04d}",)),
        )
        lead = Lead(
            id=f"L{i:03d}",
            status=LeadStatus.NEW,
            channel=Channel.ORDERS,
            source_id="STORE",
            contact=event.contact,
            after_hours=False,
            sla_due_at=T0,
            created_at=T0,
            updated_at=T0,
            last_event_at=T0,
        )
        plan = Plan(PlanAction.CREATE, lead=lead)
        receipt = (await store.record(event, (), T0, lambda m, plan=plan: plan)).receipt
        assert receipt.lead_id is not None
        ids.append(receipt.lead_id)
    return ids


async def test_claim_update_links_retry_stats_purge(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    await store.open()
    try:
        leads = await seed(store, 3)
        now = T0 + timedelta(seconds=1)
        items = await store.claim_outbox(now, 2)
        assert [i.lead_id for i in items] == leads[:2]  # oldest first, limited
        assert not any(i.attempted for i in items)  # as they were before the claim
        again = await store.claim_outbox(now, 10)
        assert [i.attempted for i in again] == [True, True, False]
        assert (await store.claim_outbox(T0 - timedelta(days=1), 10)) == []  # none due yet

        a, b, c = again
        await store.update_outbox(
            "bitrix24",
            [
                OutboxUpdate(a.id, "delivered", remote_id="101"),
                OutboxUpdate(
                    b.id, "pending", error="boom", next_attempt_at=now + timedelta(hours=1)
                ),
                OutboxUpdate(c.id, "dead", error="bad field"),
            ],
            now,
        )
        stats = await store.outbox_stats()
        assert (stats.pending, stats.dead, stats.oldest_pending_at) == (1, 1, T0)
        links = await store.lead_links("bitrix24", leads)
        assert links[leads[0]].remote_id == "101" and links[leads[0]].state == "delivered"
        assert links[leads[1]].remote_id is None and links[leads[1]].state == "pending"
        assert (await store.lead_links("webhook", leads))[leads[0]].remote_id is None
        assert await store.claim_outbox(now, 10) == []  # b waits an hour, c is dead

        assert await store.retry_outbox(None, now) == 1  # all dead
        assert await store.retry_outbox([a.id], now) == 0  # delivered: left alone
        assert await store.retry_outbox([b.id], now) == 1  # waiting: made due now
        due = await store.claim_outbox(now, 10)
        assert {i.id for i in due} == {b.id, c.id}
        assert all(i.attempts == 0 and i.attempted for i in due)  # the trace survives retry

        await store.purge_outbox(now + timedelta(seconds=1))
        assert {i.id for i in await store.outbox()} == {b.id, c.id}
        assert (await store.lead_links("bitrix24", leads))[leads[0]].remote_id == "101"
    finally:
        await store.close()


async def test_an_outbox_from_before_the_attempted_column_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE outbox (
            id INTEGER PRIMARY KEY AUTOINCREMENT, lead_id TEXT NOT NULL, event_id TEXT NOT NULL,
            kind TEXT NOT NULL, state TEXT NOT NULL DEFAULT 'pending',
            attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at REAL NOT NULL,
            created_at REAL NOT NULL, last_error TEXT, delivered_at REAL, remote_id TEXT
        );
        INSERT INTO outbox (lead_id, event_id, kind, next_attempt_at, created_at)
        VALUES ('L1', 'E1', 'lead.created', 0, 0);
        """
    )
    conn.commit()
    conn.close()
    store = SQLiteStore(path)
    await store.open()
    try:
        (item,) = await store.claim_outbox(T0, 10)
        assert (item.lead_id, item.attempted) == ("L1", False)
    finally:
        await store.close()
