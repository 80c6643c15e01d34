"""The inbox in the SQLite store: pushed input kept before it is answered, handled after.

Puts go through the group commit like events: the duplicate check reads the committed
table and the overlay of entries waiting for their commit, and nothing awaits between
that check and the overlay update, so two puts of one key in this process never both
count as new. Claims work like the outbox's (gateway.store.sqlite_outbox), and like its
conversations an entry with a thread waits while an older entry of its thread is pending:
due later (it failed and waits for its retry) or held by another claim.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

import orjson

from gateway.inbox import InboxEntry, InboxItem, InboxState, InboxStats, InboxUpdate
from gateway.store.base import StoreUnavailable
from gateway.store.sqlite_queries import from_epoch, to_epoch

T = TypeVar("T")

INSERT_INBOX = (
    "INSERT OR IGNORE INTO inbox (channel, account, key, received_at, next_attempt_at,"
    " headers, body, thread) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_UPSERT_CHECKPOINT = (
    "INSERT INTO checkpoints (name, value) VALUES (?, ?)"
    " ON CONFLICT(name) DO UPDATE SET value = excluded.value"
)
_COLUMNS = (
    "id, channel, account, key, body, headers, state, attempts, received_at,"
    " next_attempt_at, last_error, claimed_by, claimed_until, thread"
)
_RELEASE = "claimed_by = NULL, claimed_until = NULL"

Key = tuple[str, str, str]


def _rows(db: sqlite3.Connection, tail: str, params: Sequence[Any]) -> list[InboxItem]:
    return [
        InboxItem(
            id=r[0],
            channel=r[1],
            account=r[2],
            key=r[3],
            body=bytes(r[4]),
            headers=orjson.loads(r[5]),
            state=InboxState(r[6]),
            attempts=r[7],
            received_at=from_epoch(r[8]),
            next_attempt_at=from_epoch(r[9]),
            last_error=r[10],
            claimed_by=r[11],
            claimed_until=from_epoch(r[12]) if r[12] is not None else None,
            thread=r[13],
        )
        for r in db.execute(f"SELECT {_COLUMNS} FROM inbox{tail}", tuple(params))
    ]


def migrate_inbox(db: sqlite3.Connection) -> None:
    """The thread column and its index, for a file made before they existed."""
    if inbox_needs_migration(db):
        db.execute("ALTER TABLE inbox ADD COLUMN thread TEXT")
    db.execute(
        "CREATE INDEX IF NOT EXISTS inbox_thread ON inbox (channel, account, thread, id)"
        " WHERE thread IS NOT NULL AND state = 'pending'"
    )


def inbox_needs_migration(db: sqlite3.Connection) -> bool:
    return "thread" not in {row[1] for row in db.execute("PRAGMA table_info(inbox)")}


# An older entry of the same thread still pending and not claimable now: it waits for its
# retry, or another worker holds it.
_THREAD_WAITS = (
    " AND (thread IS NULL OR NOT EXISTS (SELECT 1 FROM inbox AS older"
    " WHERE older.channel = inbox.channel AND older.account = inbox.account"
    " AND older.thread = inbox.thread AND older.state = 'pending' AND older.id < inbox.id"
    " AND (older.next_attempt_at > ? OR (older.claimed_by IS NOT NULL"
    " AND older.claimed_until > ?))))"
)


def _claimable(
    db: sqlite3.Connection, now: datetime, limit: int, channel: str | None, skip: Sequence[int]
) -> list[InboxItem]:
    at = to_epoch(now)
    tail = (
        " WHERE state = 'pending' AND next_attempt_at <= ?"
        " AND (claimed_by IS NULL OR claimed_until <= ?)" + _THREAD_WAITS
    )
    params: list[Any] = [at, at, at, at]
    if channel is not None:
        tail += " AND channel = ?"
        params.append(channel)
    items = _rows(db, tail + " ORDER BY id LIMIT ?", [*params, limit + len(skip)])
    # An entry being claimed or updated right now (skip) holds up the later ones of its
    # thread just the same.
    busy: set[tuple[str, str, str]] = set()
    found: list[InboxItem] = []
    for item in items:
        thread = (item.channel, item.account, item.thread) if item.thread else None
        if item.id in skip:
            if thread is not None:
                busy.add(thread)
        elif thread is None or thread not in busy:
            found.append(item)
    return found[:limit]


def _claim_statement(
    ids: Sequence[int], owner: str, until: datetime
) -> tuple[str, tuple[Any, ...]]:
    marks = ",".join("?" * len(ids))
    return (
        f"UPDATE inbox SET claimed_by = ?, claimed_until = ? WHERE id IN ({marks})",
        (owner, to_epoch(until), *ids),
    )


def _holders(db: sqlite3.Connection, ids: Sequence[int]) -> dict[int, str | None]:
    marks = ",".join("?" * len(ids))
    rows = db.execute(f"SELECT id, claimed_by FROM inbox WHERE id IN ({marks})", tuple(ids))
    return {item_id: holder for item_id, holder in rows}


def _update_statements(
    updates: Sequence[InboxUpdate], at: datetime, owner: str
) -> list[tuple[str, tuple[Any, ...]]]:
    out: list[tuple[str, tuple[Any, ...]]] = []
    for u in updates:
        step = 1 if u.count_attempt else 0
        if u.state is InboxState.DONE:
            # The body is no longer needed (its events keep the payload): the key stays.
            sql = (
                "UPDATE inbox SET state = 'done', body = x'', last_error = NULL,"
                f" attempts = attempts + ?, {_RELEASE} WHERE id = ? AND claimed_by = ?"
            )
            out.append((sql, (step, u.id, owner)))
        elif u.state is InboxState.PENDING:
            sql = (
                "UPDATE inbox SET next_attempt_at = ?, last_error = COALESCE(?, last_error),"
                f" attempts = attempts + ?, {_RELEASE} WHERE id = ? AND claimed_by = ?"
            )
            due = to_epoch(u.next_attempt_at or at)
            out.append((sql, (due, u.error, step, u.id, owner)))
        elif u.state is InboxState.DEAD:
            sql = (
                "UPDATE inbox SET state = 'dead', last_error = ?, attempts = attempts + ?,"
                f" {_RELEASE} WHERE id = ? AND claimed_by = ?"
            )
            out.append((sql, (u.error, step, u.id, owner)))
        else:
            raise ValueError(f"unknown inbox state {u.state!r}")
    return out


def _retry_filter(ids: Sequence[int] | None) -> tuple[str, tuple[Any, ...]]:
    if ids is None:
        return " WHERE state = 'dead'", ()
    return f" WHERE state = 'dead' AND id IN ({','.join('?' * len(ids))})", tuple(ids)


class InboxMethods:
    """Mixed into SQLiteStore, which provides what is declared here."""

    _pending_inbox: dict[Key, Any]  # key -> the uncommitted write that puts it
    _inbox_busy: dict[int, tuple[object, str | None]]  # as OutboxMethods._outbox_busy
    _bare_pending: Callable[[], Any]
    _enqueue: Callable[[Any], Any]
    _db: Callable[[], sqlite3.Connection]
    write: Callable[[Sequence[tuple[str, tuple[Any, ...]]]], Any]
    _transact: Callable[[Callable[[sqlite3.Connection], Any]], Any]

    @property
    def _is_client(self) -> bool:
        raise NotImplementedError

    async def inbox_put(
        self,
        entries: Sequence[InboxEntry],
        at: datetime,
        checkpoint: tuple[str, str] | None = None,
    ) -> list[bool]:
        rows = [
            (
                e.channel,
                e.account,
                e.key,
                to_epoch(at),
                to_epoch(at),
                orjson.dumps(e.headers),
                e.body,
                e.thread,
            )
            for e in entries
        ]
        if self._is_client:

            def put(db: sqlite3.Connection) -> list[bool]:
                kept = []
                for row in rows:
                    kept.append(db.execute(INSERT_INBOX, row).rowcount == 1)
                if checkpoint is not None:
                    db.execute(_UPSERT_CHECKPOINT, checkpoint)
                return kept

            result: list[bool] = await self._transact(put)
            return result
        db = self._db()
        item = self._bare_pending()
        kept = []
        earlier: list[Any] = []
        seen: set[Key] = set()
        # From the checks to the overlay update nothing awaits: see the module docstring.
        for entry, row in zip(entries, rows, strict=True):
            key = (entry.channel, entry.account, entry.key)
            if key in seen:
                kept.append(False)
                continue
            seen.add(key)
            if (pending := self._pending_inbox.get(key)) is not None:
                earlier.append(pending)
                kept.append(False)
                continue
            found = db.execute(
                "SELECT 1 FROM inbox WHERE channel = ? AND account = ? AND key = ?", key
            ).fetchone()
            if found is not None:
                kept.append(False)
                continue
            self._pending_inbox[key] = item
            item.inbox_keys.append(key)
            item.inbox.append(row)
            kept.append(True)
        if checkpoint is not None:
            item.checkpoints.append(checkpoint)
        if item.inbox or item.checkpoints:
            await self._enqueue(item)
        for pending in earlier:
            # A duplicate of an entry still being written is only a duplicate once that
            # write held: if it failed, nothing was kept and the sender must hear so.
            try:
                await asyncio.shield(pending.done)
            except Exception as exc:
                raise StoreUnavailable(f"an earlier copy could not be stored: {exc}") from exc
        return kept

    async def inbox_claim(
        self,
        now: datetime,
        limit: int,
        *,
        owner: str,
        lease_seconds: float,
        channel: str | None = None,
    ) -> list[InboxItem]:
        until = now + timedelta(seconds=lease_seconds)
        if self._is_client:

            def claim(db: sqlite3.Connection) -> list[InboxItem]:
                found = _claimable(db, now, limit, channel, ())
                if found:
                    db.execute(*_claim_statement([i.id for i in found], owner, until))
                return found

            items: list[InboxItem] = await self._transact(claim)
        else:
            items = _claimable(self._db(), now, limit, channel, list(self._inbox_busy))
            if not items:
                return []
            ids = [item.id for item in items]
            await self._inbox_busy_while(ids, owner, [_claim_statement(ids, owner, until)])
        return [replace(item, claimed_by=owner, claimed_until=until) for item in items]

    async def update_inbox(
        self, updates: Sequence[InboxUpdate], at: datetime, *, owner: str
    ) -> list[int]:
        if not updates:
            return []
        ids = [u.id for u in updates]
        if self._is_client:

            def apply(db: sqlite3.Connection) -> list[int]:
                holders = _holders(db, ids)
                held = [u for u in updates if holders.get(u.id) == owner]
                for sql, params in _update_statements(held, at, owner):
                    db.execute(sql, params)
                return [u.id for u in updates if holders.get(u.id) != owner]

            refused: list[int] = await self._transact(apply)
            return refused
        holders = _holders(self._db(), ids)
        for item_id in ids:
            if (busy := self._inbox_busy.get(item_id)) is not None:
                holders[item_id] = busy[1]
        held = [u for u in updates if holders.get(u.id) == owner]
        if held:
            statements = _update_statements(held, at, owner)
            await self._inbox_busy_while([u.id for u in held], None, statements)
        return [u.id for u in updates if holders.get(u.id) != owner]

    async def _inbox_busy_while(
        self,
        ids: Sequence[int],
        holder: str | None,
        statements: Sequence[tuple[str, tuple[Any, ...]]],
    ) -> None:
        token = object()
        for item_id in ids:
            self._inbox_busy[item_id] = (token, holder)
        try:
            await self.write(statements)
        finally:
            for item_id in ids:
                busy = self._inbox_busy.get(item_id)
                if busy is not None and busy[0] is token:
                    del self._inbox_busy[item_id]

    async def list_inbox(
        self, state: InboxState | None = None, limit: int = 100, *, after_id: int = 0
    ) -> list[InboxItem]:
        if state is None:
            return _rows(self._db(), " WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit))
        return _rows(
            self._db(),
            " WHERE state = ? AND id > ? ORDER BY id LIMIT ?",
            (InboxState(state).value, after_id, limit),
        )

    async def inbox_stats(self) -> dict[str, InboxStats]:
        rows = self._db().execute(
            "SELECT channel, SUM(state = 'pending'), SUM(state = 'dead'),"
            " MIN(CASE WHEN state = 'pending' THEN received_at END)"
            " FROM inbox WHERE state != 'done' GROUP BY channel"
        )
        return {
            channel: InboxStats(
                pending=int(pending or 0),
                dead=int(dead or 0),
                oldest_pending_at=from_epoch(oldest) if oldest is not None else None,
            )
            for channel, pending, dead, oldest in rows
        }

    async def purge_inbox(self, done_before: datetime) -> int:
        sql = "DELETE FROM inbox WHERE state = 'done' AND received_at < ?"
        params = (to_epoch(done_before),)
        count_sql = "SELECT COUNT(*) FROM inbox WHERE state = 'done' AND received_at < ?"
        if self._is_client:

            def purge(db: sqlite3.Connection) -> int:
                return int(db.execute(sql, params).rowcount)

            purged: int = await self._transact(purge)
            return purged
        (count,) = self._db().execute(count_sql, params).fetchone()
        if count:
            await self.write([(sql, params)])
        return int(count)

    async def retry_inbox(self, ids: Sequence[int] | None, now: datetime) -> int:
        where, params = _retry_filter(ids)
        update = (
            f"UPDATE inbox SET state = 'pending', attempts = 0, next_attempt_at = ?{where}",
            (to_epoch(now), *params),
        )
        count_sql = f"SELECT COUNT(*) FROM inbox{where}"
        if self._is_client:

            def retry(db: sqlite3.Connection) -> int:
                (count,) = db.execute(count_sql, params).fetchone()
                db.execute(*update)
                return int(count)

            changed: int = await self._transact(retry)
            return changed
        (count,) = self._db().execute(count_sql, params).fetchone()
        if count:
            await self.write([update])
        return int(count)


def all_inbox(db: sqlite3.Connection) -> list[InboxItem]:
    """Every entry in id order, done ones included (leadgate store copy)."""
    return _rows(db, " ORDER BY id", ())
