"""SQL read helpers and outbox statements of the SQLite store.

Plain functions over a connection: the server role runs them on its read connection and
sends the statements through its commit queue; the client role (a second process, the
CLI) runs them inside one short transaction of its own.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import orjson

from gateway.conversations import MessageStatus
from gateway.models import EventRecord, Lead
from gateway.store.base import (
    DeliveryView,
    EventQuery,
    LeadQuery,
    OutboxItem,
    OutboxKind,
    OutboxState,
    OutboxStats,
    OutboxUpdate,
    StoredEvent,
)


def replay_key(channel: str, external_id: str) -> str:
    return f"{channel}\x1f{external_id}"


def idempotency_key(key: str) -> str:
    return f"idem\x1f{key}"


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


def read_delivery_view(db: sqlite3.Connection, lead_id: str, event_id: str) -> DeliveryView | None:
    row = db.execute("SELECT doc FROM leads WHERE id = ?", (lead_id,)).fetchone()
    if row is None:
        return None
    lead = Lead.model_validate_json(row[0])
    found = db.execute(
        "SELECT doc FROM events WHERE id = ? AND lead_id = ?", (event_id, lead_id)
    ).fetchone()
    event = EventRecord.model_validate(orjson.loads(found[0])["record"]) if found else None
    # Counted on the (lead_id, id) index: no event document is read.
    (count,) = db.execute("SELECT COUNT(*) FROM events WHERE lead_id = ?", (lead_id,)).fetchone()
    return DeliveryView(lead.model_copy(update={"events": ()}), event, int(count))


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


def migrate_leads(db: sqlite3.Connection) -> None:
    """count_day, for a file made before leads kept the day they counted in."""
    if leads_need_migration(db):
        db.execute("ALTER TABLE leads ADD COLUMN count_day TEXT")


def leads_need_migration(db: sqlite3.Connection) -> bool:
    return "count_day" not in {row[1] for row in db.execute("PRAGMA table_info(leads)")}


def assigned_since(db: sqlite3.Connection, day: date, since: float) -> tuple[dict[str, int], int]:
    """Leads per seller counted in `day`, and the number of assigned leads counted before
    it: by the day stored with each lead (a lead that came Friday night counts on Monday),
    and for leads stored before that was kept, by creation since the epoch `since`."""
    counts: dict[str, int] = {}
    earlier = 0
    iso = day.isoformat()
    for seller, recent, older in db.execute(
        "SELECT assigned_to,"
        " SUM(CASE WHEN count_day IS NULL THEN created_at >= ? ELSE count_day = ? END),"
        " SUM(CASE WHEN count_day IS NULL THEN created_at < ? ELSE count_day < ? END)"
        " FROM leads WHERE assigned_to IS NOT NULL GROUP BY assigned_to",
        (since, iso, since, iso),
    ):
        if recent:
            counts[seller] = int(recent)
        earlier += int(older or 0)
    return counts, earlier


def latest_count_day(db: sqlite3.Connection) -> date | None:
    """The latest day a stored lead counted in: the day in progress does not go back."""
    (found,) = db.execute("SELECT MAX(count_day) FROM leads").fetchone()
    return date.fromisoformat(found) if found else None


def list_outbox(
    db: sqlite3.Connection, state: OutboxState | None, limit: int, after_id: int = 0
) -> list[OutboxItem]:
    if state is None:
        return outbox_rows(db, " WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit))
    return outbox_rows(
        db,
        " WHERE state = ? AND id > ? ORDER BY id LIMIT ?",
        (OutboxState(state).value, after_id, limit),
    )


# --- events, checkpoints ---------------------------------------------------------


def stored_event(lead_id: str | None, doc: bytes | str) -> StoredEvent:
    data = orjson.loads(doc)
    return StoredEvent(
        record=EventRecord.model_validate(data["record"]), lead_id=lead_id, raw=data.get("raw")
    )


def list_events(db: sqlite3.Connection, query: EventQuery) -> list[StoredEvent]:
    where: list[str] = []
    params: list[Any] = []
    if query.channel is not None:
        where.append("channel = ?")
        params.append(query.channel.value)
    if query.external_id is not None:
        where.append("external_id = ?")
        params.append(query.external_id)
    if query.lead_id is not None:
        where.append("lead_id = ?")
        params.append(query.lead_id)
    if query.after_id is not None:
        # In the order stored (rowid), not by id: ids made in one millisecond are unordered.
        where.append("rowid > COALESCE((SELECT rowid FROM events WHERE id = ?), 0)")
        params.append(query.after_id)
    sql = "SELECT lead_id, doc FROM events"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY rowid LIMIT ?"
    params.append(query.limit)
    return [stored_event(lead_id, doc) for lead_id, doc in db.execute(sql, params)]


def read_event(db: sqlite3.Connection, event_id: str) -> StoredEvent | None:
    row = db.execute("SELECT lead_id, doc FROM events WHERE id = ?", (event_id,)).fetchone()
    return stored_event(row[0], row[1]) if row else None


def event_of_replay_key(db: sqlite3.Connection, key: str) -> StoredEvent | None:
    row = db.execute(
        "SELECT e.lead_id, e.doc FROM replay_keys r JOIN events e ON e.id = r.event_id"
        " WHERE r.key = ?",
        (key,),
    ).fetchone()
    return stored_event(row[0], row[1]) if row else None


def list_checkpoints(db: sqlite3.Connection, prefix: str) -> dict[str, str]:
    # substr, not LIKE: a checkpoint name may hold % or _.
    rows = db.execute(
        "SELECT name, value FROM checkpoints WHERE substr(name, 1, ?) = ? ORDER BY name",
        (len(prefix), prefix),
    )
    return {name: value for name, value in rows}


# --- outbox (delivery) -----------------------------------------------------------------------


def migrate_outbox(db: sqlite3.Connection) -> None:
    """Columns the outbox gained after its first release (CREATE IF NOT EXISTS keeps old tables)."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(outbox)")}
    for name, decl in _OUTBOX_ADDED:
        if name not in columns:
            db.execute(f"ALTER TABLE outbox ADD COLUMN {name} {decl}")
    # After the columns exist (an older file gets them just above).
    db.execute(
        "CREATE INDEX IF NOT EXISTS outbox_thread ON outbox (conversation_id, state, id)"
        " WHERE conversation_id IS NOT NULL"
    )


def outbox_needs_migration(db: sqlite3.Connection) -> bool | None:
    """Whether the outbox lacks columns of this version; None when there is no outbox."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(outbox)")}
    if not columns:
        return None
    return any(name not in columns for name, _ in _OUTBOX_ADDED)


_OUTBOX_ADDED = (
    ("attempted", "INTEGER NOT NULL DEFAULT 0"),
    ("claimed_by", "TEXT"),
    ("claimed_until", "REAL"),
    ("message_id", "TEXT"),
    ("conversation_id", "TEXT"),
)


def outbox_rows(db: sqlite3.Connection, tail: str, params: tuple[Any, ...]) -> list[OutboxItem]:
    sql = (
        "SELECT id, lead_id, event_id, kind, state, attempts, next_attempt_at, created_at,"
        " last_error, delivered_at, remote_id, attempted, claimed_by, claimed_until,"
        " message_id, conversation_id FROM outbox" + tail
    )
    return [
        OutboxItem(
            id=r[0],
            lead_id=r[1],
            event_id=r[2],
            kind=OutboxKind(r[3]),
            state=OutboxState(r[4]),
            attempts=r[5],
            next_attempt_at=from_epoch(r[6]),
            created_at=from_epoch(r[7]),
            last_error=r[8],
            delivered_at=from_epoch(r[9]) if r[9] is not None else None,
            remote_id=r[10],
            attempted=bool(r[11]),
            claimed_by=r[12],
            claimed_until=from_epoch(r[13]) if r[13] is not None else None,
            message_id=r[14],
            conversation_id=r[15],
        )
        for r in db.execute(sql, params)
    ]


def claimable(
    db: sqlite3.Connection,
    now: datetime,
    limit: int,
    skip: Collection[int] = (),
    kinds: Collection[OutboxKind] | None = None,
) -> list[OutboxItem]:
    """Due pending items nobody holds (unclaimed, or the claim ran out), oldest first;
    `skip`: items with a claim or an outcome not yet committed. A message waits while an
    older item of its kind and conversation is pending (held or not, due or not): in
    order, and one kind waiting (the CRM's chat down) never holds up another."""
    at = to_epoch(now)
    where = (
        " WHERE state = 'pending' AND next_attempt_at <= ?"
        " AND (claimed_by IS NULL OR claimed_until <= ?)"
        " AND (conversation_id IS NULL OR NOT EXISTS (SELECT 1 FROM outbox o"
        " WHERE o.conversation_id = outbox.conversation_id AND o.kind = outbox.kind"
        " AND o.state = 'pending' AND o.id < outbox.id))"
    )
    params: list[Any] = [at, at]
    if kinds is not None:
        where += f" AND kind IN ({','.join('?' * len(kinds))})"
        params += [OutboxKind(k).value for k in kinds]
    items = outbox_rows(db, where + " ORDER BY id LIMIT ?", (*params, limit + len(skip)))
    return [item for item in items if item.id not in skip][:limit]


def claim_statement(
    ids: Sequence[int], owner: str, until: datetime, mark: bool
) -> tuple[str, tuple[Any, ...]]:
    marks = ",".join("?" * len(ids))
    flag = " attempted = 1," if mark else ""
    return (
        f"UPDATE outbox SET{flag} claimed_by = ?, claimed_until = ? WHERE id IN ({marks})",
        (owner, to_epoch(until), *ids),
    )


def outbox_holders(db: sqlite3.Connection, ids: Sequence[int]) -> dict[int, str | None]:
    """Who holds each of these items now (None: nobody); unknown ids are left out."""
    if not ids:
        return {}
    marks = ",".join("?" * len(ids))
    rows = db.execute(f"SELECT id, claimed_by FROM outbox WHERE id IN ({marks})", tuple(ids))
    return {item_id: holder for item_id, holder in rows}


def outbox_update_statements(
    sink: str, updates: Sequence[OutboxUpdate], at: datetime, owner: str
) -> list[tuple[str, tuple[Any, ...]]]:
    """The outcome of each update, applied only while `owner` holds the item (the callers
    check first, to report refusals; the guard keeps it true whatever ran in between)."""
    out: list[tuple[str, tuple[Any, ...]]] = []
    release = "claimed_by = NULL, claimed_until = NULL"
    for u in updates:
        step = 1 if u.count_attempt else 0
        flag = None if u.attempted is None else int(u.attempted)
        if u.message_status is not None:
            # The transcript line first: the state change below ends the claim it checks.
            out += _message_outcome(u, at, owner)
        if u.state is OutboxState.DELIVERED:
            if u.remote_id is not None:
                # Before the state change below ends the claim the guard looks at.
                out.append(
                    (
                        "INSERT INTO outbox_links (sink, lead_id, remote_id)"
                        " SELECT ?, lead_id, ? FROM outbox WHERE id = ? AND kind = 'lead.created'"
                        " AND claimed_by = ?"
                        " ON CONFLICT (sink, lead_id) DO UPDATE SET remote_id = excluded.remote_id",
                        (sink, u.remote_id, u.id, owner),
                    )
                )
            out.append(
                (
                    "UPDATE outbox SET state = 'delivered', delivered_at = ?, remote_id = ?,"
                    f" last_error = NULL, attempts = attempts + ?, {release}"
                    " WHERE id = ? AND claimed_by = ?",
                    (to_epoch(at), u.remote_id, step, u.id, owner),
                )
            )
        elif u.state is OutboxState.PENDING:
            due = to_epoch(u.next_attempt_at or at)
            out.append(
                (
                    "UPDATE outbox SET next_attempt_at = ?, last_error = COALESCE(?, last_error),"
                    f" attempts = attempts + ?, attempted = COALESCE(?, attempted), {release}"
                    " WHERE id = ? AND claimed_by = ?",
                    (due, u.error, step, flag, u.id, owner),
                )
            )
        elif u.state in (OutboxState.DEAD, OutboxState.CLOSED):
            # A closed item is finished: it ages out with the delivered ones.
            ended = to_epoch(at) if u.state is OutboxState.CLOSED else None
            out.append(
                (
                    "UPDATE outbox SET state = ?, last_error = ?, attempts = attempts + ?,"
                    f" attempted = COALESCE(?, attempted), delivered_at = ?, {release}"
                    " WHERE id = ? AND claimed_by = ?",
                    (u.state.value, u.error, step, flag, ended, u.id, owner),
                )
            )
        else:
            raise ValueError(f"unknown outbox state {u.state!r}")
    return out


def _message_outcome(
    u: OutboxUpdate, at: datetime, owner: str
) -> list[tuple[str, tuple[Any, ...]]]:
    assert u.message_status is not None
    held = "(SELECT {} FROM outbox WHERE id = ? AND claimed_by = ?)"
    out: list[tuple[str, tuple[Any, ...]]] = [
        (
            "UPDATE messages SET status = ?, status_reason = ?,"
            " external_id = COALESCE(?, external_id) WHERE id = " + held.format("message_id"),
            (u.message_status.value, u.error, u.remote_id, u.id, owner),
        )
    ]
    if u.message_status is MessageStatus.SENT:
        out.append(
            (
                "UPDATE conversations SET last_outbound_at = MAX(COALESCE(last_outbound_at, 0), ?)"
                " WHERE id = " + held.format("conversation_id"),
                (to_epoch(at), u.id, owner),
            )
        )
    return out


def release_claims() -> tuple[str, tuple[Any, ...]]:
    """Every claim ends: run by the one writer at start, when every earlier holder is gone."""
    return (
        "UPDATE outbox SET claimed_by = NULL, claimed_until = NULL WHERE claimed_by IS NOT NULL",
        (),
    )


def outbox_retry_filter(ids: Sequence[int] | None) -> tuple[str, tuple[Any, ...]]:
    """Which rows `retry` takes: the given dead or waiting ones, or every dead one."""
    if ids is None:
        return " WHERE state = 'dead'", ()
    marks = ",".join("?" * len(ids))
    return f" WHERE state IN ('dead', 'pending') AND id IN ({marks})", tuple(ids)


def outbox_retry_statements(
    ids: Sequence[int] | None, now: datetime
) -> list[tuple[str, tuple[Any, ...]]]:
    where, params = outbox_retry_filter(ids)
    return [
        # A message retried is queued again in its transcript (before its row changes);
        # the Open Lines rows of a line (a copy, a delivery report) leave the line alone.
        (
            "UPDATE messages SET status = 'queued', status_reason = NULL WHERE id IN"
            f" (SELECT message_id FROM outbox{where} AND message_id IS NOT NULL"
            " AND kind = 'message.out')",
            params,
        ),
        # Fresh attempts; `attempted` stays: the sink may hold a trace of the earlier tries.
        (
            f"UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = ?{where}",
            (to_epoch(now), *params),
        ),
    ]


def read_outbox_stats(
    db: sqlite3.Connection, kinds: Collection[OutboxKind] | None = None
) -> OutboxStats:
    of_kind, params = "", tuple[str, ...]()
    if kinds is not None:
        of_kind = f" AND kind IN ({','.join('?' * len(kinds))})"
        params = tuple(OutboxKind(k).value for k in kinds)
    pending, oldest = db.execute(
        f"SELECT COUNT(*), MIN(created_at) FROM outbox WHERE state = 'pending'{of_kind}", params
    ).fetchone()
    (dead,) = db.execute(
        f"SELECT COUNT(*) FROM outbox WHERE state = 'dead'{of_kind}", params
    ).fetchone()
    return OutboxStats(
        pending=int(pending),
        dead=int(dead),
        oldest_pending_at=from_epoch(oldest) if oldest else None,
    )
