"""The SQLite store's one-time data migrations, on files as earlier releases left them."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.web import create_app
from tests.test_orders_scoped import MARKET, SHOP, Client, order, settings


async def test_orders_stored_before_the_scoping_still_replay(
    aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    # A database as the previous release left it: order "1001" of token "shop" stored with
    # external_id "1001" and replay key "orders\x1f1001", and no migration marker.
    first = await aiohttp_client(create_app(settings(tmp_path)))
    resp = await first.post("/v1/orders", json=order(1001, "+79161234567"), headers=SHOP)
    original = await resp.json()
    await first.close()
    db = sqlite3.connect(tmp_path / "leadgate.db")
    with db:
        db.execute("UPDATE events SET external_id = '1001' WHERE id = ?", (original["event_id"],))
        db.execute("DELETE FROM replay_keys WHERE key = 'orders' || char(31) || 'shop:1001'")
        db.execute(
            "INSERT INTO replay_keys (key, event_id) VALUES ('orders' || char(31) || '1001', ?)",
            (original["event_id"],),
        )
        db.execute("DROP TABLE migrations")
    db.close()

    client: Client = await aiohttp_client(create_app(settings(tmp_path)))
    retry = await client.post("/v1/orders", json=order("1001", "+79161234567"), headers=SHOP)
    assert retry.status == 200
    assert (await retry.json())["event_id"] == original["event_id"]
    other = await client.post("/v1/orders", json=order(1001, "+79031234567"), headers=MARKET)
    assert other.status == 201


async def test_an_inbox_made_before_threads_gets_its_column_and_keeps_its_entries(
    tmp_path: Path,
) -> None:
    from datetime import UTC, datetime

    from gateway.inbox import InboxEntry
    from gateway.store.sqlite import SQLiteStore

    path = tmp_path / "leadgate.db"
    store = SQLiteStore(path)
    await store.open()
    now = datetime.now(UTC)
    await store.inbox_put([InboxEntry("telegram", "shop", "1", b"{}")], now)
    await store.close()
    db = sqlite3.connect(path)
    with db:  # the inbox as the previous release made it: no thread column, no index
        db.execute("DROP INDEX inbox_thread")
        db.execute("ALTER TABLE inbox DROP COLUMN thread")
    db.close()

    store = SQLiteStore(path)
    await store.open()
    try:
        await store.inbox_put([InboxEntry("telegram", "shop", "2", b"{}", thread="42")], now)
        items = await store.inbox_claim(now, 10, owner="a", lease_seconds=60)
        assert [(i.key, i.thread) for i in items] == [("1", None), ("2", "42")]
    finally:
        await store.close()


async def test_leads_made_before_count_days_still_count_by_when_they_came(
    tmp_path: Path,
) -> None:
    from datetime import UTC, datetime

    from gateway.store.sqlite import SQLiteStore
    from tests.store.contract import make_event, record, rr

    path = tmp_path / "leadgate.db"
    store = SQLiteStore(path)
    await store.open()
    now = datetime.now(UTC)
    await record(
        store, make_event("old-1", phone="+79030000001", at=now), assignment=rr("anna", at=now)
    )
    await store.close()
    db = sqlite3.connect(path)
    with db:  # the leads table as the previous release made it
        db.execute("ALTER TABLE leads DROP COLUMN count_day")
    db.close()

    store = SQLiteStore(path)
    await store.open()
    try:
        r = await record(
            store,
            make_event("new-1", phone="+79030000002", at=now),
            assignment=rr("anna", "boris", at=now),
        )
        assert r.assignment is not None and r.assignment.seller_id == "boris"
        assert await store.assignment_counts(now.date()) == {"anna": 1, "boris": 1}
    finally:
        await store.close()
