"""`leadgate quarantine list|show|release|delete`: authentic input that made no event.

Through the Store protocol in its client role, like `outbox`. `release` records a request
that the running gateway answers (gateway.quarantine): the CLI cannot make events itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from gateway.cli.store import AnySettings, with_store
from gateway.cli.times import shown
from gateway.identity import mask_text
from gateway.store.base import QuarantineEntry, QuarantineState, Store

STATES = tuple(state.value for state in QuarantineState)
PREVIEW_CHARS = 4000


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "quarantine", help="inspect, release or delete input kept because it made no event"
    )
    actions = parser.add_subparsers(dest="action", required=True)
    ls = actions.add_parser("list", help="kept input, oldest first (bodies not shown)")
    ls.add_argument("--channel")
    ls.add_argument("--state", choices=STATES)
    ls.add_argument("--limit", type=int, default=50)
    ls.add_argument("--json", action="store_true")
    show = actions.add_parser("show", help="one entry with its headers and body (masked)")
    show.add_argument("id", type=int, metavar="ID")
    output = show.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="unmasked, body as text")
    output.add_argument("--raw", action="store_true", help="the body's exact bytes only")
    release = actions.add_parser(
        "release", help="ask the gateway to run entries through their channel again"
    )
    release.add_argument("ids", nargs="+", type=int, metavar="ID")
    release.add_argument(
        "--wait",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="wait this long for the gateway's answer (0: do not wait)",
    )
    delete = actions.add_parser("delete", help="forget entries for good")
    delete.add_argument("ids", nargs="+", type=int, metavar="ID")


def entry_json(entry: QuarantineEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "channel": entry.channel,
        "reason": entry.reason,
        "received_at": entry.received_at.isoformat(),
        "state": entry.state.value,
        "note": entry.note,
        "updated_at": entry.updated_at.isoformat() if entry.updated_at else None,
        "headers": entry.headers,
        "body": entry.body.decode("utf-8", "replace"),
        "size": len(entry.body),
    }


def _line(entry: QuarantineEntry, tz: tzinfo) -> str:
    line = (
        f"{entry.id:>6}  {shown(entry.received_at, tz)}  {entry.channel:<8}  "
        f"{entry.state.value:<8}  {mask_text(entry.reason)}  ({len(entry.body)} bytes)"
    )
    if entry.note:
        line += f"\n        {mask_text(entry.note)}"
    return line


def run(args: argparse.Namespace, settings: AnySettings) -> int:
    tz = ZoneInfo(settings.calendar.timezone)
    if args.action == "list":
        state = QuarantineState(args.state) if args.state else None

        async def read(store: Store) -> list[QuarantineEntry]:
            return await store.list_quarantine(args.channel, args.limit, state=state)

        entries = with_store(settings, read)
        if args.json:
            print(json.dumps([entry_json(e) for e in entries], ensure_ascii=False, indent=2))
            return 0
        for entry in entries:
            print(_line(entry, tz))
        if not entries:
            print("(empty)")
        return 0
    if args.action == "show":
        return _show(args, settings, tz)
    if args.action == "delete":
        return _delete(settings, args.ids)
    return _release(settings, args.ids, args.wait, tz)


def _show(args: argparse.Namespace, settings: AnySettings, tz: tzinfo) -> int:
    found = with_store(settings, lambda store: store.get_quarantine(args.id))
    if found is None:
        print(f"leadgate: no quarantine entry {args.id}", file=sys.stderr)
        return 1
    if args.raw:
        sys.stdout.buffer.write(found.body)
        return 0
    if args.json:
        print(json.dumps(entry_json(found), ensure_ascii=False, indent=2))
        return 0
    print(_line(found, tz))
    for name, value in found.headers.items():
        print(f"  {name}: {mask_text(str(value))}")
    text = found.body.decode("utf-8", "replace")
    # The terminal is a log too: masked; --json or --raw give the body as it came.
    print()
    print(mask_text(text[:PREVIEW_CHARS]))
    if len(text) > PREVIEW_CHARS:
        print(f"… ({len(text) - PREVIEW_CHARS} more characters: --raw for all of it)")
    return 0


def _delete(settings: AnySettings, ids: list[int]) -> int:
    async def delete(store: Store) -> list[int]:
        return [i for i in ids if not await store.delete_quarantine(i)]

    missing = with_store(settings, delete)
    for i in ids:
        print(f"{i}: {'no such entry' if i in missing else 'deleted'}")
    return 1 if missing else 0


def _release(settings: AnySettings, ids: list[int], wait: float, tz: tzinfo) -> int:
    async def release(store: Store) -> dict[int, QuarantineEntry | None]:
        now = datetime.now(UTC)
        for i in ids:
            await store.mark_quarantine(i, QuarantineState.RELEASE, "release asked", now)
        deadline = time.monotonic() + max(0.0, wait)
        while True:
            entries = {i: await store.get_quarantine(i) for i in ids}
            waiting = [e for e in entries.values() if e and e.state is QuarantineState.RELEASE]
            if not waiting or time.monotonic() >= deadline:
                return entries
            await asyncio.sleep(0.25)

    entries = with_store(settings, release)
    code = 0
    for i, entry in entries.items():
        if entry is None:
            print(f"{i}: no such entry")
            code = 1
        elif entry.state is QuarantineState.RELEASE:
            print(
                f"{i}: release asked; no gateway answered yet (it runs the request when it "
                f"runs): leadgate quarantine show {i}"
            )
        else:
            print(f"{i}: {entry.state.value} — {mask_text(entry.note or '')}")
            if entry.state is QuarantineState.KEPT:
                code = 1
    return code
