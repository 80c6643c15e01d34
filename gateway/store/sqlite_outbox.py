"""The outbox side of the SQLite store: what the delivery worker asks of it.

Reads use the store's read connection; every write goes through `write()`, the group
commit queue, like all other writes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from gateway.store.base import LeadLink, OutboxItem, OutboxStats, OutboxUpdate
from gateway.store.sqlite_queries import (
    outbox_retry_filter,
    outbox_retry_statement,
    outbox_rows,
    outbox_update_statements,
    read_outbox_stats,
    to_epoch,
)


class OutboxMethods:
    """Mixed into SQLiteStore, which provides `_db()` and `write()`."""

    def _db(self) -> sqlite3.Connection:
        raise NotImplementedError

    async def write(self, statements: Sequence[tuple[str, tuple[Any, ...]]]) -> None:
        raise NotImplementedError

    async def claim_outbox(
        self, now: datetime, limit: int, *, mark: bool = True
    ) -> list[OutboxItem]:
        items = outbox_rows(
            self._db(),
            " WHERE state = 'pending' AND next_attempt_at <= ? ORDER BY id LIMIT ?",
            (to_epoch(now), limit),
        )
        fresh = [item.id for item in items if not item.attempted]
        if mark and fresh:
            marks = ",".join("?" * len(fresh))
            await self.write(
                [(f"UPDATE outbox SET attempted = 1 WHERE id IN ({marks})", tuple(fresh))]
            )
        return items

    async def update_outbox(self, sink: str, updates: Sequence[OutboxUpdate], at: datetime) -> None:
        if updates:
            await self.write(outbox_update_statements(sink, updates, at))

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
        states = dict(
            db.execute(
                "SELECT lead_id, state FROM outbox"
                f" WHERE kind = 'lead.created' AND lead_id IN ({marks})",
                tuple(lead_ids),
            )
        )
        return {
            lead_id: LeadLink(state=states.get(lead_id), remote_id=remote.get(lead_id))
            for lead_id in set(remote) | set(states)
        }

    async def retry_outbox(self, ids: Sequence[int] | None, now: datetime) -> int:
        where, params = outbox_retry_filter(ids)
        (count,) = self._db().execute(f"SELECT COUNT(*) FROM outbox{where}", params).fetchone()
        if count:
            await self.write([outbox_retry_statement(ids, now)])
        return int(count)

    async def outbox_stats(self) -> OutboxStats:
        return read_outbox_stats(self._db())

    async def purge_outbox(self, delivered_before: datetime) -> None:
        await self.write(
            [
                (
                    "DELETE FROM outbox WHERE state = 'delivered' AND delivered_at < ?",
                    (to_epoch(delivered_before),),
                )
            ]
        )
