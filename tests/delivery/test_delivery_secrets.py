"""A CRM that echoes the request path in its errors must not leak the webhook's secret.

The attack: /readyz and /ops answer without a token, and the outbox worker shows the
sink's last error there. Bitrix24's inbound webhook carries its secret in the path
(/rest/<user>/<secret>/...), so an error that quotes the path (a proxy's 404, a PHP error,
an error code that is the path itself) would put the secret on a public page, in the log
and in `leadgate outbox`. Here the stand-in echoes the path in every spelling a server
might use: as sent, upper-cased, percent-encoded, PHP-escaped ("\\/"), inside the error
code. The webhook sink gets the same treatment from a receiver that echoes its URL.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from b24_standin import Bitrix24StandIn
from conftest import make_settings
from helpers import ORDER_AUTH, fast_delivery, order, standin, until

from gateway.cli import main
from gateway.keys import STORE
from gateway.logs import setup_logging
from gateway.web import create_app

__all__ = ["standin"]

Client = TestClient[Any, Any]


def leaks(text: str, secret: str) -> bool:
    """Does `text` show `secret`, in any spelling a reader could undo?"""
    flat = urllib.parse.unquote(text.replace("\\/", "/")).lower()
    return secret.lower() in flat or secret.lower() in text.lower()


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """The handler `leadgate serve` installs, writing into a buffer."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    buffer = io.StringIO()
    setup_logging("DEBUG", stream=buffer)
    yield buffer
    root.handlers[:] = handlers
    root.setLevel(level)


async def _everything_shown(client: Client, tmp_path: Path, capsys: Any) -> str:
    """/readyz, /ops, the stored errors and `leadgate outbox list/dlq` output, together."""
    parts = [await (await client.get("/readyz")).text(), await (await client.get("/ops")).text()]
    items = await client.app[STORE].outbox(None, 100)
    parts += [item.last_error or "" for item in items]
    config = tmp_path / "cli.toml"
    config.write_text(f'[store]\npath = "{tmp_path / "leadgate.db"}"\n', encoding="utf-8")
    capsys.readouterr()
    # The CLI runs its own event loop: from inside this test's loop, in a thread.
    assert await asyncio.to_thread(main, ["-c", str(config), "outbox", "list", "--json"]) == 0
    assert await asyncio.to_thread(main, ["-c", str(config), "outbox", "list"]) == 0
    parts.append(capsys.readouterr().out)
    return "\n".join(parts)


@pytest.mark.parametrize(
    ("status", "error", "description"),
    [
        (404, "ERROR_METHOD_NOT_FOUND", "no handler for {path}"),
        (500, "{path}", "Internal server error"),  # the code itself is the path
        (503, "QUERY_LIMIT_EXCEEDED", "limit for {path}"),  # a throttle, shown on /readyz
        (401, "NO_AUTH_FOUND", "wrong auth for {path}"),  # a halt: the error log and /readyz
        (500, "INTERNAL_SERVER_ERROR", "upper {PATH}"),
        (500, "INTERNAL_SERVER_ERROR", "encoded {QUOTED}"),
        (500, "INTERNAL_SERVER_ERROR", "php {ESCAPED}"),
    ],
)
async def test_bitrix24_error_echoing_the_path_leaks_no_secret(
    aiohttp_client: Callable[..., Any],
    tmp_path: Path,
    standin: Bitrix24StandIn,
    log_stream: io.StringIO,
    capsys: pytest.CaptureFixture[str],
    status: int,
    error: str,
    description: str,
) -> None:
    path = f"/rest/{standin.user}/{standin.secret}/batch.json"
    description = (
        description.replace("{PATH}", path.upper())
        .replace("{QUOTED}", urllib.parse.quote(path, safe=""))
        .replace("{ESCAPED}", path.replace("/", "\\/"))
    )
    standin.fail(1000, status=status, error=error, description=description)
    settings = make_settings(tmp_path, delivery=fast_delivery(standin.webhook_url))
    client: Client = await aiohttp_client(create_app(settings))
    resp = await client.post("/v1/orders", json=order(1, "+7 916 123-45-67"), headers=ORDER_AUTH)
    assert resp.status == 201

    async def failed_visibly() -> bool:
        items = await client.app[STORE].outbox(None, 10)
        ready = await (await client.get("/readyz")).json()
        return any(i.last_error for i in items) and bool(ready["problems"])

    await until(failed_visibly)
    shown = await _everything_shown(client, tmp_path, capsys) + log_stream.getvalue()
    assert "***" in shown  # the echo did arrive, masked
    assert not leaks(shown, standin.secret)
    assert not leaks(shown, f"{standin.user}/{standin.secret}")


class EchoingReceiver:
    """A CRM endpoint that refuses everything and quotes the URL it was called on."""

    async def handle(self, request: web.Request) -> web.Response:
        url = str(request.url)
        body = {
            "error": f"cannot route {request.path_qs}",
            "url": url,
            "quoted": urllib.parse.quote(url, safe=""),
        }
        return web.Response(status=500, text=json.dumps(body).replace("/", "\\/"))


@pytest.fixture
async def echoing() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/hooks/{key}", EchoingReceiver().handle)
    server = TestServer(app)
    await server.start_server()
    yield str(server.make_url("/hooks/k8f3j2l9q0w1e2r3?token=abcdef123456&v=2"))
    await server.close()


async def test_webhook_sink_error_echoing_its_url_leaks_no_secret(
    aiohttp_client: Callable[..., Any],
    tmp_path: Path,
    echoing: str,
    log_stream: io.StringIO,
    capsys: pytest.CaptureFixture[str],
) -> None:
    delivery = fast_delivery()
    delivery.update(sink="webhook", webhook={"url": echoing, "secret": "sink-hmac-secret-77"})
    client: Client = await aiohttp_client(create_app(make_settings(tmp_path, delivery=delivery)))
    resp = await client.post("/v1/orders", json=order(2, "+7 916 123-45-68"), headers=ORDER_AUTH)
    assert resp.status == 201

    async def failed_visibly() -> bool:
        return any(i.last_error for i in await client.app[STORE].outbox(None, 10))

    await until(failed_visibly)
    shown = await _everything_shown(client, tmp_path, capsys) + log_stream.getvalue()
    assert "cannot route" in shown
    for secret in ("k8f3j2l9q0w1e2r3", "abcdef123456"):
        assert not leaks(shown, secret), secret
