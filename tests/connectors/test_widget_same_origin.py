"""The widget on a page of the gateway's own origin (finding F08).

Per docs/channels/widget.md the gateway answers widget requests from the origins in
`allowed_origins`. A page on the gateway's own origin is such a page when that origin is
listed — but a browser sends no `Origin` header on a same-origin GET (the state), only
`Sec-Fetch-Site: same-origin`, and the widget refused it. Now a request without `Origin`
is taken as coming from the origin it was sent to when the browser says it is
same-origin and that origin is listed; everything cross-origin stays as strict."""

from __future__ import annotations

import secrets
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from conftest import ADMIN_AUTH
from playwright.async_api import expect
from widget_browser import PAGE, assert_clean, chromium, open_page, strict_csp
from widget_support import Clock, msk, settings_with_widget, specs_with_clock, widget_config

from gateway.web import create_app

Client = TestClient[Any, Any]


def made(directory: Path) -> Path:
    directory.mkdir(exist_ok=True)
    return directory


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def _gateway(
    aiohttp_client: Callable[..., Any], tmp_path: Path, origins: list[str], port: int
) -> Client:
    settings = settings_with_widget(
        made(tmp_path), widget_config(allowed_origins=origins, prechat=[])
    )
    app = create_app(settings, specs=specs_with_clock(Clock(msk(2026, 1, 12, 12, 0))))

    async def shop_page(request: web.Request) -> web.Response:
        # A page of the gateway's own origin (a landing page served beside the API).
        nonce = secrets.token_urlsafe(16)
        own = f"http://{request.host}"
        html = PAGE.format(lang="ru", nonce=nonce, gateway=own, widget="site")
        csp = strict_csp(nonce, own)
        return web.Response(
            text=html, content_type="text/html", headers={"Content-Security-Policy": csp}
        )

    app.router.add_get("/shop", shop_page)
    client: Client = await aiohttp_client(TestServer(app, host="127.0.0.1", port=port))
    return client


@pytest.mark.browser
async def test_a_page_on_the_gateways_own_listed_origin_shows_and_uses_the_widget(
    aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    port = free_port()
    own = f"http://127.0.0.1:{port}"
    api = await _gateway(aiohttp_client, tmp_path, ["https://shop.example.ru", own], port)
    async with chromium() as browser:
        page, watched = await open_page(browser, f"{own}/shop")
        await page.locator("button.launcher").click()
        chat = page.locator("#lg-pane-chat")
        await chat.locator("input[name=consent]").check()
        await chat.get_by_role("button", name="Начать чат").click()
        await chat.get_by_label("Сообщение").fill("Здравствуйте, я с вашего сайта")
        await page.keyboard.press("Enter")
        await expect(chat.locator(".msg.in").first).not_to_have_class("msg in pending")
        resp = await api.get("/v1/leads", params={"channel": "chat"}, headers=ADMIN_AUTH)
        assert len((await resp.json())["leads"]) == 1
        await assert_clean(page, watched)


async def test_same_origin_without_origin_header_only_for_a_listed_own_origin(
    aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    port = free_port()
    own = f"http://127.0.0.1:{port}"
    listed = await _gateway(aiohttp_client, tmp_path / "a", [own], port)
    same = {"Sec-Fetch-Site": "same-origin"}
    resp = await listed.get("/v1/widget/site/state", headers=same)
    assert resp.status == 200, await resp.text()
    assert resp.headers["Access-Control-Allow-Origin"] == own
    # Strict otherwise: no Origin and no same-origin word from the browser (curl, an old
    # browser), a cross-site or same-site fetch, or an Origin of "null".
    for headers in (
        {},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Sec-Fetch-Site": "none"},
        {"Origin": "null", "Sec-Fetch-Site": "same-origin"},
        {"Origin": "https://evil.example", "Sec-Fetch-Site": "same-origin"},
    ):
        resp = await listed.get("/v1/widget/site/state", headers=headers)
        assert resp.status == 403, headers
    # The gateway's own origin not listed: refused like any other unlisted site.
    port2 = free_port()
    unlisted = await _gateway(aiohttp_client, tmp_path / "b", ["https://shop.example.ru"], port2)
    resp = await unlisted.get("/v1/widget/site/state", headers=same)
    assert resp.status == 403
    resp = await unlisted.get(
        "/v1/widget/site/state", headers={"Origin": f"http://127.0.0.1:{port2}"}
    )
    assert resp.status == 403
