"""`leadgate inbox list|retry`: pushed input (webhooks) as the inbox keeps it.

An entry that could not be handled after its attempts (or was not the vendor's format at
all) is `dead`: kept with its last error, never dropped. `retry` makes dead entries pending
again; the running gateway's inbox worker handles them at its next poll.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from gateway.cli.store import with_store
from gateway.config import Settings
from gateway.inbox import InboxItem, InboxState, InboxStats
from gateway.store.base import Store
from gateway.textsafe import json_text, printable

STATES = tuple(state.value for state in InboxState)


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("inbox", help="inspect and replay pushed input (webhooks)")
    actions = parser.add_subparsers(dest="action", required=True)
    ls = actions.add_parser("list", help="inbox entries, oldest first")
    ls.add_argument("--state", choices=STATES)
    ls.add_argument("--limit", type=int, default=50)
    ls.add_argument("--json", action="store_true", help="with bodies, unmasked")
    retry = actions.add_parser("retry", help="handle dead entries again, now")
    which = retry.add_mutually_exclusive_group(required=True)
    which.add_argument("ids", nargs="*", type=int, default=[], metavar="ID")
    which.add_argument("--all-dead", action="store_true", help="every dead entry")


def item_json(item: InboxItem) -> dict[str, Any]:
    return {
        "id": item.id,
        "channel": item.channel,
        "account": item.account,
        "key": item.key,
        "state": item.state.value,
        "attempts": item.attempts,
        "received_at": item.received_at.isoformat(),
        "next_attempt_at": item.next_attempt_at.isoformat(),
        "last_error": item.last_error,
        "claimed_by": item.claimed_by,
        "body": item.body.decode("utf-8", errors="replace"),
    }


def _line(item: InboxItem) -> str:
    error = f"\n      {printable(item.last_error)}" if item.last_error else ""
    return (
        f"{item.id:>7}  {item.state.value:<7}  {printable(item.channel)}/"
        f"{printable(item.account)}  key {printable(item.key)}  tries {item.attempts}  "
        f"received {item.received_at:%Y-%m-%d %H:%M:%S} UTC  {len(item.body)} bytes{error}"
    )


def _summary(stats: dict[str, InboxStats]) -> str:
    if not stats:
        return "nothing waiting, nothing dead"
    return "; ".join(
        f"{printable(channel)}: pending {s.pending}, dead {s.dead}"
        for channel, s in sorted(stats.items())
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.action == "retry":
        ids = None if args.all_dead else list(args.ids)
        count = with_store(settings, lambda store: store.retry_inbox(ids, datetime.now(UTC)))
        if ids and count < len(ids):
            print(f"note: {len(ids) - count} id(s) are not dead or unknown; left alone")
        print(f"{count} entr{'y' if count == 1 else 'ies'} queued to be handled again")
        return 0 if count or not ids else 1
    state = InboxState(args.state) if args.state else None

    async def read(store: Store) -> tuple[list[InboxItem], dict[str, InboxStats]]:
        return await store.list_inbox(state, args.limit), await store.inbox_stats()

    items, stats = with_store(settings, read)
    if args.json:
        print(json_text([item_json(i) for i in items]))
        return 0
    print(_summary(stats))
    for item in items:
        print(_line(item))
    if not items:
        print("(empty)")
    elif any(i.state is InboxState.DEAD for i in items):
        print("replay: leadgate inbox retry --all-dead   (or: leadgate inbox retry ID ...)")
    return 0
