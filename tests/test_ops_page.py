"""/ops over HTTP: who may see it (admin token, the login's session cookie, the allow-list),
what it shows (intake from the store, surviving a restart; outbox; open leads; connector
state; version and uptime; problems in Russian), and /readyz leaking no secret."""

from __future__ import annotations

import time
from collections.abc import Callable
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient
from conftest import ADMIN_AUTH, ADMIN_TOKEN, ORDER_AUTH, make_settings

from gateway import ops, ops_page
from gateway.version import VERSION
from gateway.web import create_app

Client = TestClient[Any, Any]
HTML = {"Accept": "text/html"}


async def _client(aiohttp_client: Callable[..., Any], tmp_path: Path, **kw: Any) -> Client:
    tmp_path.mkdir(exist_ok=True)  # noqa: ASYNC240  (a test's own temp dir)
    client: Client = await aiohttp_client(create_app(make_settings(tmp_path, **kw)))
    return client


def _session(resp: Any) -> str:
    cookie = SimpleCookie()
    cookie.load(resp.headers["Set-Cookie"])
    return cookie[ops_page.COOKIE].value


# --- who may see it ----------------------------------------------------------------------------


async def test_without_credentials_a_browser_gets_the_login_form_and_a_script_a_401(
    aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    client = await _client(aiohttp_client, tmp_path)
    page = await client.get("/ops", headers=HTML)
    assert page.status == 401
    text = await page.text()
    assert '<form method="post" action="/ops/login">' in text and "<svg" not in text
    api = await client.get("/ops/data")
    assert api.status == 401 and (await api.json())["error"] == "unauthorized"
    assert (await client.get("/ops/panel")).status == 401


async def test_the_admin_token_opens_it_as_bearer(
    aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    client = await _client(aiohttp_client, tmp_path)
    page = await client.get("/ops", headers={**HTML, **ADMIN_AUTH})
    assert page.status == 200
    text = await page.text()
    assert '<svg class="chart" id="chart-day"' in text
    # Self-contained: no script or style from anywhere else, and the policy says so.
    assert "http://" not in text.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in text
    policy = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
    nonce = policy.split("'nonce-", 1)[1].split("'", 1)[0]
    assert f'<script nonce="{nonce}">' in text
    assert page.headers["Cache-Control"] == "no-store"


async def test_login_sets_a_session_cookie_that_is_not_the_token(
    aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    client = await _client(aiohttp_client, tmp_path)
    wrong = await client.post("/ops/login", data={"token": "nope"}, headers=HTML)
    assert wrong.status == 401 and "Неверный токен" in await wrong.text()
    resp = await client.post(
        "/ops/login", data={"token": ADMIN_TOKEN}, headers=HTML, allow_redirects=False
    )
    assert resp.status == 303 and resp.headers["Location"] == "/ops"
    header = resp.headers["Set-Cookie"]
    assert "HttpOnly" in header and "SameSite=Strict" in header and "Path=/ops" in header
    value = _session(resp)
    assert ADMIN_TOKEN not in value and value.startswith("ops.")
    client.session.cookie_jar.clear()
    cookie = {"Cookie": f"{ops_page.COOKIE}={value}"}
    assert (await client.get("/ops", headers={**HTML, **cookie})).status == 200
    assert (await client.get("/ops/panel", headers=cookie)).status == 200
    assert (await client.get("/ops/data", headers=cookie)).status == 200
    forged = value[:-3] + ("AAA" if not value.endswith("AAA") else "BBB")
    forged_cookie = {"Cookie": f"{ops_page.COOKIE}={forged}"}
    assert (await client.get("/ops/data", headers=forged_cookie)).status == 401
    out = await client.post("/ops/logout", headers=cookie, allow_redirects=False)
    assert out.status == 303 and f"{ops_page.COOKIE}=" in out.headers["Set-Cookie"]


async def test_a_session_ends_at_its_expiry_and_with_its_token(
    aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    client = await _client(aiohttp_client, tmp_path)
    resp = await client.post("/ops/login", data={"token": ADMIN_TOKEN}, allow_redirects=False)
    value = _session(resp)
    request = type("R", (), {"app": client.app})()
    assert ops_page.session_ok(request, value)  # type: ignore[arg-type]
    later = time.time() + ops_page.SESSION_SECONDS + 1
    assert not ops_page.session_ok(request, value, now=later)  # type: ignore[arg-type]
    # The token is revoked (another config): the cookie dies with it.
    other = await _client(
        aiohttp_client, tmp_path / "x", admin={"tokens": {"ops": "a-new-token-0123456"}}
    )
    cookie = {"Cookie": f"{ops_page.COOKIE}={value}"}
    assert (await other.get("/ops/data", headers=cookie)).status == 401


async def test_the_allow_list_opens_it_without_a_token(
    aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    allowed = await _client(aiohttp_client, tmp_path, ops={"allowed_networks": ["127.0.0.0/8"]})
    assert (await allowed.get("/ops", headers=HTML)).status == 200
    assert (await allowed.get("/ops/data")).status == 200
    elsewhere = await _client(
        aiohttp_client, tmp_path / "x", ops={"allowed_networks": ["10.20.0.0/16"]}
    )
    assert (await elsewhere.get("/ops/data")).status == 401
    # Behind a trusted proxy, the visitor's address counts, not the proxy's.
    proxied = await _client(
        aiohttp_client,
        tmp_path / "y",
        ops={"allowed_networks": ["10.20.0.0/16"]},
        server={"trusted_proxies": ["127.0.0.1"]},
    )
    inside = {"X-Forwarded-For": "10.20.3.4"}
    outside = {"X-Forwarded-For": "203.0.113.9"}
    assert (await proxied.get("/ops/data", headers=inside)).status == 200
    assert (await proxied.get("/ops/data", headers=outside)).status == 401


async def test_no_token_and_no_network_says_how_to_get_in(
    aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    client = await _client(aiohttp_client, tmp_path, admin={"tokens": {}})
    page = await client.get("/ops", headers=HTML)
    assert page.status == 401
    assert "[ops] allowed_networks" in await page.text()


# --- what it shows -------------------------------------------------------------------------------


async def test_data_counts_from_the_store_and_survive_a_restart(
    aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    settings = {
        "delivery": {
            "sink": "webhook",
            "webhook": {"url": "http://127.0.0.1:9/", "secret": "s" * 16},
        }
    }
    client = await _client(aiohttp_client, tmp_path, **settings)
    for i in range(3):
        resp = await client.post(
            "/v1/forms/site", json={"name": f"К{i}", "phone": f"+7916000000{i}"}
        )
        assert resp.status == 201
    await client.post("/v1/forms/site", json={"name": "К0", "phone": "+79160000000"})  # merged
    order = {"order_id": "A-1", "customer": {"name": "С", "phone": "+74951234567"}}
    assert (await client.post("/v1/orders", json=order, headers=ORDER_AUTH)).status == 201

    data = await (await client.get("/ops/data", headers=ADMIN_AUTH)).json()
    assert data["version"] == VERSION and data["uptime_seconds"] >= 0
    channels = data["intake"]["channels"]
    assert channels["webform"]["day"] == {"created": 3, "merged": 1, "kept": 0}
    assert channels["orders"]["day"]["created"] == 1
    assert sum(channels["webform"]["hourly"]) == 4 and sum(channels["webform"]["recent"]) == 4
    assert len(channels["webform"]["hourly"]) == 24 and len(channels["webform"]["recent"]) == 36
    assert channels["webform"]["last_event_at"] is not None
    assert channels["callback"]["last_event_at"] is None  # on, but nothing came
    assert data["leads_last_day"] == {
        "new": 4,
        "unassigned": 0,
        "overdue": data["leads_last_day"]["overdue"],
    }
    assert data["outbox"]["sink"] == "webhook"
    assert data["outbox"]["pending"] + data["outbox"]["dead"] >= 1
    await client.close()

    # A restart: counters in /metrics start over; the page's history does not.
    again = await _client(aiohttp_client, tmp_path, **settings)
    after = await (await again.get("/ops/data", headers=ADMIN_AUTH)).json()
    assert after["intake"]["channels"]["webform"]["day"] == {"created": 3, "merged": 1, "kept": 0}
    metrics = await (await again.get("/metrics")).text()
    assert 'leadgate_events_total{channel="webform"' not in metrics
    assert f'leadgate_build_info{{version="{VERSION}"}} 1.0' in metrics


async def test_problems_are_in_the_readers_language_and_readyz_leaks_nothing(
    aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    client = await _client(aiohttp_client, tmp_path, sellers=[])
    ops.add_readiness_check(
        client.app,
        "delivery",
        lambda: "https://portal.bitrix24.ru/rest/1/s3cr3tw3bh00k/ failed for ivan@example.ru",
    )
    ready = await (await client.get("/readyz")).json()
    assert ready["status"] == "degraded"
    assert "assignment: no sellers configured" in ready["problems"]
    joined = " ".join(ready["problems"])
    assert "s3cr3tw3bh00k" not in joined and "ivan@example.ru" not in joined
    assert "https://portal.bitrix24.ru/…" in joined and "i***@example.ru" in joined

    ru = await (await client.get("/ops", headers={**HTML, **ADMIN_AUTH})).text()
    assert "с проблемами" in ru
    assert "<b>назначение продавцов</b>: не настроен ни один продавец" in ru
    assert "s3cr3tw3bh00k" not in ru
    en = await (
        await client.get("/ops", headers={**HTML, **ADMIN_AUTH, "Accept-Language": "en"})
    ).text()
    assert "<b>assignment</b>: no sellers configured" in en and "degraded" in en


async def test_connector_state_is_shown(aiohttp_client: Callable[..., Any], tmp_path: Path) -> None:
    client = await _client(aiohttp_client, tmp_path, telephony={"zadarma": {"api_secret": "s"}})
    refused = await client.post(
        "/v1/telephony/zadarma",
        data={"event": "NOTIFY_START", "caller_id": "1", "called_did": "2", "call_start": "x"},
        headers={"Signature": "wrong"},
    )
    assert refused.status == 403
    data = await (await client.get("/ops/data", headers=ADMIN_AUTH)).json()
    status = data["connectors"]["telephony"]["status"]
    assert status["Провайдеры"] == "zadarma"
    assert status["Отклонено (подпись, токен)"] == 1
    assert status["Последняя ошибка"].startswith("zadarma: wrong Signature (")
    assert data["connectors"]["telephony"]["problem"] is None
    page = await (await client.get("/ops", headers={**HTML, **ADMIN_AUTH})).text()
    assert 'data-connector="telephony"' in page and "zadarma: wrong Signature" in page
