"""The SQLite store's own outbox behaviour: migrations of older files, claims after a
restart, and the client role a second process (the CLI) uses beside the server.

The portable outbox contract is in tests/store/test_contract_outbox.py; this file is
about SQLite only, and may look at its tables.
"""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.config import load_settings
from gateway.metrics import Metrics
from gateway.models import Channel, Contact, LeadEvent
from gateway.pipeline import Pipeline
from gateway.store.base import OutboxState, OutboxUpdate, StoreUnavailable
from gateway.store.sqlite import SQLiteStore, StoreLocked, StoreRole
from gateway.web import make_pipeline

T0 = datetime(2026, 1, 12, 8, 0, tzinfo=UTC)

OLD_OUTBOX = """
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT, lead_id TEXT NOT NULL, event_id TEXT NOT NULL,
    kind TEXT NOT NULL, state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at REAL NOT NULL,
    created_at REAL NOT NULL, last_error TEXT, delivered_at REAL, remote_id TEXT{extra}
);
INSERT INTO outbox (lead_id, event_id, kind, next_attempt_at, created_at)
VALUES ('L1', 'E1', 'lead.created', 0, 0);
"""


def old_file(path: Path, extra: str = "") -> None:
    conn = sqlite3.connect(path)
    conn.executescript(OLD_OUTBOX.format(extra=extra))
    conn.commit()
    conn.close()


def pipeline_on(store: SQLiteStore, path: Path) -> Pipeline:
    settings = load_settings(None, store={"path": str(path)})
    return make_pipeline(settings, store, Metrics())


def order(n: int) -> LeadEvent:
    return LeadEvent(
        channel=Channel.ORDERS,
        external_id=f"o-{n}",
        occurred_at=T0,
        received_at=T0,
        contact=Contact(phones=(f"+7916000{n:04d}",)),
    )


@pytest.mark.parametrize(
    "extra", ["", ", attempted INTEGER NOT NULL DEFAULT 0"], ids=["first", "attempted"]
)
@pytest.mark.parametrize("role", list(StoreRole))
async def test_an_older_outbox_is_migrated(tmp_path: Path, extra: str, role: StoreRole) -> None:
    path = tmp_path / "old.db"
    old_file(path, extra)
    store = SQLiteStore(path, role=role)
    await store.open()
    try:
        (item,) = await store.claim_outbox(T0, 10, owner="w", lease_seconds=60)
        assert (item.lead_id, item.attempted, item.claimed_by) == ("L1", False, "w")
    finally:
        await store.close()
    columns = {row[1] for row in sqlite3.connect(path).execute("PRAGMA table_info(outbox)")}
    assert {"attempted", "claimed_by", "claimed_until"} <= columns


async def test_claims_left_by_a_dead_process_are_released_when_the_server_starts(
    tmp_path: Path,
) -> None:
    """Only the file's one writer delivers: whatever claim it finds is from a process that
    is gone, so its items are due again at once instead of after the lease."""
    path = tmp_path / "leadgate.db"
    store = SQLiteStore(path)
    await store.open()
    await pipeline_on(store, path).accept(order(1))
    (held,) = await store.claim_outbox(T0, 10, owner="dead-process", lease_seconds=3600)
    await store.close()
    row = sqlite3.connect(path).execute("SELECT claimed_by FROM outbox").fetchone()
    assert row == ("dead-process",)  # durable: it outlived its process

    restarted = SQLiteStore(path)
    await restarted.open()
    try:
        (again,) = await restarted.claim_outbox(T0, 10, owner="new-process", lease_seconds=60)
        assert again.id == held.id and again.attempted  # the trace of the first try stays
    finally:
        await restarted.close()


async def test_the_client_role_works_beside_a_running_server(tmp_path: Path) -> None:
    path = tmp_path / "leadgate.db"
    server = SQLiteStore(path)
    await server.open()
    client = SQLiteStore(path, role=StoreRole.CLIENT)
    try:
        await client.open()  # no lock taken: the server holds it
        with pytest.raises(StoreLocked):
            second_server = SQLiteStore(path)
            await second_server.open()
        pipeline = pipeline_on(server, path)
        receipt = await pipeline.accept(order(1))
        assert receipt.lead_id is not None
        lead = await client.get_lead(receipt.lead_id)  # the server's commit, read at once
        assert lead is not None and [e.id for e in lead.events] == [receipt.event_id]
        with pytest.raises(StoreUnavailable, match="does not record"):
            await client.record(order(2), (), T0, lambda match: None)  # type: ignore[arg-type,return-value]
        await client.ping()

        # A client write is one transaction while the server keeps committing.
        (item,) = await server.claim_outbox(T0, 10, owner="server", lease_seconds=60)
        await server.update_outbox(
            "bitrix24", [OutboxUpdate(item.id, OutboxState.DEAD, error="x")], T0, owner="server"
        )
        writes = [pipeline.accept(order(n)) for n in range(10, 30)]
        retried, *receipts = await asyncio.gather(client.retry_outbox(None, T0), *writes)
        assert retried == 1
        assert len({r.event_id for r in receipts}) == 20
        assert (await server.outbox_stats()).pending == 21
        assert (await client.outbox(OutboxState.PENDING, 100))[0].attempts == 0
    finally:
        await client.close()
        await server.close()


async def test_the_client_role_never_creates_a_store(tmp_path: Path) -> None:
    client = SQLiteStore(tmp_path / "missing.db", role=StoreRole.CLIENT)
    with pytest.raises(StoreUnavailable, match="no store"):
        await client.open()
    assert not (tmp_path / "missing.db").exists()
    # A file the server has only just created, without its tables yet: not touched either.
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    with pytest.raises(StoreUnavailable, match="no leadgate tables"):
        await SQLiteStore(empty, role=StoreRole.CLIENT).open()
    tables = sqlite3.connect(empty).execute("SELECT name FROM sqlite_master").fetchall()
    assert tables == []


async def test_claims_in_one_process_never_overlap_while_their_write_waits(
    tmp_path: Path,
) -> None:
    """The server answers the claim's decision on the loop and writes through the group
    commit: a claim whose write is still queued must already hide its items."""
    path = tmp_path / "leadgate.db"
    store = SQLiteStore(path, max_batch=1)
    await store.open()
    try:
        pipeline = pipeline_on(store, path)
        for n in range(6):
            await pipeline.accept(order(n))
        started = [
            asyncio.ensure_future(
                store.claim_outbox(T0 + timedelta(seconds=1), 2, owner=f"w{n}", lease_seconds=60)
            )
            for n in range(4)
        ]
        batches = await asyncio.gather(*started)
        ids = [item.id for batch in batches for item in batch]
        assert len(ids) == len(set(ids)) == 6
        owners = {
            item_id: owner
            for item_id, owner in sqlite3.connect(path).execute("SELECT id, claimed_by FROM outbox")
        }
        assert all(owners[i.id] == f"w{n}" for n, batch in enumerate(batches) for i in batch)
    finally:
        await store.close()
