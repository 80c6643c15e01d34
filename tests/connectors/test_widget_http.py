"""The widget's HTTP routes: the script, the state at chosen times, callback and form leads,
consent on the event, origins, limits and the honeypot."""

from __future__ import annotations

import gzip
import re
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from conftest import ADMIN_AUTH
from widget_support import (
    ORIGIN,
    POLICY,
    Clock,
    msk,
    settings_with_widget,
    specs_with_clock,
    widget_config,
)

from connectors.widget import assets
from gateway.web import create_app

Client = TestClient[Any, Any]
ROOT = Path(__file__).resolve().parents[2]
OPENAPI_TEXT = (ROOT / "docs/openapi.yaml").read_text("utf-8")
FROM_SITE = {"Origin": ORIGIN}


async def _client(
    aiohttp_client: Callable[..., Any],
    tmp_path: Path,
    clock: Clock,
    widget: dict[str, Any] | None = None,
    **settings: Any,
) -> Client:
    app = create_app(
        settings_with_widget(tmp_path, widget, **settings), specs=specs_with_clock(clock)
    )
    client: Client = await aiohttp_client(app)
    return client


async def _leads(client: Client, channel: str) -> list[dict[str, Any]]:
    resp = await client.get("/v1/leads", params={"channel": channel}, headers=ADMIN_AUTH)
    assert resp.status == 200
    leads: list[dict[str, Any]] = (await resp.json())["leads"]
    return leads


# --- the script -------------------------------------------------------------------------


async def test_script_is_served_small_cached_and_compressed(
    aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    client = await _client(aiohttp_client, tmp_path, Clock())
    resp = await client.get("/v1/widget/site.js", auto_decompress=False)
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "application/javascript; charset=utf-8"
    assert resp.headers["Content-Encoding"] == "gzip"
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    body = await resp.read()
    assert gzip.decompress(body).decode().startswith("/* leadgate site widget")
    etag = resp.headers["ETag"]
    again = await client.get("/v1/widget/site.js", headers={"If-None-Match": etag})
    assert again.status == 304
    plain = await client.get("/v1/widget/site.js", headers={"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in plain.headers
    assert (await plain.read()) == assets.script().body
    css = await client.get("/v1/widget/widget.css")
    assert css.headers["Content-Type"] == "text/css; charset=utf-8"
    assert (await client.get("/v1/widget/other.js")).status == 404


# The figure docs/channels/widget.md states; the test holds the script to it.
GZIP_BUDGET = 14 * 1024


def test_script_stays_within_its_gzip_budget_and_the_docs_say_its_size() -> None:
    size = len(assets.script().gzipped)
    assert size <= GZIP_BUDGET, f"widget script grew to {size} bytes gzipped"
    doc = (Path(__file__).resolve().parents[2] / "docs/channels/widget.md").read_text("utf-8")
    stated = re.search(r"about ([\d.]+) KB gzipped", doc)
    assert stated, "docs/channels/widget.md must state the script's gzipped size"
    assert abs(float(stated.group(1)) - size / 1024) < 0.5, (
        f"docs say {stated.group(1)} KB, the script is {size / 1024:.1f} KB gzipped"
    )


def test_script_never_parses_html_or_evaluates_strings() -> None:
    program = assets.script_source()
    for banned in (
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "new Function",
        'setTimeout("',
        "cssText",
        'setAttribute("style"',
        "DOMParser",
        "createContextualFragment",
    ):
        assert banned not in program, banned


# --- state --------------------------------------------------------------------------------


async def _state(client: Client, **query: str) -> dict[str, Any]:
    resp = await client.get("/v1/widget/site/state", params=query, headers=FROM_SITE)
    assert resp.status == 200, await resp.text()
    assert resp.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert resp.headers["Cache-Control"] == "no-store"
    state: dict[str, Any] = await resp.json()
    return state


async def test_open_on_a_working_monday_until_19(
    aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    clock = Clock(msk(2026, 1, 12, 18, 59, 50))
    client = await _client(aiohttp_client, tmp_path, clock)
    state = await _state(client)
    assert state["visible"] is True
    assert [(t["id"], t["open"], t["note"]) for t in state["tabs"]] == [
        ("chat", True, None),
        ("callback", True, None),
        ("form", True, None),
    ]
    assert state["next_change_at"] == "2026-01-12T19:00:00+03:00"
    assert 9 < state["recheck_in"] <= 10
    assert state["texts"]["tab_callback"] == "Перезвоните мне"
    assert state["policy_url"] == POLICY
    clock.set(msk(2026, 1, 12, 19, 0))
    closed = await _state(client)
    assert closed["visible"] is False
    assert "tabs" not in closed
    assert closed["next_change_at"] == "2026-01-13T10:00:00+03:00"
    assert closed["recheck_in"] == 900  # asks again within 15 minutes however far it is


async def test_closed_on_a_holiday_offers_form_and_callback_with_when(
    aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    # 9 January 2026 is a day off (New Year holidays); the next working day is Monday the 12th.
    clock = Clock(msk(2026, 1, 9, 12, 0))
    client = await _client(
        aiohttp_client, tmp_path, clock, widget_config(off_hours="form_and_callback")
    )
    state = await _state(client)
    assert state["visible"] is True
    note = "Сейчас мы не на связи. Ответим в понедельник, 12 января, после 10:00."
    assert [(t["id"], t["open"], t["note"]) for t in state["tabs"]] == [
        ("callback", False, note),
        ("form", False, note),
    ]
    english = await _state(client, lang="en-GB,en")
    assert english["tabs"][0]["note"] == (
        "We are closed now. We will answer on Monday, January 12, after 10:00."
    )
    assert english["texts"]["tab_callback"] == "Call me back"
    # The visitor's own clock: 10:00 in Moscow is 14:00 in Novosibirsk.
    far = await _state(client, tz="Asia/Novosibirsk")
    assert far["tabs"][0]["note"].endswith("в понедельник, 12 января, после 14:00.")
    assert (await _state(client, tz="Mars/Olympus"))["tabs"][0]["note"] == note


async def test_hidden_mode_hides_everything_on_a_holiday(
    aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    client = await _client(aiohttp_client, tmp_path, Clock(msk(2026, 1, 9, 12, 0)))
    assert (await _state(client))["visible"] is False


async def test_transferred_days_count(aiohttp_client: Callable[..., Any], tmp_path: Path) -> None:
    # Saturday 1 November 2025 was a working day; Monday 3 November a day off in its place.
    clock = Clock(msk(2025, 11, 1, 12, 0))
    client = await _client(aiohttp_client, tmp_path, clock)
    assert (await _state(client))["visible"] is True
    clock.set(msk(2025, 11, 3, 12, 0))
    assert (await _state(client))["visible"] is False


async def test_chat_and_callback_follow_their_own_hours(
    aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    week = {d: ["09:00-20:00"] for d in ("mon", "tue", "wed", "thu", "fri")}
    chat = {d: ["10:00-18:00"] for d in ("mon", "tue", "wed", "thu", "fri")}
    clock = Clock(msk(2026, 1, 12, 18, 30))
    client = await _client(
        aiohttp_client,
        tmp_path,
        clock,
        calendar={"channels": {"callback": week, "chat": chat}},
    )
    state = await _state(client)
    assert [t["id"] for t in state["tabs"]] == ["callback", "form"]
    assert state["next_change_at"] == "2026-01-12T19:00:00+03:00"  # the form's own hours
    clock.set(msk(2026, 1, 12, 19, 30))
    state = await _state(client)
    assert [(t["id"], t["open"]) for t in state["tabs"]] == [("callback", True), ("form", False)]
    assert state["tabs"][1]["note"] == (
        "Сейчас мы не на связи. Ответим во вторник, 13 января, после 10:00."
    )
    assert state["next_change_at"] == "2026-01-12T20:00:00+03:00"


async def test_state_refuses_other_sites(
    aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    client = await _client(aiohttp_client, tmp_path, Clock())
    for headers in ({}, {"Origin": "https://evil.example"}, {"Origin": "null"}):
        resp = await client.get("/v1/widget/site/state", headers=headers)
        assert resp.status == 403
        assert (await resp.json())["error"] == "origin_not_allowed"
        assert "Access-Control-Allow-Origin" not in resp.headers
    assert (await client.get("/v1/widget/nope/state", headers=FROM_SITE)).status == 404


# --- callback and form ----------------------------------------------------------------------


CALLBACK = {"name": "Анна", "phone": "+7 (916) 123-45-67", "consent": True, "tz": "Europe/Moscow"}


async def test_callback_makes_a_callback_lead_with_sla_and_consent(
    aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    client = await _client(aiohttp_client, tmp_path, Clock(msk(2026, 1, 12, 12, 0)))
    body = CALLBACK | {"page": f"{ORIGIN}/lifts?utm_source=ya", "utm_source": "ya"}
    resp = await client.post("/v1/widget/site/callback", json=body, headers=FROM_SITE)
    assert resp.status == 201, await resp.text()
    assert resp.headers["Access-Control-Allow-Origin"] == ORIGIN
    # The visitor learns when we call, nothing about the lead.
    assert await resp.json() == {"status": "accepted", "message": "Спасибо! Перезвоним до 12:15."}
    (lead,) = await _leads(client, "callback")
    assert lead["source_id"] == "CALLBACK"
    assert lead["contact"]["phones"] == ["+79161234567"]
    assert lead["contact"]["name"] == "Анна"
    assert lead["after_hours"] is False
    due = datetime.fromisoformat(lead["sla_due_at"])
    assert msk(2026, 1, 12, 12, 15) <= due < msk(2026, 1, 12, 12, 16)
    full = await (await client.get(f"/v1/leads/{lead['id']}", headers=ADMIN_AUTH)).json()
    (event,) = full["events"]
    assert event["source_detail"] == "widget:site"
    assert event["utm"] == {"utm_source": "ya"}
    assert event["meta"]["page"] == f"{ORIGIN}/lifts?utm_source=ya"
    consent = event["meta"]["consent"]
    assert consent["given_at"].startswith("2026-01-12T09:00")
    assert consent["policy_url"] == POLICY
    assert consent["policy_version"] == "2025-01-10"
    assert consent["origin"] == ORIGIN
    assert consent["locale"] == "ru"
    assert consent["text"] == (
        "Я даю согласие на обработку моих персональных данных в соответствии с "
        "политикой обработки персональных данных"
    )


async def test_callback_after_hours_says_when(
    aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    client = await _client(
        aiohttp_client,
        tmp_path,
        Clock(msk(2026, 1, 9, 12, 0)),
        widget_config(off_hours="form_and_callback"),
    )
    resp = await client.post(
        "/v1/widget/site/callback", json=CALLBACK | {"lang": "en"}, headers=FROM_SITE
    )
    assert await resp.json() == {
        "status": "accepted",
        "message": "Thank you! We are closed now and will call you back "
        "on Monday, January 12, after 10:00.",
    }
    (lead,) = await _leads(client, "callback")
    assert lead["after_hours"] is True
    assert datetime.fromisoformat(lead["next_open_at"]) == msk(2026, 1, 12, 10, 0)


async def test_without_consent_nothing_is_stored(
    aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    client = await _client(aiohttp_client, tmp_path, Clock(msk(2026, 1, 12, 12, 0)))
    for consent in (None, False, "yes", 1):
        body = {k: v for k, v in CALLBACK.items() if k != "consent"} | {"consent": consent}
        resp = await client.post("/v1/widget/site/callback", json=body, headers=FROM_SITE)
        assert resp.status == 422
        error = await resp.json()
        assert error["fields"] == {
            "consent": "Нужно ваше согласие на обработку персональных данных"
        }
    resp = await client.post(
        "/v1/widget/site/callback", json={"phone": "12", "name": 5}, headers=FROM_SITE
    )
    assert set((await resp.json())["fields"]) == {"phone", "name", "consent"}
    assert await _leads(client, "callback") == []


FORM = {
    "name": "Иван Петров",
    "phone": "8 916 765-43-21",
    "email": "Ivan@Example.RU",
    "equipment_type": "Крупное",
    "comment": "Нужен подъёмник на 3 т",
}


async def test_form_makes_the_same_lead_as_the_forms_api(
    aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    client = await _client(aiohttp_client, tmp_path, Clock(msk(2026, 1, 12, 12, 0)))
    resp = await client.post(
        "/v1/widget/site/form", json=FORM | {"consent": True}, headers=FROM_SITE
    )
    assert resp.status == 201
    assert (await resp.json())["message"] == "Спасибо! Заявка принята."
    (lead,) = await _leads(client, "webform")
    # The same fields through the site's form API: same person, same interest, same text.
    other = await client.post("/v1/forms/site", json=FORM | {"phone": "+7 916 765-43-22"})
    assert other.status == 201
    leads = {lead["contact"]["phones"][0]: lead for lead in await _leads(client, "webform")}
    mine, theirs = leads["+79167654321"], leads["+79167654322"]
    assert (
        mine["interest"]
        == theirs["interest"]
        == {
            "equipment_category": "Крупное",
            "probable_equipment": None,
        }
    )
    assert mine["contact"]["emails"] == theirs["contact"]["emails"] == ["ivan@example.ru"]
    assert mine["source_id"] == theirs["source_id"] == "WEBFORM"
    full = await (await client.get(f"/v1/leads/{lead['id']}", headers=ADMIN_AUTH)).json()
    event = full["events"][0]
    assert event["text"] == "Нужен подъёмник на 3 т"
    assert event["source_detail"] == "widget:site"
    assert event["meta"]["consent"]["policy_url"] == POLICY
    assert "extra_fields" not in event["meta"]  # consent, page, tz are the widget's own


async def test_form_errors_are_the_forms_errors(
    aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    client = await _client(aiohttp_client, tmp_path, Clock(msk(2026, 1, 12, 12, 0)))
    resp = await client.post(
        "/v1/widget/site/form",
        json={"phone": "123", "consent": True, "lang": "en"},
        headers=FROM_SITE,
    )
    assert resp.status == 422
    assert await resp.json() == {
        "error": "invalid_fields",
        "detail": "Please check the form fields",
        "fields": {
            "name": "Please fill in “Имя”",
            "phone": "Please give the full phone number, e.g. +7 916 123-45-67",
        },
    }


async def test_honeypot_makes_junk_and_the_bot_learns_nothing(
    aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    client = await _client(aiohttp_client, tmp_path, Clock(msk(2026, 1, 12, 12, 0)))
    for path, body in (("callback", CALLBACK), ("form", FORM | {"consent": True})):
        resp = await client.post(
            f"/v1/widget/site/{path}", json=body | {"website": "http://spam"}, headers=FROM_SITE
        )
        assert resp.status == 201
    junk = await client.get("/v1/leads", params={"status": "JUNK"}, headers=ADMIN_AUTH)
    reasons = {lead["junk_reason"] for lead in (await junk.json())["leads"]}
    assert reasons == {"honeypot"}
    assert len((await junk.json())["leads"]) == 2


async def test_retry_with_the_same_key_is_one_lead(
    aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    client = await _client(aiohttp_client, tmp_path, Clock(msk(2026, 1, 12, 12, 0)))
    headers = FROM_SITE | {"Idempotency-Key": "abc123"}
    first = await client.post("/v1/widget/site/callback", json=CALLBACK, headers=headers)
    second = await client.post("/v1/widget/site/callback", json=CALLBACK, headers=headers)
    assert (first.status, second.status) == (201, 200)
    assert len(await _leads(client, "callback")) == 1


async def test_a_known_phone_joins_its_lead_without_telling_the_visitor(
    aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    client = await _client(aiohttp_client, tmp_path, Clock(msk(2026, 1, 12, 12, 0)))
    await client.post("/v1/forms/site", json={"name": "Анна", "phone": "+79161234567"})
    resp = await client.post("/v1/widget/site/callback", json=CALLBACK, headers=FROM_SITE)
    assert await resp.json() == {"status": "accepted", "message": "Спасибо! Перезвоним до 12:15."}
    assert await _leads(client, "callback") == []  # it joined the form lead
    (lead,) = await _leads(client, "webform")
    full = await (await client.get(f"/v1/leads/{lead['id']}", headers=ADMIN_AUTH)).json()
    assert [e["channel"] for e in full["events"]] == ["webform", "callback"]


async def test_submissions_are_limited_per_ip_with_a_message(
    aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    client = await _client(
        aiohttp_client,
        tmp_path,
        Clock(msk(2026, 1, 12, 12, 0)),
        widget_config(limits={"submissions_per_ip": 2, "submissions_window_seconds": 600}),
    )
    statuses = []
    for i in range(4):
        body = CALLBACK | {"phone": f"+7916123456{i}"}
        resp = await client.post("/v1/widget/site/callback", json=body, headers=FROM_SITE)
        statuses.append(resp.status)
    assert statuses == [201, 201, 429, 429]
    assert resp.headers["Retry-After"] == "300"
    assert resp.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert (await resp.json())["detail"] == (
        "Слишком много заявок с вашего адреса, попробуйте через 300 с"
    )
    # One refused request per window is kept for a seller to see, as JUNK.
    junk = await client.get("/v1/leads", params={"status": "JUNK"}, headers=ADMIN_AUTH)
    assert [lead["junk_reason"] for lead in (await junk.json())["leads"]] == ["rate limited"]


async def test_posts_are_checked_before_reading(
    aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    client = await _client(aiohttp_client, tmp_path, Clock(msk(2026, 1, 12, 12, 0)))
    evil = await client.post(
        "/v1/widget/site/callback", json=CALLBACK, headers={"Origin": "https://evil.example"}
    )
    assert evil.status == 403
    big = await client.post(
        "/v1/widget/site/form",
        json=FORM | {"comment": "x" * 20_000, "consent": True},
        headers=FROM_SITE,
    )
    assert big.status == 413
    plain = await client.post("/v1/widget/site/form", data="name=x", headers=FROM_SITE)
    assert plain.status == 415
    broken = await client.post(
        "/v1/widget/site/form",
        data=b"{not json",
        headers=FROM_SITE | {"Content-Type": "application/json"},
    )
    assert broken.status == 400
    assert await _leads(client, "webform") == []


async def test_preflight_answers_only_the_widgets_sites(
    aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    client = await _client(aiohttp_client, tmp_path, Clock())
    ok = await client.options(
        "/v1/widget/site/callback",
        headers=FROM_SITE | {"Access-Control-Request-Method": "POST"},
    )
    assert ok.status == 204
    assert ok.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "Idempotency-Key" in ok.headers["Access-Control-Allow-Headers"]
    bad = await client.options("/v1/widget/site/form", headers={"Origin": "https://evil.example"})
    assert bad.status == 403


async def test_a_tab_the_widget_lacks_takes_nothing(
    aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    client = await _client(
        aiohttp_client, tmp_path, Clock(msk(2026, 1, 12, 12, 0)), widget_config(tabs=["chat"])
    )
    resp = await client.post("/v1/widget/site/callback", json=CALLBACK, headers=FROM_SITE)
    assert resp.status == 404


@pytest.mark.parametrize("name", ["site", "b2b-2"])
async def test_no_widget_no_routes(
    aiohttp_client: Callable[..., Any], tmp_path: Path, name: str
) -> None:
    from conftest import make_settings

    client: Client = await aiohttp_client(create_app(make_settings(tmp_path)))
    assert (await client.get(f"/v1/widget/{name}.js")).status == 404


async def test_answers_match_the_openapi_document(
    aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    import yaml
    from jsonschema import Draft202012Validator

    spec = yaml.safe_load(OPENAPI_TEXT)

    def check(schema: str, instance: Any) -> None:
        root = {"components": spec["components"], "$ref": f"#/components/schemas/{schema}"}
        errors = [e.message for e in Draft202012Validator(root).iter_errors(instance)]
        assert not errors, f"{schema}: {errors}"

    clock = Clock(msk(2026, 1, 12, 12, 0))
    client = await _client(aiohttp_client, tmp_path, clock)
    check("WidgetState", await _state(client))
    check("WidgetCallback", CALLBACK)
    resp = await client.post("/v1/widget/site/callback", json=CALLBACK, headers=FROM_SITE)
    check("WidgetAccepted", await resp.json())
    check("WidgetForm", FORM | {"consent": True})
    resp = await client.post("/v1/widget/site/form", json={"consent": False}, headers=FROM_SITE)
    check("Error", await resp.json())
    clock.set(msk(2026, 1, 12, 20, 0))
    check("WidgetState", await _state(client))


async def test_a_visitor_changing_networks_is_still_one_visitor(
    aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    client = await _client(
        aiohttp_client,
        tmp_path,
        Clock(msk(2026, 1, 12, 12, 0)),
        widget_config(limits={"submissions_per_ip": 2}),
        server={"trusted_proxies": ["127.0.0.1"]},
    )
    visitor = {"X-Leadgate-Visitor": "v" * 32}
    statuses = []
    for i in range(3):  # a new address each time, the same browser
        headers = FROM_SITE | visitor | {"X-Forwarded-For": f"203.0.113.{i + 1}"}
        resp = await client.post("/v1/widget/site/callback", json=CALLBACK, headers=headers)
        statuses.append(resp.status)
    assert statuses == [201, 201, 429]
    # Another browser on those addresses is not held back by this one.
    headers = FROM_SITE | {"X-Leadgate-Visitor": "w" * 32, "X-Forwarded-For": "203.0.113.9"}
    resp = await client.post("/v1/widget/site/callback", json=CALLBACK, headers=headers)
    assert resp.status == 201
