"""The mailbox as ops see it: a connection lost to a real IMAP server shows on /readyz
within one poll interval (not after `stale_minutes`), and on the /ops page; it clears when
the poller is connected again. Dovecot is started by this test (tests/imap_server.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import ADMIN_AUTH, make_settings
from imap_server import running_dovecot
from test_email_imap import email_settings, mailbox, until

from gateway.web import create_app


async def test_a_lost_mailbox_shows_on_readyz_within_one_poll(
    aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    with running_dovecot() as dovecot:
        user = "lost-connection@stroymash-market.ru"
        dovecot.deliver(user, b"From: a@example.ru\r\nSubject: hi\r\n\r\nhello\r\n")
        # stale_minutes is long (the default, 30): only the lost connection can report it.
        box = mailbox(dovecot, user, idle=False, poll_seconds=0.5, backoff_max_seconds=1)
        client = await aiohttp_client(
            create_app(make_settings(tmp_path, email=email_settings(box)))
        )

        async def ready() -> dict[str, Any]:
            body: dict[str, Any] = await (await client.get("/readyz")).json()
            return body

        async def email_problem() -> str | None:
            found = [p for p in (await ready())["problems"] if p.startswith("email:")]
            return found[0] if found else None

        async def connected() -> bool:
            data = await (await client.get("/ops/data", headers=ADMIN_AUTH)).json()
            line = data["connectors"]["email"]["status"].get("sales/INBOX", "")
            return str(line).startswith("connected; read at")

        await until(connected, "the first read")
        assert await email_problem() is None
        # A dropped connection: shown at once, gone once the poller is back.
        dovecot.kick(user)
        await until(lambda: email_problem(), "the drop on /readyz", within=3.0)
        await until(connected, "the reconnect", within=15.0)
        assert await email_problem() is None
        # The server goes away: open connections dropped (its IMAP processes outlive the
        # master otherwise), new ones refused.
        dovecot.kick(user)
        dovecot.stop()
        await until(lambda: email_problem(), "the lost connection on /readyz", within=3.0)
        problem = await email_problem()
        assert problem is not None
        assert problem.startswith("email: sales/INBOX disconnected since ")
        page = await (
            await client.get("/ops", headers={**ADMIN_AUTH, "Accept": "text/html"})
        ).text()
        assert "sales/INBOX: нет соединения с" in page
