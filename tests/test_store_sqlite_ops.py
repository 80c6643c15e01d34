"""SQLite specifics of what ops watch: a file of an older version (no intake rollup, no
quarantine states) is brought up to date by the server and by the CLI's client role, with
the history of the events already stored; a database directory is never made up."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest

from gateway.config import load_settings
from gateway.metrics import Metrics
from gateway.models import Channel, Contact, LeadEvent
from gateway.store.base import Quarantined, QuarantineState, StoreUnavailable
from gateway.store.sqlite import SQLiteStore, StoreRole
from gateway.web import make_pipeline
from tests.store.test_contract_outbox import T0, order


async def _fill(path: Path) -> None:
    settings = load_settings(None, store={"path": str(path)})
    store = SQLiteStore(path)
    await store.open()
    pipeline = make_pipeline(settings, store, Metrics())
    await pipeline.accept(order(1, at=T0))
    await pipeline.accept(order(2, at=T0 + timedelta(minutes=6)))
    await pipeline.accept(
        LeadEvent(
            channel=Channel.PHONE,
            external_id="call-1",
            occurred_at=T0,
            received_at=T0,
            contact=Contact(phones=("+79035550000",)),
        )
    )
    await store.quarantine(Quarantined("email", "malformed", b"x", {}))
    await store.close()


def _make_old(path: Path) -> None:
    """What the previous version left: the same data, without what this one added."""
    db = sqlite3.connect(path)
    db.executescript(
        """
        DROP TABLE intake;
        DROP INDEX quarantine_state;
        ALTER TABLE quarantine DROP COLUMN state;
        ALTER TABLE quarantine DROP COLUMN note;
        ALTER TABLE quarantine DROP COLUMN updated_at;
        """
    )
    db.close()


@pytest.mark.parametrize("role", [StoreRole.SERVER, StoreRole.CLIENT])
async def test_an_older_file_gains_its_intake_history_and_quarantine_states(
    tmp_path: Path, role: StoreRole
) -> None:
    path = tmp_path / "leadgate.db"
    await _fill(path)
    _make_old(path)
    store = SQLiteStore(path, role=role)
    await store.open()
    try:
        counts = await store.intake(T0 - timedelta(hours=1))
        assert [(c.channel, c.outcome, c.count) for c in counts] == [
            ("orders", "created", 1),
            ("phone", "created", 1),
            ("orders", "created", 1),
        ]
        assert (await store.last_event_at())["orders"] == T0 + timedelta(minutes=6)
        (entry,) = await store.list_quarantine()
        assert entry.state is QuarantineState.KEPT
        assert await store.mark_quarantine(entry.id, QuarantineState.RELEASE, None, T0)
    finally:
        await store.close()
    # Opened again: migrated once, not counted twice.
    again = SQLiteStore(path)
    await again.open()
    try:
        assert sum(c.count for c in await again.intake(T0 - timedelta(hours=1))) == 3
    finally:
        await again.close()


async def test_a_missing_directory_is_an_error_not_a_new_database(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "typo" / "leadgate.db")
    with pytest.raises(StoreUnavailable, match="typo does not exist"):
        await store.open()
    assert not (tmp_path / "typo").exists()
