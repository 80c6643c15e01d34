"""The SQLite store's second-process role: the CLI beside a running gateway.

The server role owns the file (an advisory lock, a group-commit loop). A second process
cannot take that lock, and must not wait on it: it reads through its own read connection
(WAL readers never block the writer), and its rare writes (`outbox retry`) are each one
short IMMEDIATE transaction on a connection of its own with a busy timeout. The gateway's
commit loop never blocks on such a transaction either: it retries BEGIN asynchronously.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import TypeVar

from gateway.store.base import StoreUnavailable

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
