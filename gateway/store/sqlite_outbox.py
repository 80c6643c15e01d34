"""The outbox side of the SQLite store: what the delivery worker and the CLI ask of it.

Claims in the server role: the candidates are read on the loop and the claim is marked
in an in-memory overlay before anything awaits, so two claims in this process never take
the same item while the claim's write waits for its group commit. In the client role each
claim or update is one transaction that reads and writes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Collection, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

from gateway.store.base import (
    LeadLink,
    OutboxItem,
    OutboxKind,
    OutboxState,
    OutboxStats,
    OutboxUpdate,
)
from gateway.store.sqlite_queries import (
    claim_statement,
    claimable,
    list_outbox,
    outbox_holders,
    outbox_retry_filter,
    outbox_retry_statements,
    outbox_update_statements,
    read_outbox_stats,
    to_epoch,
)

T = TypeVar("T")


class OutboxMethods:
    """Mixed into SQLiteStore, which provides `_db()`, `write()`, `_transact()`."""

    # Items whose claim or outcome is written but not yet committed (server role):
    # id -> (the operation's token, who holds the item once it commits).
    _outbox_busy: dict[int, tuple[object, str | None]]

    def _db(self) -> sqlite3.Connection:
        raise NotImplementedError

    @property
    def _is_client(self) -> bool:
        raise NotImplementedError

    async def write(self, statements: Sequence[tuple[str, tuple[Any, ...]]]) -> None:
        raise NotImplementedError

    async def _transact(self, work: Callable[[sqlite3.Connection], T]) -> T:
        raise NotImplementedError

    async def outbox(
        self, state: OutboxState | None = None, limit: int = 100, *, after_id: int = 0
    ) -> list[OutboxItem]:
        return list_outbox(self._db(), state, limit, after_id)

    async def claim_outbox(
        self,
        now: datetime,
        limit: int,
        *,
        owner: str,
        lease_seconds: float,
        mark: bool = True,
        kinds: Collection[OutboxKind] | None = None,
    ) -> list[OutboxItem]:
        until = now + timedelta(seconds=lease_seconds)
        if self._is_client:

            def claim(db: sqlite3.Connection) -> list[OutboxItem]:
                items = claimable(db, now, limit, (), kinds)
                if items:
                    db.execute(*claim_statement([i.id for i in items], owner, until, mark))
                return items

            items = await self._transact(claim)
        else:
            # From the read to the overlay nothing awaits: see the module docstring.
            items = claimable(self._db(), now, limit, self._outbox_busy, kinds)
            if not items:
                return []
            ids = [item.id for item in items]
            await self._busy_while(ids, owner, [claim_statement(ids, owner, until, mark)])
        return [replace(item, claimed_by=owner, claimed_until=until) for item in items]

    async def update_outbox(
        self, sink: str, updates: Sequence[OutboxUpdate], at: datetime, *, owner: str
    ) -> list[int]:
        if not updates:
            return []
        ids = [u.id for u in updates]
        if self._is_client:

            def apply(db: sqlite3.Connection) -> list[int]:
                holders = outbox_holders(db, ids)
                held = [u for u in updates if holders.get(u.id) == owner]
                for sql, params in outbox_update_statements(sink, held, at, owner):
                    db.execute(sql, params)
                return [u.id for u in updates if holders.get(u.id) != owner]

            return await self._transact(apply)
        holders = outbox_holders(self._db(), ids)
        for item_id in ids:
            if (busy := self._outbox_busy.get(item_id)) is not None:
                holders[item_id] = busy[1]
        held = [u for u in updates if holders.get(u.id) == owner]
        if held:
            statements = outbox_update_statements(sink, held, at, owner)
            await self._busy_while([u.id for u in held], None, statements)
        return [u.id for u in updates if holders.get(u.id) != owner]

    async def _busy_while(
        self,
        ids: Sequence[int],
        holder: str | None,
        statements: Sequence[tuple[str, tuple[Any, ...]]],
    ) -> None:
        token = object()
        for item_id in ids:
            self._outbox_busy[item_id] = (token, holder)
        try:
            await self.write(statements)
        finally:
            for item_id in ids:
                busy = self._outbox_busy.get(item_id)
                if busy is not None and busy[0] is token:
                    del self._outbox_busy[item_id]

    async def lead_links(self, sink: str, lead_ids: Sequence[str]) -> dict[str, LeadLink]:
        if not lead_ids:
            return {}
        db, marks = self._db(), ",".join("?" * len(lead_ids))
        remote = dict(
            db.execute(
                "SELECT lead_id, remote_id FROM outbox_links"
                f" WHERE sink = ? AND lead_id IN ({marks})",
                (sink, *lead_ids),
            )
        )
        states = {
            lead_id: OutboxState(state)
            for lead_id, state in db.execute(
                "SELECT lead_id, state FROM outbox"
                f" WHERE kind = 'lead.created' AND lead_id IN ({marks})",
                tuple(lead_ids),
            )
        }
        return {
            lead_id: LeadLink(state=states.get(lead_id), remote_id=remote.get(lead_id))
            for lead_id in set(remote) | set(states)
        }

    async def retry_outbox(self, ids: Sequence[int] | None, now: datetime) -> int:
        where, params = outbox_retry_filter(ids)
        count_sql = f"SELECT COUNT(*) FROM outbox{where}"
        if self._is_client:

            def retry(db: sqlite3.Connection) -> int:
                (count,) = db.execute(count_sql, params).fetchone()
                for sql, values in outbox_retry_statements(ids, now):
                    db.execute(sql, values)
                return int(count)

            return await self._transact(retry)
        (count,) = self._db().execute(count_sql, params).fetchone()
        if count:
            await self.write(outbox_retry_statements(ids, now))
        return int(count)

    async def outbox_stats(self, kinds: Collection[OutboxKind] | None = None) -> OutboxStats:
        return read_outbox_stats(self._db(), kinds)

    async def purge_outbox(self, delivered_before: datetime) -> None:
        await self.write(
            [
                (
                    "DELETE FROM outbox WHERE state IN ('delivered', 'closed')"
                    " AND delivered_at < ?",
                    (to_epoch(delivered_before),),
                )
            ]
        )
