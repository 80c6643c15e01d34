"""SQL read helpers and outbox statements, shared by the store and the CLI.

The CLI opens the database file on its own (read-only for `leads`, one short write
transaction for `outbox retry`) while the gateway may be running; both use these.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from gateway.models import EventRecord, Lead
from gateway.store.base import LeadQuery, OutboxItem, OutboxStats, OutboxUpdate, Quarantined


def to_epoch(dt: datetime) -> float:
    return dt.timestamp()


def from_epoch(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def open_reader(path: Path | str, *, read_only: bool = False) -> sqlite3.Connection:
    uri = f"file:{Path(path).resolve()}{'?mode=ro' if read_only else ''}"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout=5000")
    conn.execute("PRAGMA query_only=1")
    return conn


def read_lead(db: sqlite3.Connection, lead_id: str) -> Lead | None:
    row = db.execute("SELECT doc FROM leads WHERE id = ?", (lead_id,)).fetchone()
    if row is None:
        return None
    lead = Lead.model_validate_json(row[0])
    events = tuple(
        EventRecord.model_validate(orjson.loads(doc)["record"])
        for (doc,) in db.execute("SELECT doc FROM events WHERE lead_id = ? ORDER BY id", (lead_id,))
    )
    return lead.model_copy(update={"events": events})


def list_leads(db: sqlite3.Connection, query: LeadQuery) -> list[Lead]:
    where: list[str] = []
    params: list[Any] = []
    if query.channel is not None:
        where.append("channel = ?")
        params.append(query.channel.value)
    if query.status is not None:
        where.append("status = ?")
        params.append(query.status.value)
    if query.assigned_to is not None:
        where.append("assigned_to = ?")
        params.append(query.assigned_to)
    if query.since is not None:
        where.append("created_at >= ?")
        params.append(to_epoch(query.since))
    if query.before_id is not None:
        where.append("id < ?")
        params.append(query.before_id)
    sql = "SELECT doc FROM leads"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY id DESC LIMIT ?"
    params.append(query.limit)
    return [Lead.model_validate_json(doc) for (doc,) in db.execute(sql, params)]


def assigned_since(db: sqlite3.Connection, since: float) -> tuple[dict[str, int], int]:
    """Leads per seller created since an epoch, and the number of assigned leads created
    before it (both read from the seller index alone)."""
    counts: dict[str, int] = {}
    earlier = 0
    for seller, recent, older in db.execute(
        "SELECT assigned_to, SUM(created_at >= ?), SUM(created_at < ?) FROM leads"
        " WHERE assigned_to IS NOT NULL GROUP BY assigned_to",
        (since, since),
    ):
        if recent:
            counts[seller] = int(recent)
        earlier += int(older)
    return counts, earlier


def list_quarantine(db: sqlite3.Connection, limit: int) -> list[Quarantined]:
    rows = db.execute(
        "SELECT channel, reason, headers, body FROM quarantine ORDER BY id LIMIT ?", (limit,)
    )
    return [
        Quarantined(channel, reason, bytes(body), orjson.loads(headers))
        for channel, reason, headers, body in rows
    ]


def list_outbox(db: sqlite3.Connection, state: str | None, limit: int) -> list[OutboxItem]:
    if state is None:
        return outbox_rows(db, " ORDER BY id LIMIT ?", (limit,))
    return outbox_rows(db, " WHERE state = ? ORDER BY id LIMIT ?", (state, limit))


# --- outbox (delivery): statements shared by the store and the CLI -------------------------


def migrate_outbox(db: sqlite3.Connection) -> None:
    """Columns the outbox gained after its first release (CREATE IF NOT EXISTS keeps old tables)."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(outbox)")}
    if "attempted" not in columns:
        db.execute("ALTER TABLE outbox ADD COLUMN attempted INTEGER NOT NULL DEFAULT 0")


def outbox_rows(db: sqlite3.Connection, tail: str, params: tuple[Any, ...]) -> list[OutboxItem]:
    sql = (
        "SELECT id, lead_id, event_id, kind, state, attempts, next_attempt_at, created_at,"
        " last_error, delivered_at, remote_id, attempted FROM outbox" + tail
    )
    return [
        OutboxItem(
            id=r[0],
            lead_id=r[1],
            event_id=r[2],
            kind=r[3],
            state=r[4],
            attempts=r[5],
            next_attempt_at=from_epoch(r[6]),
            created_at=from_epoch(r[7]),
            last_error=r[8],
            delivered_at=from_epoch(r[9]) if r[9] is not None else None,
            remote_id=r[10],
            attempted=bool(r[11]),
        )
        for r in db.execute(sql, params)
    ]


def outbox_update_statements(
    sink: str, updates: Sequence[OutboxUpdate], at: datetime
) -> list[tuple[str, tuple[Any, ...]]]:
    out: list[tuple[str, tuple[Any, ...]]] = []
    for u in updates:
        step = 1 if u.count_attempt else 0
        flag = None if u.attempted is None else int(u.attempted)
        if u.state == "delivered":
            out.append(
                (
                    "UPDATE outbox SET state = 'delivered', delivered_at = ?, remote_id = ?,"
                    " last_error = NULL, attempts = attempts + ? WHERE id = ?",
                    (to_epoch(at), u.remote_id, step, u.id),
                )
            )
            if u.remote_id is not None:
                out.append(
                    (
                        "INSERT INTO outbox_links (sink, lead_id, remote_id)"
                        " SELECT ?, lead_id, ? FROM outbox WHERE id = ? AND kind = 'lead.created'"
                        " ON CONFLICT (sink, lead_id) DO UPDATE SET remote_id = excluded.remote_id",
                        (sink, u.remote_id, u.id),
                    )
                )
        elif u.state == "pending":
            due = to_epoch(u.next_attempt_at or at)
            out.append(
                (
                    "UPDATE outbox SET next_attempt_at = ?, last_error = COALESCE(?, last_error),"
                    " attempts = attempts + ?, attempted = COALESCE(?, attempted) WHERE id = ?",
                    (due, u.error, step, flag, u.id),
                )
            )
        elif u.state == "dead":
            out.append(
                (
                    "UPDATE outbox SET state = 'dead', last_error = ?, attempts = attempts + ?,"
                    " attempted = COALESCE(?, attempted) WHERE id = ?",
                    (u.error, step, flag, u.id),
                )
            )
        else:
            raise ValueError(f"unknown outbox state {u.state!r}")
    return out


def outbox_retry_filter(ids: Sequence[int] | None) -> tuple[str, tuple[Any, ...]]:
    """Which rows `retry` takes: the given dead or waiting ones, or every dead one."""
    if ids is None:
        return " WHERE state = 'dead'", ()
    marks = ",".join("?" * len(ids))
    return f" WHERE state IN ('dead', 'pending') AND id IN ({marks})", tuple(ids)


def outbox_retry_statement(ids: Sequence[int] | None, now: datetime) -> tuple[str, tuple[Any, ...]]:
    where, params = outbox_retry_filter(ids)
    # Fresh attempts; `attempted` stays: the sink may hold a trace of the earlier tries.
    return (
        f"UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = ?{where}",
        (to_epoch(now), *params),
    )


def read_outbox_stats(db: sqlite3.Connection) -> OutboxStats:
    pending, oldest = db.execute(
        "SELECT COUNT(*), MIN(created_at) FROM outbox WHERE state = 'pending'"
    ).fetchone()
    (dead,) = db.execute("SELECT COUNT(*) FROM outbox WHERE state = 'dead'").fetchone()
    return OutboxStats(
        pending=int(pending),
        dead=int(dead),
        oldest_pending_at=from_epoch(oldest) if oldest else None,
    )
