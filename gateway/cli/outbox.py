"""`leadgate outbox list|retry|dlq`: the delivery queue, read (and replayed) in the database file.

Works while the gateway runs: reads share the WAL, and `retry` is one short transaction
from a second connection (the gateway's commit loop waits for it without blocking). The
running worker picks retried items up at its next poll.
"""

from __future__ import annotations

import argparse
import contextlib
import sqlite3
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.config import Settings
from gateway.store.base import OutboxItem
from gateway.store.sqlite_queries import (
    list_outbox,
    open_reader,
    outbox_retry_filter,
    outbox_retry_statement,
    read_outbox_stats,
)
from gateway.textsafe import json_text, printable

STATES = ("pending", "delivered", "dead")


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("outbox", help="inspect and replay deliveries to the CRM")
    actions = parser.add_subparsers(dest="action", required=True)
    ls = actions.add_parser("list", help="outbox items, oldest first")
    ls.add_argument("--state", choices=STATES)
    ls.add_argument("--limit", type=int, default=50)
    ls.add_argument("--json", action="store_true")
    retry = actions.add_parser("retry", help="deliver dead (or waiting) items again, now")
    which = retry.add_mutually_exclusive_group(required=True)
    which.add_argument("ids", nargs="*", type=int, default=[], metavar="ID")
    which.add_argument("--all-dead", action="store_true", help="every item in the DLQ")
    dlq = actions.add_parser("dlq", help="the dead-letter queue with each item's last error")
    dlq.add_argument("--limit", type=int, default=100)
    dlq.add_argument("--json", action="store_true")


def _store_path(settings: Settings) -> Path:
    path = settings.store.path
    if not path.exists():
        raise SystemExit(f"leadgate: no store at {path} (has the gateway run here yet?)")
    return path


@contextlib.contextmanager
def _reader(settings: Settings) -> Iterator[sqlite3.Connection]:
    conn = open_reader(_store_path(settings), read_only=True)
    try:
        yield conn
    finally:
        conn.close()


def item_json(item: OutboxItem) -> dict[str, Any]:
    def iso(at: datetime | None) -> str | None:
        return at.isoformat() if at is not None else None

    return {
        "id": item.id,
        "lead_id": item.lead_id,
        "event_id": item.event_id,
        "kind": item.kind,
        "state": item.state,
        "attempts": item.attempts,
        "next_attempt_at": iso(item.next_attempt_at),
        "created_at": iso(item.created_at),
        "delivered_at": iso(item.delivered_at),
        "remote_id": item.remote_id,
        "last_error": item.last_error,
    }


def _line(item: OutboxItem) -> str:
    label, when = {
        "delivered": ("delivered", item.delivered_at),
        "pending": ("next try", item.next_attempt_at),
    }.get(item.state, ("accepted", item.created_at))
    remote = f"  -> {item.remote_id}" if item.remote_id else ""
    shown = item.last_error and item.state != "delivered"
    error = f"\n      {printable(item.last_error)}" if shown else ""
    return (
        f"{item.id:>7}  {item.state:<9}  {item.kind:<12}  {item.lead_id}  "
        f"tries {item.attempts}  {label} {when or item.created_at:%Y-%m-%d %H:%M:%S} UTC"
        f"{remote}{error}"
    )


def _summary(db: sqlite3.Connection) -> str:
    stats = read_outbox_stats(db)
    oldest = ""
    if stats.oldest_pending_at is not None:
        age = (datetime.now(UTC) - stats.oldest_pending_at).total_seconds()
        oldest = f" (oldest {age:.0f} s)"
    return f"pending {stats.pending}{oldest}, dead {stats.dead}"


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.action == "retry":
        return _retry(settings, None if args.all_dead else list(args.ids))
    with _reader(settings) as db:
        state = "dead" if args.action == "dlq" else args.state
        items = list_outbox(db, state, args.limit)
        if args.json:
            print(json_text([item_json(i) for i in items]))
            return 0
        print(_summary(db))
        for item in items:
            print(_line(item))
        if args.action == "dlq" and items:
            print("replay: leadgate outbox retry --all-dead   (or: leadgate outbox retry ID ...)")
        elif not items:
            print("(empty)")
    return 0


def _retry(settings: Settings, ids: list[int] | None) -> int:
    conn = sqlite3.connect(_store_path(settings), isolation_level=None, timeout=15)
    try:
        conn.execute("PRAGMA busy_timeout=15000")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("BEGIN IMMEDIATE")
        where, params = outbox_retry_filter(ids)
        (count,) = conn.execute(f"SELECT COUNT(*) FROM outbox{where}", params).fetchone()
        conn.execute(*outbox_retry_statement(ids, datetime.now(UTC)))
        conn.execute("COMMIT")
    except sqlite3.OperationalError as exc:
        print(f"leadgate: could not update {settings.store.path}: {exc}", file=sys.stderr)
        return 1
    finally:
        conn.close()
    if ids and count < len(ids):
        print(f"note: {len(ids) - count} id(s) are delivered or unknown; left alone")
    print(f"{count} item(s) queued for delivery now")
    return 0 if count or not ids else 1
