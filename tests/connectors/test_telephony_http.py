"""The telephony webhooks over HTTP: recorded call sequences of all three providers,
idempotent repeats, refused senders, malformed and unknown events, steering, restarts."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from conftest import make_settings
from test_telephony_support import (
    AFTER_HOURS_FILE,
    CTI_TOKEN,
    FIXTURES,
    Client,
    count,
    load,
    mango_request,
    rows,
    sellers,
    send,
    set_clock,
    telephony_config,
    zadarma_request,
)

from gateway.keys import METRICS, STORE
from gateway.models import Lead, LeadStatus
from gateway.web import create_app

MSK = ZoneInfo("Europe/Moscow")
INBOUND = [p.stem for p in sorted(FIXTURES.glob("*.json")) if not p.stem.endswith("_outgoing")]
OUTGOING = ["zadarma_outgoing", "mango_outgoing", "cti_outgoing"]

MakeClient = Callable[..., Awaitable[Client]]


@pytest.fixture
def make_client(aiohttp_client: Any, tmp_path: Path) -> MakeClient:
    async def make(**overrides: Any) -> Client:
        zadarma = {"after_hours_ivr": AFTER_HOURS_FILE, **overrides.pop("zadarma", {})}
        telephony = {**telephony_config(**zadarma), **overrides.pop("telephony", {})}
        settings = make_settings(tmp_path, telephony=telephony, sellers=sellers(), **overrides)
        client: Client = await aiohttp_client(create_app(settings))
        return client

    return make


def db(tmp_path: Path) -> Path:
    return tmp_path / "leadgate.db"


async def play(client: Client, name: str) -> list[tuple[int, Any]]:
    """Deliver a recorded sequence; for CTI, at the recorded moment."""
    fixture = load(name)
    if fixture["provider"] == "cti":
        at = datetime.fromisoformat(fixture["received_at"])
        set_clock(client, lambda: at)
    return [await send(client, fixture["provider"], req) for req in fixture["requests"]]


async def lead_of(client: Client, lead_id: str | None) -> Lead:
    assert lead_id is not None
    lead = await client.app[STORE].get_lead(lead_id)
    assert lead is not None
    return lead


def metric(client: Client, name: str, **labels: str) -> float:
    value = client.app[METRICS].registry.get_sample_value(name, labels)
    return value or 0.0


# --- complete recorded calls ----------------------------------------------------------


@pytest.mark.parametrize("name", INBOUND)
async def test_recorded_inbound_call(make_client: MakeClient, tmp_path: Path, name: str) -> None:
    client = await make_client()
    fixture = load(name)
    expect = fixture["expect"]
    answers = await play(client, name)
    assert all(status == 200 for status, _ in answers), answers

    stored = await rows(db(tmp_path))
    calls = [r for r in stored if r.meta["kind"] == "call"]
    results = [r for r in stored if r.meta["kind"] == "call_result"]
    recordings = [r for r in stored if r.meta["kind"] == "call_recording"]
    assert len(calls) == 1 and calls[0].outcome == "created"
    assert len(results) == 1 and results[0].outcome == "merged"
    assert len(recordings) == expect["recordings"]
    assert len(stored) == 2 + expect["recordings"]
    assert {r.lead_id for r in stored} == {calls[0].lead_id}
    assert await count(db(tmp_path), "leads") == 1

    lead = await lead_of(client, calls[0].lead_id)
    assert lead.channel.value == "phone" and lead.source_id == "CALL"
    assert lead.status is LeadStatus.NEW and lead.contact.phones == ("+79161234567",)
    assert lead.after_hours is expect["after_hours"]
    started = datetime.fromisoformat(calls[0].meta["started_at"])
    assert lead.created_at >= started  # the lead exists from the first webhook of the call
    local = started.astimezone(MSK)
    if expect["after_hours"]:
        # Called at 21:40 on Tuesday: the callback is due 15 minutes after Wednesday's opening.
        assert lead.next_open_at == datetime(2025, 3, 12, 10, 0, tzinfo=MSK)
        assert lead.sla_due_at == datetime(2025, 3, 12, 10, 15, tzinfo=MSK)
        assert lead.after_hours_reason and "outside hours" in lead.after_hours_reason
    else:
        assert lead.sla_due_at == started + timedelta(minutes=15)
        assert 10 <= local.hour < 19

    result = results[0].meta
    assert result["missed"] is expect["missed"]
    assert result["answered"] is not expect["missed"]
    assert result["disposition"] == expect["disposition"]
    assert result["answered_by_extension"] == expect["answered_by_extension"]
    assert result["answered_by"] == ("anna" if expect["answered_by_extension"] == "101" else None)
    assert result["duration"] == expect["duration"]
    assert calls[0].meta["missed"] is None and calls[0].meta["direction"] == "in"
    assert calls[0].occurred_at == results[0].occurred_at or fixture["provider"] == "cti"
    if recordings:
        attachment = recordings[0].attachments[0]
        assert attachment["content_type"] == "audio/mpeg"
        assert attachment["url"].startswith("https://api.zadarma.com/v1/pbx/record/request/")
        assert lead.events[-1].attachments[0].url == attachment["url"]

    # What the start of the call was answered (Zadarma and CTI may steer the call).
    start_answer = answers[0][1]
    if fixture["provider"] == "zadarma":
        assert start_answer == ({"ivr_play": AFTER_HOURS_FILE} if expect["after_hours"] else {})
    elif fixture["provider"] == "cti":
        assert start_answer == {}

    # A provider retrying every webhook changes nothing.
    again = await play(client, name)
    assert [s for s, _ in again] == [s for s, _ in answers]
    assert again[0][1] == answers[0][1]
    assert await rows(db(tmp_path)) == stored
    assert await count(db(tmp_path), "outbox") == len(stored)


@pytest.mark.parametrize("name", OUTGOING)
async def test_outgoing_call_without_open_lead_is_kept(
    make_client: MakeClient, tmp_path: Path, name: str
) -> None:
    client = await make_client()
    answers = await play(client, name)
    assert all(status == 200 for status, _ in answers)
    stored = await rows(db(tmp_path))
    assert stored and all(r.outcome == "kept" and r.lead_id is None for r in stored)
    assert await count(db(tmp_path), "leads") == 0
    result = next(r for r in stored if r.meta["kind"] == "call_result")
    assert result.meta["answered"] is True and "missed" not in result.meta
    assert result.meta["duration"] == load(name)["expect"]["duration"]


@pytest.mark.parametrize("provider", ["zadarma", "mango", "cti"])
async def test_call_back_is_activity_on_the_missed_call_lead(
    make_client: MakeClient, tmp_path: Path, provider: str
) -> None:
    client = await make_client()
    await play(client, f"{provider}_busy")
    await play(client, f"{provider}_outgoing")
    stored = await rows(db(tmp_path))
    leads = {r.lead_id for r in stored}
    assert len(leads) == 1 and None not in leads
    outgoing = [r for r in stored if r.meta.get("direction") == "out"]
    assert outgoing and all(r.outcome == "merged" for r in outgoing)
    lead = await lead_of(client, stored[0].lead_id)
    kinds = [(e.meta["kind"], e.meta.get("direction")) for e in lead.events]
    assert kinds[:2] == [("call", "in"), ("call_result", "in")]
    assert ("call", "out") in kinds and ("call_result", "out") in kinds


async def test_each_call_is_one_attempt_on_the_same_lead(
    make_client: MakeClient, tmp_path: Path
) -> None:
    """Three calls of one customer through three providers: one lead, three attempts."""
    client = await make_client()
    for name in ("zadarma_answered", "mango_missed_ivr", "cti_busy"):
        await play(client, name)
    stored = await rows(db(tmp_path))
    calls = [r for r in stored if r.meta["kind"] == "call"]
    assert [r.outcome for r in calls] == ["created", "merged", "merged"]
    assert len({r.lead_id for r in stored}) == 1
    assert metric(client, "leadgate_events_total", channel="phone", outcome="created") == 1


# --- refused senders store nothing ----------------------------------------------------


def start_form(**change: str) -> dict[str, str]:
    form: dict[str, str] = load("zadarma_answered")["requests"][0]["form"]
    return {**form, **change}


async def assert_nothing_stored(tmp_path: Path) -> None:
    assert await count(db(tmp_path), "events") == 0
    assert await count(db(tmp_path), "quarantine") == 0
    assert await count(db(tmp_path), "checkpoints") == 0


async def test_zadarma_bad_signatures(make_client: MakeClient, tmp_path: Path) -> None:
    client = await make_client()
    form = start_form()
    good = zadarma_request(form)["headers"]["Signature"]
    cases = [
        ({}, 401),
        ({"Signature": ""}, 401),
        ({"Signature": "bm90IGEgc2lnbmF0dXJl"}, 403),
        ({"Signature": zadarma_request(form, "other-secret")["headers"]["Signature"]}, 403),
    ]
    for headers, status in cases:
        resp = await client.post("/v1/telephony/zadarma", data=form, headers=headers)
        assert resp.status == status
        assert (await resp.json())["error"] in ("unauthorized", "forbidden")
    # A signature for another caller does not cover this one.
    resp = await client.post(
        "/v1/telephony/zadarma",
        data={**form, "caller_id": "79169999999"},
        headers={"Signature": good},
    )
    assert resp.status == 403
    await assert_nothing_stored(tmp_path)
    assert (
        metric(
            client,
            "leadgate_telephony_webhooks_total",
            provider="zadarma",
            kind="unknown",
            result="unauthorized",
        )
        == 5
    )


async def test_mango_bad_signatures(make_client: MakeClient, tmp_path: Path) -> None:
    client = await make_client()
    req = load("mango_answered")["requests"][0]
    form = req["form"]
    url = "/v1/telephony/mango/events/call"
    for data, status in [
        ({k: v for k, v in form.items() if k != "sign"}, 401),
        ({k: v for k, v in form.items() if k != "vpbx_api_key"}, 401),
        ({**form, "sign": "0" * 64}, 403),
        ({**form, "vpbx_api_key": "someone-else"}, 403),
        (mango_request("events/call", {"entry_id": "X"}, salt="guess")["form"], 403),
        ({**form, "json": form["json"].replace("79161234567", "79169999999")}, 403),
    ]:
        resp = await client.post(url, data=data)
        assert resp.status == status, data
    # Unknown event kinds are refused the same way when unsigned.
    resp = await client.post("/v1/telephony/mango/events/record/added", data={"json": "{}"})
    assert resp.status == 401
    await assert_nothing_stored(tmp_path)


async def test_cti_wrong_token(make_client: MakeClient, tmp_path: Path) -> None:
    client = await make_client()
    req = load("cti_missed_ivr")["requests"][0]
    for token in ("wrong-token-wrong-token", CTI_TOKEN[:-1], CTI_TOKEN + "x"):
        status, body = await send(client, "cti", req, token=token)
        assert status == 403 and body["error"] == "forbidden"
    resp = await client.post("/v1/telephony/cti/", json=req["json"])
    assert resp.status == 404
    await assert_nothing_stored(tmp_path)


async def test_providers_without_secrets_are_not_mounted(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, telephony={"cti": {"token": CTI_TOKEN}})
    client = await aiohttp_client(create_app(settings))
    resp = await client.post("/v1/telephony/zadarma", data=start_form())
    assert resp.status == 404
    resp = await client.post("/v1/telephony/mango/events/call", data={})
    assert resp.status == 404
    (tmp_path / "none").mkdir()  # the store makes no directories
    none = await aiohttp_client(create_app(make_settings(tmp_path / "none")))
    assert (await none.get("/v1/telephony/zadarma?zd_echo=x")).status == 404


# --- malformed and unknown events -----------------------------------------------------


async def test_authentic_but_malformed_is_quarantined_and_400(
    make_client: MakeClient, tmp_path: Path
) -> None:
    client = await make_client()
    bad_time = zadarma_request(start_form(call_start="11.03.2025 11:02"))
    status, body = await send(client, "zadarma", bad_time)
    assert status == 400 and body["error"] == "invalid_event" and "call_start" in body["detail"]

    bad_json = mango_request("events/call", {"entry_id": "E"})
    bad_json["form"]["json"] = "{not json"
    from connectors.telephony.mango import sign

    bad_json["form"]["sign"] = sign(
        bad_json["form"]["vpbx_api_key"], "{not json", "fixture0mango0salt0d3e4f5"
    )
    status, body = await send(client, "mango", bad_json)
    assert status == 400 and body["error"] == "invalid_event"

    status, body = await send(client, "mango", mango_request("events/summary", {"entry_id": "E"}))
    assert status == 400 and "create_time" in body["detail"]

    status, body = await send(client, "cti", {"json": ["newCall"]})
    assert status == 400 and body["error"] == "invalid_json"
    status, body = await send(client, "cti", {"json": {"event": "newCall", "direction": "in"}})
    assert status == 400 and "callId" in body["detail"]

    assert await count(db(tmp_path), "events") == 0
    assert await count(db(tmp_path), "quarantine") == 5
    reasons = await count(db(tmp_path), "quarantine:phone")
    assert reasons == 5


async def test_unreadable_requests_get_clear_4xx(make_client: MakeClient, tmp_path: Path) -> None:
    client = await make_client()
    # Signed (the header is checked before the body is read): the body is what is wrong.
    signed = {"Signature": "c2lnbmVk"}
    resp = await client.post("/v1/telephony/zadarma", json=start_form(), headers=signed)
    assert resp.status == 415
    resp = await client.post("/v1/telephony/zadarma", data={"caller_id": "1"}, headers=signed)
    assert resp.status == 400 and (await resp.json())["error"] == "invalid_event"
    resp = await client.post(
        f"/v1/telephony/cti/{CTI_TOKEN}",
        data=b"\xff\xfe",
        headers={"Content-Type": "text/plain"},
    )
    assert resp.status == 415
    resp = await client.post(
        "/v1/telephony/zadarma",
        data=b"--x\r\nbroken",
        headers={"Content-Type": "multipart/form-data; boundary=x"} | signed,
    )
    assert resp.status == 400
    await assert_nothing_stored(tmp_path)


async def test_unknown_events_are_acknowledged_and_counted(
    make_client: MakeClient, tmp_path: Path
) -> None:
    client = await make_client()
    status, body = await send(
        client, "zadarma", zadarma_request({"event": "SPEECH_RECOGNITION", "pbx_call_id": "in_x"})
    )
    assert (status, body) == (200, {})
    status, _ = await send(
        client,
        "mango",
        mango_request("events/record/added", {"entry_id": "E", "recording_id": "R"}),
    )
    assert status == 200
    status, body = await send(client, "cti", {"json": {"event": "transfer", "callId": "c"}})
    assert (status, body) == (200, {})
    for provider in ("zadarma", "mango", "cti"):
        assert metric(client, "leadgate_telephony_unknown_events_total", provider=provider) == 1
    await assert_nothing_stored(tmp_path)


async def test_internal_calls_are_acknowledged_not_stored(
    make_client: MakeClient, tmp_path: Path
) -> None:
    client = await make_client()
    form = {
        "event": "NOTIFY_OUT_START",
        "call_start": "2025-03-11 12:00:00",
        "pbx_call_id": "out_int",
        "internal": "101",
        "destination": "102",
    }
    status, _ = await send(client, "zadarma", zadarma_request(form))
    assert status == 200
    await assert_nothing_stored(tmp_path)
    labels = {"provider": "zadarma", "kind": "ignored", "result": "ignored"}
    assert metric(client, "leadgate_telephony_webhooks_total", **labels) == 1


async def test_zd_echo(make_client: MakeClient) -> None:
    client = await make_client()
    resp = await client.get("/v1/telephony/zadarma", params={"zd_echo": "d2a1f3"})
    assert resp.status == 200 and await resp.text() == "d2a1f3"
    assert resp.content_type == "text/plain"
    resp = await client.get("/v1/telephony/zadarma")
    assert resp.status == 400
    resp = await client.get("/v1/telephony/zadarma", params={"zd_echo": "x" * 300})
    assert resp.status == 400


# --- steering -------------------------------------------------------------------------


def zd_call(pbx: str, caller: str, at: str) -> tuple[dict[str, Any], dict[str, Any]]:
    base = {
        "call_start": f"2025-03-11 {at}",
        "pbx_call_id": pbx,
        "caller_id": caller,
        "called_did": "74951234567",
    }
    start = zadarma_request({"event": "NOTIFY_START", **base})
    end = zadarma_request(
        {
            "event": "NOTIFY_END",
            **base,
            "disposition": "no answer",
            "duration": "0",
            "is_recorded": "0",
        }
    )
    return start, end


async def test_sticky_redirect_sends_a_returning_caller_to_their_seller(
    make_client: MakeClient, tmp_path: Path
) -> None:
    client = await make_client(zadarma={"sticky_redirect": True, "redirect_timeout": 25})
    first, end = zd_call("in_s1", "79161234567", "11:00:00")
    status, body = await send(client, "zadarma", first)
    assert (status, body) == (200, {})  # a new caller: the PBX's own scenario
    await send(client, "zadarma", end)
    lead_id = (await rows(db(tmp_path)))[0].lead_id
    owner = (await lead_of(client, lead_id)).assigned_to
    extension = {"anna": "101", "boris": "102"}[owner or ""]

    second, _ = zd_call("in_s2", "+7 916 123-45-67", "11:30:00")
    _, body = await send(client, "zadarma", second)
    assert body == {"redirect": extension, "return_timeout": 25}
    assert (await send(client, "zadarma", second))[1] == body  # a retried start: same answer
    # A stranger is not redirected; nor is anyone after hours.
    stranger, _ = zd_call("in_s3", "79035550101", "11:31:00")
    assert (await send(client, "zadarma", stranger))[1] == {}
    evening, _ = zd_call("in_s4", "79161234567", "20:00:00")
    assert (await send(client, "zadarma", evening))[1] == {"ivr_play": AFTER_HOURS_FILE}
    steered = metric(
        client, "leadgate_telephony_steering_total", provider="zadarma", action="sticky_redirect"
    )
    assert steered == 2


async def test_sticky_redirect_after_the_old_lead_closed(
    make_client: MakeClient, tmp_path: Path
) -> None:
    """Outside the dedup window the caller gets a new lead, still routed to their seller."""
    client = await make_client(zadarma={"sticky_redirect": True}, dedup={"window_days": 0})
    first, _ = zd_call("in_w1", "79161234567", "11:00:00")
    await send(client, "zadarma", first)
    second, _ = zd_call("in_w2", "79161234567", "12:00:00")
    _, body = await send(client, "zadarma", second)
    stored = await rows(db(tmp_path))
    assert [r.outcome for r in stored] == ["created", "created"]
    owner = (await lead_of(client, stored[0].lead_id)).assigned_to
    second_lead = await lead_of(client, stored[1].lead_id)
    assert second_lead.assigned_to == owner and second_lead.assignment_reason.startswith("sticky")
    assert body["redirect"] == {"anna": "101", "boris": "102"}[owner or ""]


async def test_blocked_numbers_are_rejected_and_kept_as_junk(
    make_client: MakeClient, tmp_path: Path
) -> None:
    client = await make_client(
        screen={"blocked_phones": ["8 (916) 000-00-01"]},
        telephony={"blocked_numbers": ["+7 916 000-00-02"]},
    )
    start, end = zd_call("in_b1", "79160000001", "11:00:00")
    assert (await send(client, "zadarma", start))[1] == {
        "redirect": "blacklist",
        "return_timeout": 0,
    }
    await send(client, "zadarma", end)
    _, body = await send(
        client,
        "cti",
        {
            "json": {
                "event": "newCall",
                "from": "79160000002",
                "to": "74951234567",
                "direction": "in",
                "callId": "cti-b2",
            }
        },
    )
    assert body == {"action": "reject", "reason": "busy"}
    stored = await rows(db(tmp_path))
    assert [r.outcome for r in stored] == ["created", "merged", "created"]
    junk = [await lead_of(client, r.lead_id) for r in stored if r.meta["kind"] == "call"]
    assert [(lead.status, lead.junk_reason) for lead in junk] == [
        (LeadStatus.JUNK, "blocked phone"),
        (LeadStatus.JUNK, "blocked number"),
    ]
    # Our own call to a blocked number makes no lead of any kind.
    out = zadarma_request(
        {
            "event": "NOTIFY_OUT_START",
            "call_start": "2025-03-11 12:00:00",
            "pbx_call_id": "out_b",
            "internal": "101",
            "destination": "79160000002",
        }
    )
    assert (await send(client, "zadarma", out))[0] == 200
    assert (await rows(db(tmp_path)))[-1].outcome == "kept"
    assert await count(db(tmp_path), "leads") == 2


async def test_blocked_hangup_action(make_client: MakeClient) -> None:
    client = await make_client(
        zadarma={"blocked_action": "hangup"}, telephony={"blocked_numbers": ["79160000001"]}
    )
    start, _ = zd_call("in_h", "79160000001", "11:00:00")
    assert (await send(client, "zadarma", start))[1] == {"hangup": 1}


# --- lost webhooks, out of order, restarts --------------------------------------------


async def test_end_without_start_still_makes_the_lead(
    make_client: MakeClient, tmp_path: Path
) -> None:
    client = await make_client()
    reqs = load("zadarma_after_hours")["requests"]
    status, _ = await send(client, "zadarma", reqs[-1])  # only NOTIFY_END arrives
    assert status == 200
    stored = await rows(db(tmp_path))
    assert [(r.meta["kind"], r.outcome) for r in stored] == [
        ("call", "created"),
        ("call_result", "merged"),
    ]
    lead = await lead_of(client, stored[0].lead_id)
    assert lead.after_hours and lead.sla_due_at == datetime(2025, 3, 12, 10, 15, tzinfo=MSK)
    # The start arriving late is a replay of the call: nothing new.
    assert (await send(client, "zadarma", reqs[0]))[0] == 200
    assert await rows(db(tmp_path)) == stored


async def test_restart_between_start_and_end(aiohttp_client: Any, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, telephony=telephony_config(), sellers=sellers())
    reqs = load("zadarma_answered")["requests"]
    start, internal, answer, end, record = reqs
    answer = zadarma_request({**answer["form"], "destination": "102", "internal": "102"})
    end = zadarma_request({k: v for k, v in end["form"].items() if k != "internal"})

    first = await aiohttp_client(create_app(settings))
    for req in (start, internal, answer):
        assert (await send(first, "zadarma", req))[0] == 200
    await first.close()  # the gateway stops: store closed, nothing in memory survives

    second = await aiohttp_client(create_app(settings))
    for req in (start, end, record, end):  # a retried start and a repeated end as well
        assert (await send(second, "zadarma", req))[0] == 200
    stored = await rows(db(tmp_path))
    assert await count(db(tmp_path), "leads") == 1
    assert [(r.meta["kind"], r.outcome) for r in stored] == [
        ("call", "created"),
        ("call_result", "merged"),
        ("call_recording", "merged"),
    ]
    result = stored[1].meta
    # Who answered came from the answer webhook, before the restart.
    assert result["answered"] is True and result["answered_by"] == "boris"
    assert result["answered_by_extension"] == "102"


async def test_concurrent_duplicate_webhooks_make_one_call(
    make_client: MakeClient, tmp_path: Path
) -> None:
    import asyncio

    client = await make_client()
    reqs = load("mango_answered")["requests"]
    await asyncio.gather(*(send(client, "mango", r) for r in reqs * 3))
    stored = await rows(db(tmp_path))
    assert sorted(r.meta["kind"] for r in stored) == ["call", "call_result"]
    assert await count(db(tmp_path), "leads") == 1


# --- found in review: inputs that reached a 500 ---------------------------------------------


async def test_unreadable_multipart_is_400_before_the_signature_is_verified(
    make_client: MakeClient, tmp_path: Path
) -> None:
    # Zadarma's Signature header must be there (token first), but what it signs is inside
    # the form: a form that cannot be read is a 400 before the signature is verified.
    client = await make_client()
    body = (
        b'--XX\r\nContent-Disposition: form-data; name="event"\r\n'
        b"Content-Transfer-Encoding: bogus\r\n\r\nNOTIFY_START\r\n--XX--\r\n"
    )
    headers = {"Content-Type": "multipart/form-data; boundary=XX", "Signature": "c2lnbmVk"}
    for path in (
        "/v1/telephony/zadarma",
        "/v1/telephony/mango/events/call",
        f"/v1/telephony/cti/{CTI_TOKEN}",
    ):
        resp = await client.post(path, data=body, headers=headers)
        assert resp.status == 400, path
        assert (await resp.json())["error"] == "invalid_form"
    assert await count(db(tmp_path), "events") == 0


async def test_absurd_duration_is_refused_not_a_500(make_client: MakeClient) -> None:
    client = await make_client()
    form = {
        "event": "NOTIFY_END",
        "pbx_call_id": "in_big1",
        "caller_id": "+79161234567",
        "called_did": "74951234567",
        "call_start": "2026-11-27 10:00:00",
        "disposition": "answered",
        "duration": "9" * 30,
        "internal": "101",
    }
    status, _ = await send(client, "zadarma", zadarma_request(form))
    assert status == 400


async def test_longest_call_ids_still_fit_a_recording_event(make_client: MakeClient) -> None:
    client = await make_client()
    form = {"event": "NOTIFY_RECORD", "pbx_call_id": "p" * 250, "call_id_with_rec": "r" * 250}
    status, _ = await send(client, "zadarma", zadarma_request(form))
    assert status == 400  # over the id limit: refused by name, not a 500
    form = {"event": "NOTIFY_RECORD", "pbx_call_id": "p" * 200, "call_id_with_rec": "r" * 200}
    status, _ = await send(client, "zadarma", zadarma_request(form))
    assert status == 200
