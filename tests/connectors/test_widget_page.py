"""The page a widget request came from (finding F05): whatever a post carries as `page`,
the request is answered as without it — never a 500 — and only a well-formed http(s)
address is kept on the event (`meta.page`) for the seller."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from conftest import ADMIN_AUTH
from widget_support import ORIGIN, Clock, msk, settings_with_widget, specs_with_clock, widget_config

from gateway.web import create_app

Client = TestClient[Any, Any]

DROPPED = {
    "broken IPv6 literal": "http://[::1",
    "not an IPv6 address": "http://[shop.example.ru]/",
    "port out of range": "https://shop.example.ru:99999/",
    "port not a number": "https://shop.example.ru:8o/",
    "javascript": "javascript:alert(document.cookie)",
    "data": "data:text/html,<script>alert(1)</script>",
    "no host": "https:///path",
    "NUL": "https://shop.example.ru/\x00x",
    "newline": "https://shop.example.ru/\r\nSet-Cookie: a=b",
    "zero-width space": "https://shop.exa\u200bmple.ru/",
    "bidi override": "https://shop.example.ru/\u202egnp.exe",
    "space": "https://shop example.ru/",
    "invalid IDNA": "https://xn--80ak6aa92e.xn--zz/",
    "hyphens": "https://-shop-.example.ru/",
    "too long": "https://shop.example.ru/" + "a" * 1000,
    "empty": "",
    "number": 5,
    "list": ["https://shop.example.ru/"],
    "object": {"href": "https://shop.example.ru/"},
}
KEPT = {
    "plain": "https://shop.example.ru/catalog?page=2#top",
    "IDN": "https://строймаш.рф/каталог",
    "IPv6": "http://[2001:db8::1]:8080/",
    "underscore": "https://my_shop.example.ru/",
}


@pytest.fixture
async def client(aiohttp_client: Callable[..., Any], tmp_path: Path) -> Client:
    widget = widget_config(limits={"submissions_per_ip": 1000})
    app = create_app(
        settings_with_widget(tmp_path, widget),
        specs=specs_with_clock(Clock(msk(2026, 1, 12, 12, 0))),
    )
    made: Client = await aiohttp_client(app)
    return made


async def post(client: Client, tab: str, page: Any, n: int) -> dict[str, Any]:
    body = {
        "phone": f"+7916123{n:04d}",
        "email": f"v{n}@example.ru",
        "name": "Гость",
        "consent": True,
        "page": page,
    }
    resp = await client.post(f"/v1/widget/site/{tab}", json=body, headers={"Origin": ORIGIN})
    assert resp.status == 201, (page, await resp.text())
    leads = await client.get("/v1/leads", headers=ADMIN_AUTH, params={"limit": "500"})
    newest = (await leads.json())["leads"][0]
    full = await client.get(f"/v1/leads/{newest['id']}", headers=ADMIN_AUTH)
    meta: dict[str, Any] = (await full.json())["events"][-1]["meta"]
    return meta


@pytest.mark.parametrize("tab", ["callback", "form"])
async def test_odd_pages_are_dropped_never_a_500(client: Client, tab: str) -> None:
    for n, (case, page) in enumerate(DROPPED.items()):
        meta = await post(client, tab, page, n)
        assert "page" not in meta, case
        assert meta["consent"]["widget"] == "site"  # the request itself went through


async def test_well_formed_pages_are_kept(client: Client) -> None:
    for n, page in enumerate(KEPT.values()):
        assert (await post(client, "callback", page, 100 + n))["page"] == page
