"""Consent to personal-data processing (152-ФЗ) in every widget tab (findings F03, F11).

The chat asks for it before the first message, as the form and the callback do; a post
without it is refused in Russian — a 422 naming `consent` for the callback and the form,
the error `consent_required` for the chat — whatever the rate limit's state, and nothing
is stored: not the lead, not the JUNK copy a rate-limited request leaves."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient
from conftest import ADMIN_AUTH
from widget_support import ORIGIN, Clock, msk, settings_with_widget, specs_with_clock, widget_config

from gateway.web import create_app

Client = TestClient[Any, Any]
FROM_SITE = {"Origin": ORIGIN}
NEED_CONSENT = "Нужно ваше согласие на обработку персональных данных"


async def _client(aiohttp_client: Callable[..., Any], tmp_path: Path, **widget: Any) -> Client:
    app = create_app(
        settings_with_widget(tmp_path, widget_config(**widget)),
        specs=specs_with_clock(Clock(msk(2026, 1, 12, 12, 0))),
    )
    client: Client = await aiohttp_client(app)
    return client


async def _all_leads(client: Client) -> list[dict[str, Any]]:
    resp = await client.get("/v1/leads", headers=ADMIN_AUTH)
    leads: list[dict[str, Any]] = (await resp.json())["leads"]
    return leads


async def test_no_consent_is_a_422_even_when_rate_limited_and_nothing_is_kept(
    aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    client = await _client(aiohttp_client, tmp_path, limits={"submissions_per_ip": 1})
    given = {"name": "Анна", "phone": "+79161234567", "consent": True}
    resp = await client.post("/v1/widget/site/callback", json=given, headers=FROM_SITE)
    assert resp.status == 201
    # The address has used its one request: still, no consent is what the visitor hears.
    for tab in ("callback", "form"):
        body = {"name": "Борис", "phone": "+79167654321", "email": "b@example.ru"}
        resp = await client.post(f"/v1/widget/site/{tab}", json=body, headers=FROM_SITE)
        assert resp.status == 422, await resp.text()
        answer = await resp.json()
        assert answer["fields"]["consent"] == NEED_CONSENT
        assert resp.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert len(await _all_leads(client)) == 1  # no JUNK copy of a request without consent
    # With consent the limit answers, and keeps its one JUNK copy.
    resp = await client.post(
        "/v1/widget/site/callback", json={**given, "phone": "+79160000001"}, headers=FROM_SITE
    )
    assert resp.status == 429
    junk = await client.get("/v1/leads", params={"status": "JUNK"}, headers=ADMIN_AUTH)
    assert [lead["junk_reason"] for lead in (await junk.json())["leads"]] == ["rate limited"]


async def test_the_chat_needs_consent_before_its_first_message(
    aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    client = await _client(aiohttp_client, tmp_path, limits={"conversations_per_ip": 1})
    ws = await client.ws_connect("/v1/widget/site/ws", headers=FROM_SITE)
    await ws.send_json({"type": "hello", "token": secrets.token_urlsafe(24)})
    assert (await ws.receive_json(timeout=5))["type"] == "welcome"
    for contact in (None, {}, {"name": "Анна"}, {"consent": "yes"}, {"consent": False}):
        frame = {"type": "message", "client_id": "first-aaaa", "text": "Здравствуйте"}
        if contact is not None:
            frame["contact"] = contact
        await ws.send_json(frame)
        refused = await ws.receive_json(timeout=5)
        assert refused == {
            "type": "error",
            "code": "consent_required",
            "detail": NEED_CONSENT,
            "client_id": "first-aaaa",
        }
    assert await _all_leads(client) == []
    consent = {"type": "message", "client_id": "first-aaaa", "contact": {"consent": True}}
    await ws.send_json(consent | {"text": "Здравствуйте"})
    assert (await ws.receive_json(timeout=5))["type"] == "ack"
    # The conversation goes on without asking again; the consent is on its first event.
    await ws.send_json({"type": "message", "client_id": "second-aaa", "text": "Есть станки?"})
    assert (await ws.receive_json(timeout=5))["type"] == "ack"
    (lead,) = await _all_leads(client)
    full = await (await client.get(f"/v1/leads/{lead['id']}", headers=ADMIN_AUTH)).json()
    assert full["events"][0]["meta"]["consent"]["policy_url"].endswith("/privacy")
    # A second visitor of the same address is over the new-chat limit: without consent
    # they still hear about consent first, with it about the limit.
    other = await client.ws_connect("/v1/widget/site/ws", headers=FROM_SITE)
    await other.send_json({"type": "hello", "token": secrets.token_urlsafe(24)})
    await other.receive_json(timeout=5)
    await other.send_json({"type": "message", "client_id": "other-aaaa", "text": "Алло"})
    assert (await other.receive_json(timeout=5))["code"] == "consent_required"
    await other.send_json(consent | {"client_id": "other-aaaa", "text": "Алло"})
    assert (await other.receive_json(timeout=5))["code"] == "rate_limited"
