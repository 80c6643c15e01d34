"""Reads of the SQLite store for people and tests: events, checkpoints (the quarantine's
are in sqlite_ops)."""

from __future__ import annotations

import sqlite3

from gateway.store.base import EventQuery, StoredEvent
from gateway.store.sqlite_queries import (
    event_of_replay_key,
    idempotency_key,
    list_checkpoints,
    list_events,
    read_event,
)


class ReadMethods:
    """Mixed into SQLiteStore, which provides `_db()`."""

    def _db(self) -> sqlite3.Connection:
        raise NotImplementedError

    async def get_event(self, event_id: str) -> StoredEvent | None:
        return read_event(self._db(), event_id)

    async def list_events(self, query: EventQuery) -> list[StoredEvent]:
        return list_events(self._db(), query)

    async def event_for_key(self, key: str) -> StoredEvent | None:
        return event_of_replay_key(self._db(), idempotency_key(key))

    async def list_checkpoints(self, prefix: str = "") -> dict[str, str]:
        return list_checkpoints(self._db(), prefix)
