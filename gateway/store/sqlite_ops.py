"""The SQLite store's side of what ops watch and decide: intake counts per channel, the
open leads' counts for the /ops page, and the quarantine's states.

Intake is a rollup written with the events (see `intake_rows`), not a scan of the events:
the group commit adds one upsert per (channel, 5-minute bucket, outcome) in a batch — a
batch of hundreds of form posts costs a handful of rows — and the /ops page reads at most
a few hundred small rows whatever the traffic. An index on the events' time would cost an
insert per event instead, and every refresh would scan a day of events on the event loop.
The rollup grows by at most one row per channel and outcome every 5 minutes; it is small
beside the events it counts, so it is kept as long as they are.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import orjson
from ulid import ULID

from gateway.models import Channel
from gateway.store.base import (
    INTAKE_BUCKET_SECONDS,
    IntakeCount,
    OpenLeadStats,
    QuarantineEntry,
    QuarantineState,
)
from gateway.store.sqlite_queries import from_epoch, to_epoch

T = TypeVar("T")

UPSERT_INTAKE = (
    "INSERT INTO intake (channel, bucket, outcome, count, last_at) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT (channel, bucket, outcome) DO UPDATE SET count = count + excluded.count,"
    " last_at = MAX(last_at, excluded.last_at)"
)

_QUARANTINE_ADDED = (
    ("state", "TEXT NOT NULL DEFAULT 'kept'"),
    ("note", "TEXT"),
    ("updated_at", "REAL"),
)
_QUARANTINE_INDEX = "CREATE INDEX IF NOT EXISTS quarantine_state ON quarantine (state, id)"


def intake_rows(events: Iterable[Sequence[Any]]) -> list[tuple[str, int, str, int, float]]:
    """The intake upserts for a batch of event rows (id, lead_id, channel, external_id,
    received_at, outcome, ...): one per (channel, bucket, outcome)."""
    counts: dict[tuple[str, int, str], list[float]] = {}
    for row in events:
        channel, received_at, outcome = row[2], float(row[4]), row[5]
        bucket = int(received_at // INTAKE_BUCKET_SECONDS) * INTAKE_BUCKET_SECONDS
        entry = counts.setdefault((channel, bucket, outcome), [0, received_at])
        entry[0] += 1
        entry[1] = max(entry[1], received_at)
    return [(ch, b, out, int(n), last) for (ch, b, out), (n, last) in counts.items()]


# --- migration ---------------------------------------------------------------------------------


def ops_needs_migration(db: sqlite3.Connection) -> bool:
    """A file of an older version: quarantine without its state, or no intake table."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(quarantine)")}
    if any(name not in columns for name, _ in _QUARANTINE_ADDED):
        return True
    found = db.execute(
        "SELECT COUNT(*) FROM sqlite_master WHERE name IN ('intake', 'quarantine_state')"
    ).fetchone()
    return int(found[0]) < 2


def migrate_ops(db: sqlite3.Connection) -> None:
    """Bring an older file up to date (after SCHEMA ran): the quarantine's state columns and
    index, and the intake rollup filled once from the events already stored."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(quarantine)")}
    for name, decl in _QUARANTINE_ADDED:
        if name not in columns:
            db.execute(f"ALTER TABLE quarantine ADD COLUMN {name} {decl}")
    db.execute(_QUARANTINE_INDEX)
    if db.execute("SELECT 1 FROM intake LIMIT 1").fetchone() is None:
        db.execute(
            "INSERT INTO intake (channel, bucket, outcome, count, last_at)"
            f" SELECT channel, CAST(received_at / {INTAKE_BUCKET_SECONDS} AS INTEGER)"
            f" * {INTAKE_BUCKET_SECONDS}, outcome, COUNT(*), MAX(received_at)"
            " FROM events GROUP BY 1, 2, 3"
        )


# --- reads -------------------------------------------------------------------------------------

_QUARANTINE_COLUMNS = (
    "id, channel, reason, received_at, headers, body, state, note, updated_at FROM quarantine"
)


def quarantine_rows(
    db: sqlite3.Connection, where: str, params: Sequence[Any]
) -> list[QuarantineEntry]:
    return [
        QuarantineEntry(
            id=r[0],
            channel=r[1],
            reason=r[2],
            received_at=from_epoch(r[3]),
            headers=orjson.loads(r[4]),
            body=bytes(r[5]),
            state=QuarantineState(r[6]),
            note=r[7],
            updated_at=from_epoch(r[8]) if r[8] is not None else None,
        )
        for r in db.execute(f"SELECT {_QUARANTINE_COLUMNS} {where}", tuple(params))
    ]


def list_quarantine(
    db: sqlite3.Connection,
    channel: str | None,
    limit: int,
    after_id: int,
    state: QuarantineState | None = None,
) -> list[QuarantineEntry]:
    where = "WHERE id > ?"
    params: list[Any] = [after_id]
    if channel is not None:
        where += " AND channel = ?"
        params.append(channel)
    if state is not None:
        where += " AND state = ?"
        params.append(QuarantineState(state).value)
    return quarantine_rows(db, where + " ORDER BY id LIMIT ?", [*params, limit])


def read_intake(db: sqlite3.Connection, since: datetime) -> list[IntakeCount]:
    start = int(to_epoch(since) // INTAKE_BUCKET_SECONDS) * INTAKE_BUCKET_SECONDS
    found = [
        IntakeCount(from_epoch(bucket), channel.value, outcome, int(count))
        for channel in Channel
        # One range of the primary key per channel: a few hundred rows, whatever the history.
        for bucket, outcome, count in db.execute(
            "SELECT bucket, outcome, count FROM intake WHERE channel = ? AND bucket >= ?",
            (channel.value, start),
        )
    ]
    found.sort(key=lambda c: (c.bucket_start, c.channel, c.outcome))
    return found


def read_last_events(db: sqlite3.Connection) -> dict[str, datetime]:
    out: dict[str, datetime] = {}
    for channel in Channel:
        (last,) = db.execute(
            "SELECT MAX(last_at) FROM intake WHERE channel = ?1 AND bucket ="
            " (SELECT MAX(bucket) FROM intake WHERE channel = ?1)",
            (channel.value,),
        ).fetchone()
        if last is not None:
            out[channel.value] = from_epoch(last)
    return out


def read_open_lead_stats(db: sqlite3.Connection, since: datetime, now: datetime) -> OpenLeadStats:
    # Lead ids are ULIDs, ordered by creation time: the smallest id of `since` bounds the
    # scan of the (status, id) index to the window instead of every NEW lead ever.
    floor = str(ULID.from_timestamp(to_epoch(since)))[:10] + "0" * 16
    row = db.execute(
        "SELECT COUNT(*), COALESCE(SUM(assigned_to IS NULL), 0),"
        " COALESCE(SUM((julianday(json_extract(doc, '$.sla_due_at')) - 2440587.5) * 86400.0"
        " < ?), 0)"
        " FROM leads WHERE status = 'NEW' AND id >= ? AND created_at >= ?",
        (to_epoch(now), floor, to_epoch(since)),
    ).fetchone()
    return OpenLeadStats(new=int(row[0]), unassigned=int(row[1]), overdue=int(row[2]))


# --- the Store methods -------------------------------------------------------------------------


class OpsMethods:
    """Mixed into SQLiteStore, which provides `_db()`, `write()`, `_transact()`."""

    def _db(self) -> sqlite3.Connection:
        raise NotImplementedError

    @property
    def _is_client(self) -> bool:
        raise NotImplementedError

    async def write(self, statements: Sequence[tuple[str, tuple[Any, ...]]]) -> None:
        raise NotImplementedError

    async def _transact(self, work: Callable[[sqlite3.Connection], T]) -> T:
        raise NotImplementedError

    async def list_quarantine(
        self,
        channel: str | None = None,
        limit: int = 100,
        *,
        after_id: int = 0,
        state: QuarantineState | None = None,
    ) -> list[QuarantineEntry]:
        return list_quarantine(self._db(), channel, limit, after_id, state)

    async def get_quarantine(self, entry_id: int) -> QuarantineEntry | None:
        found = quarantine_rows(self._db(), "WHERE id = ?", [entry_id])
        return found[0] if found else None

    async def mark_quarantine(
        self,
        entry_id: int,
        state: QuarantineState,
        note: str | None,
        at: datetime,
        *,
        expect: QuarantineState | None = None,
    ) -> bool:
        sql = "UPDATE quarantine SET state = ?, note = ?, updated_at = ? WHERE id = ?"
        params: tuple[Any, ...] = (QuarantineState(state).value, note, to_epoch(at), entry_id)
        if expect is not None:
            sql += " AND state = ?"
            params += (QuarantineState(expect).value,)
        return await self._change(sql, params)

    async def delete_quarantine(self, entry_id: int) -> bool:
        return await self._change("DELETE FROM quarantine WHERE id = ?", (entry_id,))

    async def _change(self, sql: str, params: tuple[Any, ...]) -> bool:
        """One conditional write; whether it changed a row."""
        if self._is_client:
            return await self._transact(lambda db: db.execute(sql, params).rowcount > 0)
        # The server writes through its commit queue and hears no row count: it reads the
        # condition first. The WHERE keeps the write right whatever ran in between.
        probe = "SELECT COUNT(*) FROM quarantine WHERE " + sql.split(" WHERE ", 1)[1]
        (matched,) = self._db().execute(probe, params[-(probe.count("?")) :]).fetchone()
        if not matched:
            return False
        await self.write([(sql, params)])
        return True

    async def intake(self, since: datetime) -> list[IntakeCount]:
        return read_intake(self._db(), since)

    async def last_event_at(self) -> dict[str, datetime]:
        return read_last_events(self._db())

    async def open_lead_stats(self, since: datetime, now: datetime) -> OpenLeadStats:
        return read_open_lead_stats(self._db(), since, now)
