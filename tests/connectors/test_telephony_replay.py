"""Replays and forgeries of telephony webhooks, and what stops them.

Zadarma signs only caller_id + called_did + call_start: an attacker holding one captured
NOTIFY_START can turn it into a NOTIFY_END of their choosing (answered by anyone, any
duration, another call id) under the same, valid signature. Here that attack is played
against the freshness window on call_start (default 24 h, in the configured time zone)
and the allow-list of the provider's networks. Mango signs the whole json (a replay is
the same event again: idempotent); the CTI token may come in a header instead of the URL.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from conftest import make_settings
from test_telephony_support import (
    CTI_TOKEN,
    ZADARMA_SECRET,
    Client,
    count,
    load,
    mango_request,
    send,
    set_clock,
    telephony_config,
    zadarma_request,
)

from gateway.web import create_app

MSK = ZoneInfo("Europe/Moscow")
CAPTURED = load("zadarma_answered")["requests"][0]["form"]  # a NOTIFY_START, 2025-03-11 11:02:15
CAPTURED_AT = datetime(2025, 3, 11, 11, 2, 15, tzinfo=MSK)


def forged_end(form: dict[str, str]) -> dict[str, str]:
    """The captured start turned into an end: only the signed fields are kept."""
    return {
        **form,
        "event": "NOTIFY_END",
        "pbx_call_id": "in_forged_0001",
        "disposition": "answered",
        "duration": "999",
        "internal": "101",
        "is_recorded": "0",
    }


async def gateway(aiohttp_client: Any, tmp_path: Path, **zadarma: Any) -> Client:
    extra = zadarma.pop("_extra", {})
    telephony = telephony_config(**{"max_age_hours": 24, **zadarma})
    settings = make_settings(tmp_path, telephony=telephony, **extra)
    client: Client = await aiohttp_client(create_app(settings))
    return client


async def events(tmp_path: Path) -> int:
    return await count(tmp_path / "leadgate.db", "events")


async def test_the_forgery_keeps_a_valid_signature(aiohttp_client: Any, tmp_path: Path) -> None:
    """Why the checks below exist: the edited notification verifies."""
    client = await gateway(aiohttp_client, tmp_path, max_age_hours=0)
    original = zadarma_request(CAPTURED)
    forged = {"form": forged_end(CAPTURED), "headers": original["headers"]}
    status, _ = await send(client, "zadarma", forged)
    assert status == 200
    assert await events(tmp_path) == 2  # a call and its forged "answered by 101, 999 s" result


@pytest.mark.parametrize(
    ("later", "status"),
    [
        (timedelta(hours=30), 403),  # the replay a day later
        (timedelta(days=400), 403),
        (timedelta(hours=-30), 403),  # call_start far in the future
        (timedelta(hours=1), 200),  # within the window: what the allow-list is for
    ],
)
async def test_a_stale_replay_is_refused(
    aiohttp_client: Any, tmp_path: Path, later: timedelta, status: int
) -> None:
    client = await gateway(aiohttp_client, tmp_path)
    set_clock(client, lambda: CAPTURED_AT + later)
    forged = {"form": forged_end(CAPTURED), "headers": zadarma_request(CAPTURED)["headers"]}
    got, body = await send(client, "zadarma", forged)
    assert got == status, body
    if status == 403:
        assert body["error"] == "stale_event"
        assert await events(tmp_path) == 0


async def test_the_window_reads_call_start_in_the_configured_zone(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    # A Vladivostok account (UTC+10): 11:02 local is 01:02 UTC. 23 h later is fresh, 25 h
    # later is not; read as Moscow time the same text would be 7 h off.
    client = await gateway(aiohttp_client, tmp_path, timezone="Asia/Vladivostok")
    local = datetime(2025, 3, 11, 11, 2, 15, tzinfo=ZoneInfo("Asia/Vladivostok"))
    request = zadarma_request(CAPTURED)
    set_clock(client, lambda: local + timedelta(hours=25))
    assert (await send(client, "zadarma", request))[0] == 403
    set_clock(client, lambda: local + timedelta(hours=23))
    assert (await send(client, "zadarma", request))[0] == 200


async def test_only_the_providers_networks_may_send(aiohttp_client: Any, tmp_path: Path) -> None:
    client = await gateway(
        aiohttp_client,
        tmp_path,
        max_age_hours=0,
        allowed_networks=["185.45.152.42/32"],
        _extra={"server": {"trusted_proxies": ["127.0.0.1"]}},
    )
    forged = {"form": forged_end(CAPTURED), "headers": zadarma_request(CAPTURED)["headers"]}
    # From the attacker's own address (the test client is 127.0.0.1, a trusted proxy that
    # says who the client was).
    for client_ip in (None, "203.0.113.9"):
        headers = {**forged["headers"]}
        if client_ip:
            headers["X-Forwarded-For"] = client_ip
        resp = await client.post("/v1/telephony/zadarma", data=forged["form"], headers=headers)
        assert resp.status == 403
        assert "not from a network" in (await resp.json())["detail"]
    assert (await client.get("/v1/telephony/zadarma?zd_echo=probe")).status == 403
    assert await events(tmp_path) == 0
    # Zadarma's own address passes (and then the signature is checked as ever).
    resp = await client.post(
        "/v1/telephony/zadarma",
        data=CAPTURED,
        headers={**zadarma_request(CAPTURED)["headers"], "X-Forwarded-For": "185.45.152.42"},
    )
    assert resp.status == 200
    resp = await client.get(
        "/v1/telephony/zadarma?zd_echo=probe", headers={"X-Forwarded-For": "185.45.152.42"}
    )
    assert await resp.text() == "probe"


async def test_mango_and_cti_allow_lists(aiohttp_client: Any, tmp_path: Path) -> None:
    telephony = telephony_config(max_age_hours=0)
    telephony["mango"]["allowed_networks"] = ["198.51.100.0/24"]
    telephony["cti"]["allowed_networks"] = ["10.20.0.0/16"]
    client: Client = await aiohttp_client(create_app(make_settings(tmp_path, telephony=telephony)))
    mango = load("mango_answered")["requests"][0]
    assert (await send(client, "mango", mango))[0] == 403
    cti = load("cti_answered")["requests"][0]
    assert (await send(client, "cti", cti))[0] == 403
    assert await events(tmp_path) == 0


async def test_a_replayed_mango_event_is_the_same_event(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    """Mango's sign covers the whole json: a replay cannot change a thing, and the same
    entry again changes nothing stored."""
    client = await gateway(aiohttp_client, tmp_path, max_age_hours=0)
    for req in load("mango_answered")["requests"]:
        assert (await send(client, "mango", req))[0] == 200
    stored = await events(tmp_path)
    for req in load("mango_answered")["requests"]:
        assert (await send(client, "mango", req))[0] == 200
    assert await events(tmp_path) == stored
    edited = mango_request("events/summary", {"entry_id": "X", "talk_time": 999}, salt="guess")
    assert (await send(client, "mango", edited))[0] == 403


async def test_cti_token_in_a_header(aiohttp_client: Any, tmp_path: Path) -> None:
    client = await gateway(aiohttp_client, tmp_path, max_age_hours=0)
    body = load("cti_missed_ivr")["requests"][0]["json"]
    url = "/v1/telephony/cti"
    for headers in (
        {},
        {"Authorization": "Bearer wrong-token-wrong-token"},
        {"Authorization": f"Basic {CTI_TOKEN}"},
    ):
        resp = await client.post(url, json=body, headers=headers)
        assert resp.status == 403, headers
    assert await events(tmp_path) == 0
    resp = await client.post(url, json=body, headers={"Authorization": f"Bearer {CTI_TOKEN}"})
    assert resp.status == 200
    assert await events(tmp_path) == 1
    assert ZADARMA_SECRET  # the shared config still carries every provider
