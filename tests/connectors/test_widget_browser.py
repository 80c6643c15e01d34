"""The widget in a real browser (Debian's Chromium), on a shop page from another origin
served under a strict CSP: hours decided by the server and switching without a reload,
the callback and form leads with consent, the keyboard, the phone layout, and pictures of
the main states compared with references (tests/connectors/widget_screens/)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from conftest import ADMIN_AUTH
from playwright.async_api import Browser, Page, expect
from widget_browser import assert_clean, assert_looks_like, chromium, open_page, shop_site
from widget_support import Clock, msk, settings_with_widget, specs_with_clock, widget_config

from gateway.web import create_app

pytestmark = pytest.mark.browser

Client = TestClient[Any, Any]


@dataclass
class Stand:
    """A shop page, the gateway behind its widget, the gateway's clock and a browser."""

    url: str
    clock: Clock
    api: Client
    browser: Browser


async def _stand(
    tmp_path: Path,
    aiohttp_client: Callable[..., Any],
    at: Any,
    **widget: Any,
) -> AsyncIterator[Stand]:
    async with shop_site() as site:
        clock = Clock(at)
        settings = settings_with_widget(
            tmp_path, widget_config(allowed_origins=[site.origin], **widget)
        )
        app = create_app(settings, specs=specs_with_clock(clock))
        api: Client = await aiohttp_client(TestServer(app, host="127.0.0.1"))
        site.gateway = f"http://127.0.0.1:{api.server.port}"
        async with chromium() as browser:
            yield Stand(f"{site.origin}/", clock, api, browser)


@pytest.fixture
async def working_monday(
    tmp_path: Path, aiohttp_client: Callable[..., Any]
) -> AsyncIterator[Stand]:
    async for stand in _stand(tmp_path, aiohttp_client, msk(2026, 1, 12, 12, 0)):
        yield stand


@pytest.fixture
async def holiday_with_requests(
    tmp_path: Path, aiohttp_client: Callable[..., Any]
) -> AsyncIterator[Stand]:
    async for stand in _stand(
        tmp_path, aiohttp_client, msk(2026, 1, 9, 12, 0), off_hours="form_and_callback"
    ):
        yield stand


def _shadow_focus(page: Page) -> Any:
    return page.evaluate(
        """() => {
          const host = document.querySelector('[data-leadgate-widget]');
          const page = document.activeElement;
          if (page !== host) return page.id || page.tagName;
          const el = host.shadowRoot.activeElement;
          return el ? (el.getAttribute('name') || el.id || el.className || el.tagName) : null;
        }"""
    )


async def _leads(api: Client, channel: str) -> list[dict[str, Any]]:
    resp = await api.get("/v1/leads", params={"channel": channel}, headers=ADMIN_AUTH)
    leads: list[dict[str, Any]] = (await resp.json())["leads"]
    return leads


async def test_callback_request_by_keyboard_makes_a_lead(working_monday: Stand) -> None:
    stand = working_monday
    page, watched = await open_page(stand.browser, stand.url)
    launcher = page.locator("button.launcher")
    await expect(launcher).to_be_visible()
    await expect(launcher).to_have_text("Напишите нам")
    assert_looks_like(await page.screenshot(), "launcher")

    # The page's own link, then the widget's button: the widget joins the page's tab order.
    await page.keyboard.press("Tab")
    assert await _shadow_focus(page) == "catalog"
    await page.keyboard.press("Tab")
    assert await _shadow_focus(page) == "launcher"
    await page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog", name="Мы на связи")
    await expect(dialog).to_be_visible()
    assert await _shadow_focus(page) == "lg-tab-chat"
    # Arrow keys move along the tabs (WAI-ARIA tabs), the selected tab follows.
    await page.keyboard.press("ArrowRight")
    assert await _shadow_focus(page) == "lg-tab-callback"
    await expect(page.get_by_role("tab", name="Перезвоните мне")).to_have_attribute(
        "aria-selected", "true"
    )
    assert_looks_like(await page.screenshot(), "callback")

    # Tab walks the dialog and wraps around: the focus never leaves it while it is open.
    seen = []
    for _ in range(9):
        await page.keyboard.press("Tab")
        seen.append(await _shadow_focus(page))
    assert seen == [
        "lg-pane-callback",
        "name",
        "phone",
        "consent",
        "A",  # the policy link
        "submit",
        "close",  # wrapped around to the dialog's first control
        "lg-tab-callback",
        "lg-pane-callback",
    ]
    # Shift+Tab from the first element goes to the last one.
    await page.locator("button.close").focus()
    await page.keyboard.press("Shift+Tab")
    assert await _shadow_focus(page) == "submit"

    # The phone: typed as digits, shown with the mask.
    phone = page.locator("#lg-pane-callback").get_by_label("Телефон")
    await phone.focus()
    await page.keyboard.type("89161234567")
    await expect(phone).to_have_value("+7 (916) 123-45-67")
    await page.keyboard.press("Enter")  # no consent yet: said, nothing sent
    await expect(
        page.get_by_text("Нужно ваше согласие на обработку персональных данных")
    ).to_be_visible()
    assert await _leads(stand.api, "callback") == []
    consent = page.locator("#lg-pane-callback input[name=consent]")
    await consent.focus()
    await page.keyboard.press("Space")
    await page.keyboard.press("Enter")
    done = page.locator("#lg-pane-callback .done")
    await expect(done).to_have_text("Спасибо! Перезвоним до 12:15.")
    (lead,) = await _leads(stand.api, "callback")
    assert lead["contact"]["phones"] == ["+79161234567"]
    assert lead["sla_due_at"]
    full = await (await stand.api.get(f"/v1/leads/{lead['id']}", headers=ADMIN_AUTH)).json()
    meta = full["events"][0]["meta"]
    assert meta["consent"]["origin"] == stand.url.rstrip("/")
    assert meta["page"] == stand.url

    # Esc closes the dialog and gives the focus back to the button.
    await page.keyboard.press("Escape")
    await expect(dialog).to_be_hidden()
    assert await _shadow_focus(page) == "launcher"
    await assert_clean(page, watched)


async def test_form_with_consent_makes_a_webform_lead(working_monday: Stand) -> None:
    stand = working_monday
    page, watched = await open_page(stand.browser, stand.url)
    await page.locator("button.launcher").click()
    await page.get_by_role("tab", name="Заявка").click()
    form = page.locator("#lg-pane-form")
    await form.get_by_label("Имя").fill("Иван Петров")
    await form.get_by_label("Телефон").press_sequentially("9167654321")
    await form.get_by_label("Тип оборудования").select_option("Крупное")
    await form.get_by_label("Комментарий").fill("Нужен подъёмник на 3 т")
    assert_looks_like(await page.screenshot(), "form")
    await form.get_by_role("button", name="Отправить заявку").click()
    await expect(form.get_by_text("Нужно ваше согласие")).to_be_visible()
    await form.locator("input[name=consent]").check()
    await form.get_by_role("button", name="Отправить заявку").click()
    await expect(form.locator(".done")).to_have_text("Спасибо! Заявка принята.")
    (lead,) = await _leads(stand.api, "webform")
    assert lead["contact"]["phones"] == ["+79167654321"]
    assert lead["interest"]["equipment_category"] == "Крупное"
    full = await (await stand.api.get(f"/v1/leads/{lead['id']}", headers=ADMIN_AUTH)).json()
    event = full["events"][0]
    assert event["meta"]["consent"]["policy_version"] == "2025-01-10"
    assert event["text"] == "Нужен подъёмник на 3 т"
    await assert_clean(page, watched)


async def test_the_page_switches_off_at_19_without_a_reload(
    tmp_path: Path, aiohttp_client: Callable[..., Any]
) -> None:
    async for stand in _stand(tmp_path, aiohttp_client, None):
        # Set once the browser is up: the page has six seconds of working time.
        stand.clock.set(msk(2026, 1, 12, 18, 59, 54))
        page, watched = await open_page(stand.browser, stand.url)
        launcher = page.locator("button.launcher")
        await expect(launcher).to_be_visible()
        # The server said "ask again at 19:00"; the widget does, and hides itself.
        await expect(launcher).to_be_hidden(timeout=15_000)
        await assert_clean(page, watched)


async def test_the_page_switches_on_at_10_without_a_reload(
    tmp_path: Path, aiohttp_client: Callable[..., Any]
) -> None:
    async for stand in _stand(tmp_path, aiohttp_client, None):
        stand.clock.set(msk(2026, 1, 12, 9, 59, 56))
        page, watched = await open_page(stand.browser, stand.url)
        await page.wait_for_function("document.querySelector('[data-leadgate-widget]')")
        assert await page.locator("button.launcher").count() == 0  # not built while closed
        await expect(page.locator("button.launcher")).to_be_visible(timeout=15_000)
        await assert_clean(page, watched)


async def test_closed_on_a_holiday_offers_requests_with_when(
    holiday_with_requests: Stand,
) -> None:
    stand = holiday_with_requests
    page, watched = await open_page(stand.browser, stand.url)
    await page.locator("button.launcher").click()
    # No chat while closed; the callback request says when we call.
    await expect(page.get_by_role("tab", name="Чат")).to_be_hidden()
    note = page.locator("#lg-pane-callback .note")
    await expect(note).to_have_text(
        "Сейчас мы не на связи. Ответим в понедельник, 12 января, после 10:00."
    )
    assert_looks_like(await page.screenshot(), "closed")
    await assert_clean(page, watched)


async def test_english_page_reads_english(holiday_with_requests: Stand) -> None:
    stand = holiday_with_requests
    page, watched = await open_page(stand.browser, f"{stand.url}?lang=en", locale="en-GB")
    await page.locator("button.launcher").click()
    await expect(page.get_by_role("tab", name="Call me back")).to_be_visible()
    await expect(page.locator("#lg-pane-callback .note")).to_have_text(
        "We are closed now. We will answer on Monday, January 12, after 10:00."
    )
    await assert_clean(page, watched)


async def test_phones_get_the_whole_screen(working_monday: Stand) -> None:
    stand = working_monday
    page, watched = await open_page(stand.browser, stand.url, phone=True)
    await page.locator("button.launcher").click()
    await page.get_by_role("tab", name="Перезвоните мне").click()
    box = await page.locator(".panel").bounding_box()
    assert box == {"x": 0, "y": 0, "width": 390, "height": 760}
    assert_looks_like(await page.screenshot(), "phone")
    await page.get_by_role("button", name="Закрыть").click()
    await expect(page.locator("button.launcher")).to_be_visible()
    await assert_clean(page, watched)


async def test_chat_sends_receives_and_resumes_after_reload_and_drop(
    working_monday: Stand,
) -> None:
    stand = working_monday
    page, watched = await open_page(stand.browser, stand.url)
    await page.locator("button.launcher").click()
    chat = page.locator("#lg-pane-chat")
    # The prechat: a phone asks for consent; then the chat.
    await chat.get_by_label("Имя").fill("Анна")
    await chat.get_by_label("Телефон").press_sequentially("9161234567")
    await chat.get_by_role("button", name="Начать чат").click()
    await expect(chat.get_by_text("Нужно ваше согласие")).to_be_visible()
    await chat.locator("input[name=consent]").check()
    await chat.get_by_role("button", name="Начать чат").click()
    box = chat.get_by_label("Сообщение")
    await expect(box).to_be_focused()
    await box.fill("Здравствуйте! Есть подъёмник на 4 т?")
    await page.keyboard.press("Enter")
    mine = chat.locator(".msg.in")
    await expect(mine).to_have_count(1)
    await expect(mine.first).not_to_have_class("msg in pending")
    (lead,) = await _leads(stand.api, "chat")
    assert lead["contact"]["phones"] == ["+79161234567"]

    # A seller answers through the API: on the page within a second.
    started = asyncio.get_running_loop().time()
    resp = await stand.api.post(
        f"/v1/leads/{lead['id']}/messages",
        json={"text": "Да, в наличии. Доставка завтра."},
        headers=ADMIN_AUTH,
    )
    assert resp.status == 202
    reply = chat.locator(".msg:not(.in)").filter(has_text="Да, в наличии")
    await expect(reply).to_be_visible(timeout=5_000)
    assert asyncio.get_running_loop().time() - started < 1.0
    assert_looks_like(await page.screenshot(), "chat")

    # A reload: the same visitor, the same conversation with its history.
    await page.reload()
    await page.locator("button.launcher").click()
    await expect(chat.locator(".msg.in")).to_have_text(["ВыЗдравствуйте! Есть подъёмник на 4 т?"])
    await expect(chat.get_by_text("Да, в наличии. Доставка завтра.")).to_be_visible()

    # Another tab of the same browser shows the same chat, and what either tab says.
    other = await page.context.new_page()
    await other.goto(stand.url)
    await other.locator("button.launcher").click()
    await expect(other.get_by_text("Да, в наличии. Доставка завтра.")).to_be_visible()
    await chat.get_by_label("Сообщение").fill("А монтаж?")
    await page.keyboard.press("Enter")
    await expect(other.get_by_text("А монтаж?")).to_be_visible()

    # What a seller writes is text, never markup.
    markup = '<img src=x onerror="document.title=1"><b>жирный</b>'
    await stand.api.post(
        f"/v1/leads/{lead['id']}/messages", json={"text": markup}, headers=ADMIN_AUTH
    )
    await expect(chat.locator(".msg .text").filter(has_text="жирный")).to_have_text(markup)
    assert await chat.locator(".msg img, .msg b").count() == 0

    # The network drops (the gateway closes every socket): the page reconnects by itself,
    # and a reply sent meanwhile arrives.
    await _drop_sockets(stand)
    await stand.api.post(
        f"/v1/leads/{lead['id']}/messages", json={"text": "Монтаж тоже делаем."}, headers=ADMIN_AUTH
    )
    await expect(chat.get_by_text("Монтаж тоже делаем.")).to_be_visible(timeout=15_000)
    await assert_clean(page, watched)


async def _drop_sockets(stand: Stand) -> None:
    from gateway.keys import CONNECTORS

    (widget,) = [c for c in stand.api.server.app[CONNECTORS] if c.name == "widget"]
    await widget.chat.shutdown()  # type: ignore[attr-defined]


@pytest.fixture
async def chat_without_prechat(
    tmp_path: Path, aiohttp_client: Callable[..., Any]
) -> AsyncIterator[Stand]:
    async for stand in _stand(tmp_path, aiohttp_client, msk(2026, 1, 12, 12, 0), prechat=[]):
        yield stand


async def test_chat_asks_for_consent_before_the_first_message(
    chat_without_prechat: Stand,
) -> None:
    """F03: no message box until the consent box is ticked, even with no pre-chat fields;
    the consent is recorded on the conversation's first event."""
    stand = chat_without_prechat
    page, watched = await open_page(stand.browser, stand.url)
    await page.locator("button.launcher").click()
    chat = page.locator("#lg-pane-chat")
    box = chat.get_by_label("Сообщение")
    await expect(box).to_be_hidden()
    await chat.get_by_role("button", name="Начать чат").click()
    await expect(chat.get_by_text("Нужно ваше согласие")).to_be_visible()
    await expect(box).to_be_hidden()
    await chat.locator("input[name=consent]").check()
    await chat.get_by_role("button", name="Начать чат").click()
    await expect(box).to_be_focused()
    await box.fill("Здравствуйте! Нужен компрессор")
    await page.keyboard.press("Enter")
    await expect(chat.locator(".msg.in")).to_have_count(1)
    await expect(chat.locator(".msg.in").first).not_to_have_class("msg in pending")
    (lead,) = await _leads(stand.api, "chat")
    full = await (await stand.api.get(f"/v1/leads/{lead['id']}", headers=ADMIN_AUTH)).json()
    assert full["events"][0]["meta"]["consent"]["policy_version"] == "2025-01-10"
    await assert_clean(page, watched)


async def test_a_page_that_skipped_consent_is_asked_and_its_message_goes_after(
    chat_without_prechat: Stand,
) -> None:
    """A visitor whose browser remembers a started chat that never was (an older widget,
    storage cleared by half): the server refuses the message for want of consent, the
    page asks, and the waiting message is delivered once the box is ticked."""
    stand = chat_without_prechat
    page, watched = await open_page(stand.browser, stand.url)
    await page.evaluate("() => localStorage.setItem('leadgate:site:started', 'true')")
    await page.reload()
    await page.locator("button.launcher").click()
    chat = page.locator("#lg-pane-chat")
    box = chat.get_by_label("Сообщение")
    await box.fill("Алло, есть кто?")
    await page.keyboard.press("Enter")
    await expect(chat.locator("input[name=consent]")).to_be_visible()
    assert await _leads(stand.api, "chat") == []  # nothing stored without consent
    await chat.locator("input[name=consent]").check()
    await chat.get_by_role("button", name="Начать чат").click()
    await expect(chat.locator(".msg.in").first).not_to_have_class("msg in pending")
    (lead,) = await _leads(stand.api, "chat")
    full = await (await stand.api.get(f"/v1/leads/{lead['id']}", headers=ADMIN_AUTH)).json()
    assert [m["text"] for m in full["messages"]] == ["Алло, есть кто?"]
    assert "consent" in full["events"][0]["meta"]
    await assert_clean(page, watched)
