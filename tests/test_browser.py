"""What people see, in a real browser: Debian's /usr/bin/chromium, headless, driven by
Playwright (no browser is downloaded: `executable_path` names the system one).

- the /ops page renders with a day of data, its charts drawn, refreshes a number without
  reloading, and logs no console error (screenshots for docs/operations.md);
- after `leadgate init`, the quickstart's plain HTML form lands the visitor on the thank-you
  page, and a mistake on a readable Russian page;
- a windows-1251 site's form without accept-charset makes a lead in readable Cyrillic.

Set DOCS_SCREENSHOTS=docs/img to write the docs' screenshots; otherwise they go to the
test's temporary directory.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from conftest import ADMIN_AUTH, ADMIN_TOKEN, make_settings
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright, expect

from gateway import ops_render
from gateway.cli import main
from gateway.config import load_settings
from gateway.keys import STORE
from gateway.metrics import Metrics
from gateway.models import Channel, Contact, LeadEvent
from gateway.store.base import LeadQuery
from gateway.store.sqlite import SQLiteStore
from gateway.web import create_app, make_pipeline

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
HAVE_CHROMIUM = os.path.exists(CHROMIUM)
ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "docs" / "quickstart.md"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not HAVE_CHROMIUM:
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)")
    async with async_playwright() as p:
        launched = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield launched
        finally:
            await launched.close()


def shots(tmp_path: Path) -> Path:
    target = os.environ.get("DOCS_SCREENSHOTS")
    return (ROOT / target) if target else tmp_path


def console_errors(page: Page) -> list[str]:
    errors: list[str] = []

    def seen(message: ConsoleMessage) -> None:
        # The browser's own favicon request is no error of the page.
        if message.type == "error" and not message.location.get("url", "").endswith("/favicon.ico"):
            errors.append(f"{message.text} ({message.location.get('url')})")

    page.on("console", seen)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return errors


# --- /ops ---------------------------------------------------------------------------------------


def _day_of_events(now: datetime) -> list[LeadEvent]:
    """The last 24 hours of a working day's traffic: forms, orders, calls and mail, by the
    hour of day in Moscow (busy in working hours, a few forms and mails at night)."""
    by_hour = {  # Moscow hour of day -> events in it
        Channel.WEBFORM: {8: 1, 9: 2, 10: 4, 11: 6, 12: 5, 13: 4, 14: 5, 15: 6, 16: 4, 17: 3,
                          18: 2, 19: 1, 21: 1, 23: 1},
        Channel.ORDERS: {10: 1, 11: 2, 12: 1, 13: 2, 14: 1, 15: 1, 16: 2, 17: 1, 20: 1},
        Channel.PHONE: {10: 2, 11: 3, 12: 3, 13: 4, 14: 2, 15: 3, 16: 2, 17: 3, 18: 2},
        Channel.EMAIL: {0: 1, 8: 1, 9: 1, 10: 1, 11: 2, 12: 1, 14: 1, 15: 1, 16: 1, 22: 1},
    }  # fmt: skip
    moscow = ZoneInfo("Europe/Moscow")
    events: list[LeadEvent] = []
    n = 0
    for channel, hours in by_hour.items():
        for hours_ago in range(24):
            start = (now - timedelta(hours=hours_ago)).replace(minute=0, second=0, microsecond=0)
            for i in range(hours.get(start.astimezone(moscow).hour, 0)):
                at = start + timedelta(minutes=(11 * i + 5 * n) % 60, seconds=n % 60)
                if at > now:
                    continue
                n += 1
                events.append(
                    LeadEvent(
                        channel=channel,
                        external_id=f"seed-{n}",
                        occurred_at=at,
                        received_at=at,
                        contact=Contact(name=f"Клиент {n}", phones=(f"+7916{n:07d}",)),
                        text="Нужен подъёмник",
                    )
                )
    return sorted(events, key=lambda e: e.received_at)


async def _seed(settings: Any, events: list[LeadEvent]) -> None:
    store = SQLiteStore(settings.store.path)
    await store.open()
    pipeline = make_pipeline(settings, store, Metrics())
    for event in events:
        await pipeline.accept(event)
    await store.close()


async def test_ops_page_renders_refreshes_and_logs_no_error(
    browser: Browser,
    aiohttp_server: Callable[..., Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = make_settings(
        tmp_path,
        telephony={"cti": {"token": "browser-test-cti-token-0123456789"}},
        email={
            "mailboxes": {
                "sales": {
                    "host": "127.0.0.1",
                    "port": 9,  # nothing listens: the mailbox shows as disconnected
                    "security": "plain",
                    "username": "sales@stroymash-market.ru",
                    "password": "x",
                    "backoff_max_seconds": 60,
                }
            }
        },
    )
    await _seed(settings, _day_of_events(datetime.now(UTC)))
    app = create_app(settings)
    server: TestServer = await aiohttp_server(app)
    base = str(server.make_url("")).rstrip("/")
    async with aiohttp.ClientSession() as http:
        for _ in range(200):  # the mailbox's first refusal, so the page shows it
            ready = await (await http.get(f"{base}/readyz")).json()
            if any(p.startswith("email:") for p in ready["problems"]):
                break
            await asyncio.sleep(0.05)
    page = await browser.new_page(viewport={"width": 1200, "height": 900}, locale="ru-RU")
    await page.goto(f"{base}/ops")  # the login form (a 401: not counted below)
    errors = console_errors(page)
    await page.fill("input[name=token]", ADMIN_TOKEN)
    await page.click("button")
    await page.wait_for_selector("#chart-day")

    assert await page.locator("#chart-day rect[fill]").count() > 20  # bars drawn
    assert await page.locator("#chart-recent").count() == 1
    # One row per channel that is on or has events: forms (webform, callback), orders,
    # phone, email.
    assert await page.locator("svg.spark").count() == 5
    before = int(await page.locator('[data-metric="leads-new"]').inner_text())
    assert before > 20
    assert await page.locator("#state").inner_text() == "с проблемами"  # the mailbox
    assert "sales/INBOX" in await page.locator('[data-connector="email"]').inner_text()
    await page.screenshot(path=str(shots(tmp_path) / "ops.png"), full_page=True)

    # The page's own refresh, made faster for the test, then loaded again.
    monkeypatch.setattr(ops_render, "REFRESH_SECONDS", 1)
    await page.reload()
    await page.evaluate("window.__sameDocument = true")

    # A new lead arrives; the page shows it on its next refresh, without a reload.
    async with aiohttp.ClientSession() as http:
        resp = await http.post(
            f"{base}/v1/forms/site", json={"name": "Новый", "phone": "+79035550011"}
        )
        assert resp.status == 201
    # (expect() polls from outside the page: its CSP allows no eval of a predicate.)
    await expect(page.locator('[data-metric="leads-new"]')).to_have_text(
        str(before + 1), timeout=10_000
    )
    assert await page.evaluate("window.__sameDocument") is True
    assert errors == []

    # The English reader gets the same page in English.
    english = await browser.new_page(viewport={"width": 1200, "height": 900}, locale="en-US")
    await english.set_extra_http_headers({**ADMIN_AUTH, "Accept-Language": "en"})
    await english.goto(f"{base}/ops")
    assert await english.locator("#state").inner_text() == "degraded"
    await server.close()


# --- the newcomer's HTML form ------------------------------------------------------------------


def quickstart_form(action: str) -> str:
    """The plain HTML form of docs/quickstart.md, posting to `action`."""
    text = QUICKSTART.read_text(encoding="utf-8")
    html = re.search(r"```html\n(.*?)```", text, re.S)
    assert html is not None, "docs/quickstart.md lost its HTML form"
    form = html.group(1)
    assert 'action="https://leads.example.ru/v1/forms/site"' in form
    return form.replace("https://leads.example.ru/v1/forms/site", action)


@pytest.fixture
async def site(aiohttp_server: Callable[..., Any]) -> AsyncIterator[Callable[[str, str], Any]]:
    """A stand-in for the customer's website: serves one page, in the charset it is given."""
    pages: dict[str, tuple[bytes, str]] = {}

    async def serve(request: web.Request) -> web.Response:
        if request.path not in pages:
            raise web.HTTPNotFound()
        body, charset = pages[request.path]
        return web.Response(body=body, headers={"Content-Type": f"text/html; charset={charset}"})

    app = web.Application()
    app.router.add_get("/{name}", serve)
    server: TestServer = await aiohttp_server(app)

    def publish(html: str, charset: str) -> Any:
        name = f"/page{len(pages)}"
        head = f'<!doctype html><html><head><meta charset="{charset}"></head>'
        doc = f"{head}<body>{html}</body></html>"
        pages[name] = (doc.encode(charset), charset)
        return server.make_url(name)

    yield publish


async def test_after_init_a_plain_html_form_lands_on_the_thank_you_page(
    browser: Browser,
    aiohttp_server: Callable[..., Any],
    site: Callable[[str, str], Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    assert await asyncio.to_thread(main, ["init"]) == 0
    config = (tmp_path / "leadgate.toml").read_text(encoding="utf-8")
    assert re.search(r"^thank_you_url", config, re.M) is None  # only as a comment
    assert "# allowed_origins" in config
    app = create_app(load_settings(tmp_path / "leadgate.toml"))
    gateway: TestServer = await aiohttp_server(app)
    action = str(gateway.make_url("/v1/forms/site"))
    page = await browser.new_page(locale="ru-RU")
    errors = console_errors(page)

    await page.goto(str(site(quickstart_form(action), "utf-8")))
    await page.fill("input[name=name]", "Ольга")
    await page.fill("input[name=phone]", "8 903 555-66-77")
    await page.select_option("select[name=equipment_type]", "Крупное")
    await page.click("button")
    await page.wait_for_load_state()
    assert page.url.endswith("/v1/forms/site/thanks")
    assert "Спасибо! Заявка принята." in await page.inner_text("body")
    assert errors == []
    leads = await app[STORE].list_leads(LeadQuery())
    assert [lead.contact.name for lead in leads] == ["Ольга"]

    # A mistake the browser did not catch (a phone too short) comes back as a page.
    await page.goto(str(site(quickstart_form(action), "utf-8")))
    await page.fill("input[name=name]", "Пётр")
    await page.fill("input[name=phone]", "123")
    await page.click("button")
    await page.wait_for_load_state()
    body = await page.inner_text("body")
    assert "Заявка не отправлена" in body and "Укажите телефон полностью" in body
    await gateway.close()


async def test_a_windows_1251_site_without_accept_charset_makes_readable_leads(
    browser: Browser,
    aiohttp_server: Callable[..., Any],
    site: Callable[[str, str], Any],
    tmp_path: Path,
) -> None:
    app = create_app(make_settings(tmp_path))
    gateway: TestServer = await aiohttp_server(app)
    action = str(gateway.make_url("/v1/forms/site"))
    page = await browser.new_page(locale="ru-RU")
    for enctype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        legacy = (
            f'<form method="post" action="{action}" enctype="{enctype}">'
            '<input name="name"><input name="phone"><textarea name="comment"></textarea>'
            "<button>Отправить</button></form>"
        )
        await page.goto(str(site(legacy, "windows-1251")))
        await page.fill("input[name=name]", "Иван Петров")
        await page.fill("input[name=phone]", "+7 916 123-45-67")
        await page.fill("textarea[name=comment]", f"Нужен погрузчик, ёмкость 3 т ({enctype})")
        await page.click("button")
        await page.wait_for_load_state()
        assert page.url.endswith("/thanks"), await page.content()
    async with aiohttp.ClientSession() as http:
        leads = await (
            await http.get(str(gateway.make_url("/v1/leads")), headers=ADMIN_AUTH)
        ).json()
    names = {lead["contact"]["name"] for lead in leads["leads"]}
    assert names == {"Иван Петров"}
    lead_id = leads["leads"][0]["id"]
    async with aiohttp.ClientSession() as http:
        full = await (
            await http.get(str(gateway.make_url(f"/v1/leads/{lead_id}")), headers=ADMIN_AUTH)
        ).json()
    texts = [event["text"] for event in full["events"]]
    assert any("ёмкость 3 т (application/x-www-form-urlencoded)" in t for t in texts)
    assert any("ёмкость 3 т (multipart/form-data)" in t for t in texts)
    assert not any("\ufffd" in t for t in texts)  # no replacement characters: no mojibake
    await gateway.close()
