"""`leadgate outbox list|retry|dlq`: the delivery queue, through the Store protocol.

Works while the gateway runs: the CLI opens the store in its client role (reads beside
the server; `retry` is one short transaction of its own, which the gateway's commit loop
waits for without blocking). The running worker picks retried items up at its next poll.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from gateway.cli.store import with_store
from gateway.config import Settings
from gateway.store.base import OutboxItem, OutboxState, OutboxStats, Store
from gateway.textsafe import json_text, printable

STATES = tuple(state.value for state in OutboxState)


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


def item_json(item: OutboxItem) -> dict[str, Any]:
    def iso(at: datetime | None) -> str | None:
        return at.isoformat() if at is not None else None

    return {
        "id": item.id,
        "lead_id": item.lead_id,
        "event_id": item.event_id,
        "kind": item.kind.value,
        "state": item.state.value,
        "attempts": item.attempts,
        "next_attempt_at": iso(item.next_attempt_at),
        "created_at": iso(item.created_at),
        "delivered_at": iso(item.delivered_at),
        "remote_id": item.remote_id,
        "last_error": item.last_error,
        "claimed_by": item.claimed_by,
        "claimed_until": iso(item.claimed_until),
        "message_id": item.message_id,
        "conversation_id": item.conversation_id,
    }


def _line(item: OutboxItem) -> str:
    label, when = {
        OutboxState.DELIVERED: ("delivered", item.delivered_at),
        OutboxState.PENDING: ("next try", item.next_attempt_at),
    }.get(item.state, ("accepted", item.created_at))
    remote = f"  -> {item.remote_id}" if item.remote_id else ""
    held = ""
    if item.claimed_by is not None and item.claimed_until is not None:
        held = f"  held by {item.claimed_by} until {item.claimed_until:%H:%M:%S} UTC"
    shown = item.last_error and item.state is not OutboxState.DELIVERED
    error = f"\n      {printable(item.last_error)}" if shown else ""
    return (
        f"{item.id:>7}  {item.state.value:<9}  {item.kind.value:<12}  {item.lead_id}  "
        f"tries {item.attempts}  {label} {when or item.created_at:%Y-%m-%d %H:%M:%S} UTC"
        f"{remote}{held}{error}"
    )


def _summary(stats: OutboxStats) -> str:
    oldest = ""
    if stats.oldest_pending_at is not None:
        age = (datetime.now(UTC) - stats.oldest_pending_at).total_seconds()
        oldest = f" (oldest {age:.0f} s)"
    return f"pending {stats.pending}{oldest}, dead {stats.dead}"


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.action == "retry":
        return _retry(settings, None if args.all_dead else list(args.ids))
    state = OutboxState.DEAD if args.action == "dlq" else _state(args.state)

    async def read(store: Store) -> tuple[list[OutboxItem], OutboxStats]:
        return await store.outbox(state, args.limit), await store.outbox_stats()

    items, stats = with_store(settings, read)
    if args.json:
        print(json_text([item_json(i) for i in items]))
        return 0
    print(_summary(stats))
    for item in items:
        print(_line(item))
    if args.action == "dlq" and items:
        print("replay: leadgate outbox retry --all-dead   (or: leadgate outbox retry ID ...)")
    elif not items:
        print("(empty)")
    return 0


def _state(value: str | None) -> OutboxState | None:
    return OutboxState(value) if value is not None else None


def _retry(settings: Settings, ids: list[int] | None) -> int:
    count = with_store(settings, lambda store: store.retry_outbox(ids, datetime.now(UTC)))
    if ids and count < len(ids):
        print(f"note: {len(ids) - count} id(s) are delivered or unknown; left alone")
    print(f"{count} item(s) queued for delivery now")
    return 0 if count or not ids else 1
