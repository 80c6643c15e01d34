"""`leadgate openlines setup|status`: connect the installed application to its Open Line.

Runs beside a running gateway: it reads (and, when it renews the access token, writes) the
application's tokens through the store's client role. It sends a handful of requests to
the portal; the gateway's own budget for that portal does not see them, which the portal's
burst of 50 absorbs.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING, Any

import orjson

from gateway.config import Settings, store_name
from gateway.store.base import StoreUnavailable

if TYPE_CHECKING:
    from gateway.delivery.openlines.tokens import TokenKeeper


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("openlines", help="Bitrix24 Open Lines: set up, inspect")
    actions = parser.add_subparsers(dest="action", required=True)
    setup = actions.add_parser(
        "setup", help="register the connector, activate it on the line, bind the events"
    )
    setup.add_argument("--json", action="store_true")
    status = actions.add_parser("status", help="the installation as the store holds it")
    status.add_argument("--json", action="store_true")


def run(args: argparse.Namespace, settings: Settings) -> int:
    if not settings.openlines.configured:
        print(
            "leadgate: [openlines] is not configured (client_id, client_secret, portal, line, "
            "public_url): see docs/delivery/open-lines.md",
            file=sys.stderr,
        )
        return 2
    try:
        return asyncio.run(_main(args, settings))
    except StoreUnavailable as exc:
        print(f"leadgate: {store_name(settings.store)}: {exc}", file=sys.stderr)
        return 1


async def _main(args: argparse.Namespace, settings: Settings) -> int:
    # Imported here: `leadgate --help` need not load the REST client.
    from gateway.cli.store import opened
    from gateway.coordination import InProcessCoordination
    from gateway.delivery.openlines.service import build
    from gateway.delivery.openlines.steps import StepStatus, run_setup
    from gateway.delivery.openlines.tokens import AppState

    async with opened(settings) as store:
        # A handful of requests: the portal's burst takes them without waiting.
        keeper, client = build(settings, store, InProcessCoordination(), assume_busy=False)
        try:
            await keeper.load()
            if args.action == "status":
                return _status(keeper, args.json)
            if keeper.state is not AppState.READY:
                print(f"leadgate: {keeper.problem()}", file=sys.stderr)
                return 1
            steps = await run_setup(client, settings.openlines)
        finally:
            await client.close()
            await keeper.oauth.close()
    failed = any(s.status is StepStatus.FAILED for s in steps)
    if args.json:
        rows = [{"step": s.name, "status": s.status.value, "detail": s.detail} for s in steps]
        print(orjson.dumps({"ok": not failed, "steps": rows}, option=orjson.OPT_INDENT_2).decode())
    else:
        for s in steps:
            print(f"{s.status.value:8} {s.name}: {s.detail}")
        if failed:
            print("Open Lines: setup stopped at the failed step above", file=sys.stderr)
        else:
            print(f"Open Lines: ready, chats go to line {settings.openlines.line}")
    return 1 if failed else 0


def _status(keeper: TokenKeeper, as_json: bool) -> int:
    from gateway.delivery.openlines.tokens import AppState

    tokens = keeper.tokens
    body: dict[str, Any] = {
        "state": keeper.state.value,
        "problem": keeper.problem(),
        "member_id": tokens.member_id if tokens else None,
        "client_endpoint": tokens.client_endpoint if tokens else None,
        "scope": tokens.scope if tokens else None,
        "installed_at": tokens.installed_at.isoformat() if tokens else None,
        "access_expires_at": tokens.expires_at.isoformat() if tokens else None,
        "refreshed_at": (
            tokens.refreshed_at.isoformat() if tokens and tokens.refreshed_at else None
        ),
    }
    if as_json:
        print(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode())
    else:
        for key, value in body.items():
            if value is not None:
                print(f"{key}: {value}")
    return 0 if keeper.state is AppState.READY else 1
