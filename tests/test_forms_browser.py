"""What a person in a browser meets: thank-you page, readable errors, CORS for fetch()."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any

from aiohttp.test_utils import TestClient

from gateway.web import create_app
from tests.conftest import ADMIN_AUTH, ORDER_AUTH

HTML = {"Accept": "text/html,application/xhtml+xml"}


async def _client(aiohttp_client: Callable[..., Any], settings: Any) -> TestClient[Any, Any]:
    client: TestClient[Any, Any] = await aiohttp_client(create_app(settings))
    return client


async def test_html_post_lands_on_the_gateways_thank_you_page(
    aiohttp_client: Callable[..., Any], settings_factory: Callable[..., Any]
) -> None:
    client = await _client(aiohttp_client, settings_factory())
    resp = await client.post(
        "/v1/forms/site",
        data={"name": "Анна", "phone": "89031112233"},
        headers=HTML,
        allow_redirects=False,
    )
    assert resp.status == 303
    assert resp.headers["Location"] == "/v1/forms/site/thanks"
    page = await client.get("/v1/forms/site/thanks")
    assert page.status == 200
    assert page.content_type == "text/html"
    assert "Спасибо! Заявка принята." in await page.text()


async def test_thank_you_page_says_when_we_answer_after_hours(
    aiohttp_client: Callable[..., Any], settings_factory: Callable[..., Any]
) -> None:
    # Every day of the next weeks is a company holiday except one: the page must name it.
    today = date.today()
    holidays = {date.fromordinal(today.toordinal() + i): "Ремонт" for i in range(0, 9)}
    settings = settings_factory(calendar={"extra_holidays": holidays})
    client = await _client(aiohttp_client, settings)
    text = await (await client.get("/v1/forms/site/thanks")).text()
    assert "Сейчас нерабочее время. Мы свяжемся с вами, когда откроемся:" in text
    english = await (
        await client.get("/v1/forms/site/thanks", headers={"Accept-Language": "en"})
    ).text()
    assert "Thank you! Your request has been received." in english
    assert "We are closed right now. We will contact you when we open:" in english


async def test_configured_thank_you_url_wins(
    aiohttp_client: Callable[..., Any], settings_factory: Callable[..., Any]
) -> None:
    settings = settings_factory(forms={"site": {"thank_you_url": "https://example.ru/spasibo"}})
    client = await _client(aiohttp_client, settings)
    resp = await client.post(
        "/v1/forms/site",
        data={"name": "Анна", "phone": "89031112233"},
        headers=HTML,
        allow_redirects=False,
    )
    assert resp.headers["Location"] == "https://example.ru/spasibo"


async def test_html_post_with_mistakes_gets_a_readable_page(
    aiohttp_client: Callable[..., Any], settings_factory: Callable[..., Any]
) -> None:
    client = await _client(aiohttp_client, settings_factory())
    resp = await client.post("/v1/forms/site", data={"name": "", "phone": "12"}, headers=HTML)
    assert resp.status == 422
    assert resp.content_type == "text/html"
    page = await resp.text()
    assert "Заявка не отправлена" in page
    assert "Заполните поле «Имя»" in page
    assert "Укажите телефон полностью" in page
    # Nothing was stored for the mistaken post.
    leads = await (await client.get("/v1/leads", headers=ADMIN_AUTH)).json()
    assert leads["leads"] == []


async def test_rate_limited_html_post_gets_a_page_with_retry_after(
    aiohttp_client: Callable[..., Any], settings_factory: Callable[..., Any]
) -> None:
    client = await _client(
        aiohttp_client, settings_factory(ratelimit={"requests": 1, "per_seconds": 60})
    )
    body = {"name": "Анна", "phone": "89031112233"}
    first = await client.post("/v1/forms/site", data=body, headers=HTML, allow_redirects=False)
    assert first.status == 303
    second = await client.post("/v1/forms/site", data=body, headers=HTML)
    assert second.status == 429
    assert second.content_type == "text/html"
    assert int(second.headers["Retry-After"]) >= 1
    assert "Слишком много заявок" in await second.text()


async def test_cors_preflight_and_headers_for_allowed_origin(
    aiohttp_client: Callable[..., Any], settings_factory: Callable[..., Any]
) -> None:
    settings = settings_factory(forms={"site": {"allowed_origins": ["https://shop.example.ru"]}})
    client = await _client(aiohttp_client, settings)
    origin = {"Origin": "https://shop.example.ru"}
    pre = await client.options(
        "/v1/forms/site",
        headers={
            **origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert pre.status == 204
    assert pre.headers["Access-Control-Allow-Origin"] == "https://shop.example.ru"
    assert "POST" in pre.headers["Access-Control-Allow-Methods"]
    assert "Content-Type" in pre.headers["Access-Control-Allow-Headers"]
    ok = await client.post(
        "/v1/forms/site", json={"name": "Анна", "phone": "89031112233"}, headers=origin
    )
    assert ok.status == 201
    assert ok.headers["Access-Control-Allow-Origin"] == "https://shop.example.ru"
    bad = await client.post("/v1/forms/site", json={"name": ""}, headers=origin)
    assert bad.status == 422  # the page's script must be able to read why
    assert bad.headers["Access-Control-Allow-Origin"] == "https://shop.example.ru"


async def test_cors_refuses_other_origins(
    aiohttp_client: Callable[..., Any], settings_factory: Callable[..., Any]
) -> None:
    settings = settings_factory(forms={"site": {"allowed_origins": ["https://shop.example.ru"]}})
    client = await _client(aiohttp_client, settings)
    pre = await client.options("/v1/forms/site", headers={"Origin": "https://evil.example"})
    assert pre.status == 403
    assert (await pre.json())["error"] == "origin_not_allowed"
    post = await client.post(
        "/v1/forms/site",
        json={"name": "Анна", "phone": "89031112233"},
        headers={"Origin": "https://evil.example"},
    )
    assert "Access-Control-Allow-Origin" not in post.headers


async def test_order_joining_a_form_lead_fills_its_interest(
    aiohttp_client: Callable[..., Any], settings_factory: Callable[..., Any]
) -> None:
    client = await _client(aiohttp_client, settings_factory())
    form = await (
        await client.post("/v1/forms/site", json={"name": "Анна", "phone": "89031112233"})
    ).json()
    order = await (
        await client.post(
            "/v1/orders",
            json={
                "order_id": "A-1",
                "customer": {"phone": "+7 903 111-22-33"},
                "items": [{"name": "Пресс", "price": 900000, "category": "Крупное"}],
            },
            headers=ORDER_AUTH,
        )
    ).json()
    assert order["outcome"] == "merged"
    assert order["lead_id"] == form["lead_id"]
    lead = await (await client.get(f"/v1/leads/{form['lead_id']}", headers=ADMIN_AUTH)).json()
    assert lead["interest"]["equipment_category"] == "Крупное"
    assert "Пресс" in lead["interest"]["probable_equipment"]
