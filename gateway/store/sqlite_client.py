"""The SQLite store's second-process role: the CLI beside a running gateway.

The server role owns the file (an advisory lock, a group-commit loop). A second process
cannot take that lock, and must not wait on it: it reads through its own read connection
(WAL readers never block the writer), and its rare writes (`outbox retry`) are each one
short IMMEDIATE transaction on a connection of its own with a busy timeout. The gateway's
commit loop never blocks on such a transaction either: it retries BEGIN asynchronously.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import TypeVar

from gateway.store.base import StoreUnavailable
from gateway.store.schema import SCHEMA
from gateway.store.sqlite_inbox import inbox_needs_migration, migrate_inbox
from gateway.store.sqlite_ops import migrate_ops, ops_needs_migration
from gateway.store.sqlite_queries import (
    leads_need_migration,
    migrate_leads,
    migrate_outbox,
    open_reader,
    outbox_needs_migration,
)

T = TypeVar("T")

BUSY_TIMEOUT_MS = 15_000


class StoreRole(StrEnum):
    SERVER = "server"  # the one writer: locks the file, group commit, delivers the outbox
    CLIENT = "client"  # a second process: reads, and short transactions for rare writes


def open_client_writer(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000
    )
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA synchronous=FULL")  # durable before the CLI says "done"
    return conn


def in_transaction(db: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
    """Run `work` inside one IMMEDIATE transaction: all of it is committed, or none."""
    try:
        db.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        raise StoreUnavailable(f"the store stayed busy: {exc}") from exc
    try:
        result = work(db)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return result


class ClientRole:
    """Mixed into SQLiteStore: opening in the client role, and its transactions."""

    path: Path
    role: StoreRole
    _reader: sqlite3.Connection | None
    _client_writer: sqlite3.Connection | None
    _client_lock: asyncio.Lock

    @property
    def _is_client(self) -> bool:
        return self.role is StoreRole.CLIENT

    async def _open_client(self) -> None:
        if not self.path.exists():
            raise StoreUnavailable(f"no store at {self.path}")
        self._client_writer = open_client_writer(self.path)
        migrate = outbox_needs_migration(self._client_writer)
        if migrate is None:
            self._client_writer.close()
            self._client_writer = None
            # A server that is still creating the file, or not a leadgate store at all.
            raise StoreUnavailable(f"{self.path} has no leadgate tables (yet)")
        if (
            migrate
            or ops_needs_migration(self._client_writer)
            or inbox_needs_migration(self._client_writer)
            or leads_need_migration(self._client_writer)
        ):
            # A file of an older version: bring it to this version's schema first.
            self._client_writer.executescript(SCHEMA)
            await self._transact(migrate_outbox)
            await self._transact(migrate_ops)
            await self._transact(migrate_inbox)
            await self._transact(migrate_leads)
        self._reader = open_reader(self.path)

    async def _transact(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """`work` in one short transaction of our own, off the loop."""
        if self._client_writer is None:
            raise StoreUnavailable("store is not open")
        async with self._client_lock:
            return await asyncio.to_thread(in_transaction, self._client_writer, work)
