"""Telephony against what the vendors themselves send: the corpus in fixtures/vendor/
(Zadarma's SDK and docs, the Mango Office VPBX API manual, Zammad's CTI specs and docs; see
fixtures/vendor/SOURCES.md). Every artifact is parsed and must become what a seller needs:
the caller's number in E.164, missed or answered as the vendor means it, by whom."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from conftest import ADMIN_AUTH, make_settings
from test_telephony_support import Client, send, set_clock

from connectors.telephony import cti, mango, zadarma
from connectors.telephony.calls import CallEnd, Notice, settle
from gateway.web import create_app

VENDOR = Path(__file__).parent / "fixtures" / "vendor"
# laravel-zadarma's webhook test signs with this secret; the corpus is signed with it too.
ZADARMA_SECRET = "test-secret"
# The Mango manual's example vpbx_api_key; the manual shows no salt, this one is ours.
MANGO_KEY = "5f4dcc3b5aa765d61d8327deb882cf99"
MANGO_SALT = "fixture-mango-salt"
CTI_TOKEN = "vendor-corpus-cti-token-1f2e3d"
MSK = ZoneInfo("Europe/Moscow")
NOW = datetime(2026, 5, 12, 10, 30, tzinfo=UTC)


def corpus(provider: str) -> list[str]:
    return sorted(p.stem for p in (VENDOR / provider).glob("*.json"))


def load(provider: str, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VENDOR / provider / f"{name}.json").read_text("utf-8"))
    return data


def check(notice: Notice, expect: dict[str, Any]) -> None:
    """The parts of a Notice a fixture's `expect` names, compared one by one."""
    assert notice.kind == expect["kind"], notice
    if "reason" in expect:
        assert notice.reason == expect["reason"]
    if "direction" in expect:
        assert notice.direction == expect["direction"]
    if "call_id" in expect:
        assert notice.call_id == expect["call_id"]
    if "call" in expect:
        assert notice.call is None
    if "number" in expect:
        assert notice.call is not None and notice.call.number == expect["number"]
    if "line" in expect:
        assert notice.call is not None and notice.call.line == expect["line"]
    if "extension" in expect:
        assert notice.call is not None and notice.call.extension == expect["extension"]
    if notice.kind == "answer" and "answered_by" in expect:
        assert notice.answered_by == expect["answered_by"]
    if notice.kind == "end":
        end = notice.end
        assert end is not None
        if "disposition" in expect:
            assert end.disposition == expect["disposition"]
        if "duration" in expect:
            assert end.duration == expect["duration"]
        if "recorded" in expect:
            assert end.recorded is expect["recorded"]
        if "answered_by" in expect:
            assert end.answered_by == expect["answered_by"]
    if notice.kind == "recording":
        assert notice.recording is not None
        assert notice.recording.recording_id == expect["recording_id"]


# --- Zadarma: every notification type, signed by the vendor's formula ----------------------

# A known vector, made outside this code base with the vendor's formula, in two tools:
# - the shell recipe of docs/channels/telephony.md (OpenSSL):
#     printf '%s' '48123123123489991112222026-05-12 13:00:00' \
#       | openssl dgst -sha1 -hmac test-secret | awk '{print $NF}' | tr -d '\n' | base64
#   = base64_encode(hash_hmac('sha1', caller_id . called_did . call_start, $secret)) of
#   Zadarma's docs and PHP SDK (hash_hmac returns lowercase hex);
# - Node's crypto as Zadarma's TypeScript SDK (src/Webhook.ts) writes it:
#     crypto.createHmac('sha1', secret).update(s).digest('base64')   (the raw digest)
# for laravel-zadarma's own test notification (caller 48123123123, did 48999111222).
KNOWN_FIELDS = {
    "event": "NOTIFY_START",
    "caller_id": "48123123123",
    "called_did": "48999111222",
    "call_start": "2026-05-12 13:00:00",
}
KNOWN_HEX_B64 = "YTg0YjUyYTY2MTQ1ZTcxZDc4M2U4N2E1ZGRiMjJhNTRlNGNjMmVhZQ=="
KNOWN_RAW_B64 = "qEtSpmFF5x14Poel3bIqVOTMLq4="


def test_zadarma_signature_matches_the_vendor_formula_computed_elsewhere() -> None:
    assert zadarma.signature(ZADARMA_SECRET, KNOWN_FIELDS) == KNOWN_HEX_B64
    assert zadarma.verify(ZADARMA_SECRET, KNOWN_FIELDS, KNOWN_HEX_B64)
    # Zadarma's TypeScript SDK checks the raw digest's base64: the same HMAC, accepted too.
    assert zadarma.verify(ZADARMA_SECRET, KNOWN_FIELDS, KNOWN_RAW_B64)
    assert not zadarma.verify("another-secret", KNOWN_FIELDS, KNOWN_HEX_B64)
    assert not zadarma.verify("another-secret", KNOWN_FIELDS, KNOWN_RAW_B64)
    later = {**KNOWN_FIELDS, "call_start": "2026-05-12 13:00:01"}
    assert not zadarma.verify(ZADARMA_SECRET, later, KNOWN_HEX_B64)


def test_zadarma_corpus_has_every_notification_type() -> None:
    events = {load("zadarma", name)["form"]["event"] for name in corpus("zadarma")}
    assert events == set(zadarma.SIGNED_FIELDS)


@pytest.mark.parametrize("name", corpus("zadarma"))
def test_zadarma_notification(name: str) -> None:
    doc = load("zadarma", name)
    form, given = doc["form"], doc["headers"]["Signature"]
    assert tuple(doc["signed_fields"]) == zadarma.SIGNED_FIELDS[form["event"]]
    assert zadarma.verify(ZADARMA_SECRET, form, given)
    assert not zadarma.verify("another-secret", form, given)
    notice = zadarma.parse(form, tz=MSK, region="RU")
    check(notice, doc["expect"])
    if notice.call is not None:
        # Zadarma sends local wall time; the call is timed in the configured zone.
        assert notice.call.started_at.tzinfo is MSK


# The SDK's list of NOTIFY_END dispositions (lib/Webhook/NotifyEnd.php).
@pytest.mark.parametrize(
    ("word", "disposition"),
    [
        ("answered", "answered"),
        ("busy", "busy"),
        ("cancel", "cancel"),
        ("no answer", "no_answer"),
        ("failed", "failed"),
        ("no money", "failed"),
        ("unallocated number", "failed"),
        ("no limit", "failed"),
        ("no day limit", "failed"),
        ("line limit", "failed"),
        ("no money, no limit", "failed"),
    ],
)
def test_zadarma_documented_dispositions(word: str, disposition: str) -> None:
    form = {**load("zadarma", "notify_end")["form"], "disposition": word}
    end = zadarma.parse(form, tz=MSK).end
    assert end is not None and end.disposition == disposition
    assert end.provider_disposition == word


# --- Mango Office: the VPBX API manual's own examples ----------------------------------------


@pytest.mark.parametrize("name", corpus("mango"))
def test_mango_manual_example(name: str) -> None:
    for req in load("mango", name)["requests"]:
        form = req["form"]
        assert mango.verify(MANGO_KEY, MANGO_SALT, form) is None
        kind = req["path"].split("/", 1)[1]
        check(mango.parse(kind, json.loads(form["json"]), region="RU"), req["expect"])


def test_mango_summary_tells_the_ivr_from_a_person() -> None:
    """The manual's example 2 (the caller left in the IVR) has forward_time set and
    entry_result 1: only the empty `to` and talk_time 0 say nobody was rung."""
    example = json.loads(load("mango", "summary_examples")["requests"][1]["form"]["json"])
    assert example["forward_time"] and example["entry_result"] == 1 and example["to"] == {}
    end = mango.parse("summary", example).end
    assert end is not None and end.disposition == "not_reached"
    rang = mango.parse("summary", {**example, "to": {"extension": "123"}}).end
    assert rang is not None and rang.disposition == "no_answer"
    # disconnect_reason by the manual's classes: busy, the caller hung up, PBX trouble
    for reason, disposition in ((1121, "busy"), (1110, "cancel"), (5003, "failed")):
        data = {**example, "to": {"extension": "123"}, "disconnect_reason": reason}
        got = mango.parse("summary", data).end
        assert got is not None and got.disposition == disposition
    # entry_result 0 is the manual's "missed, no conversation", whatever talk_time says
    talk = {**example, "to": {"extension": "123"}, "talk_time": 1399906980, "entry_result": 0}
    got = mango.parse("summary", talk).end
    assert got is not None and got.disposition == "no_answer"


def test_mango_internal_call_is_no_customer() -> None:
    """call_direction 0 is an internal call (the manual), even though `to.number` of an
    employee reached on a mobile is a valid outside number."""
    internal = {
        "entry_id": "232wc3e3w3s222",
        "call_direction": 0,
        "from": {"extension": "123", "number": "sip:user1@xyz.mangosip.ru"},
        "to": {"extension": "1234", "number": "79161234567"},
        "create_time": 1399906976,
        "forward_time": 1399906976,
        "talk_time": 1399906980,
        "end_time": 1399906990,
        "entry_result": 1,
        "disconnect_reason": 1100,
    }
    notice = mango.parse("summary", internal)
    assert (notice.kind, notice.reason) == ("ignored", "internal call")


# --- Zammad's generic CTI: its request specs and its API documentation ----------------------


@pytest.mark.parametrize("name", corpus("cti"))
def test_cti_zammad_requests(name: str) -> None:
    answered_by: str | None = None
    for req in load("cti", name)["requests"]:
        data = dict(req["json"]) if "json" in req else _form(req["form"])
        notice = cti.parse(data, received_at=NOW, region="RU")
        check(notice, req["expect"])
        if notice.kind == "answer":
            answered_by = notice.answered_by
        if "settled" in req["expect"]:
            assert notice.end is not None and notice.direction is not None
            final: CallEnd = settle(notice.end, notice.direction, answered_by)
            assert final.disposition == req["expect"]["settled"]
            if final.disposition != "answered":
                assert final.answered_by is None


def _form(pairs: list[list[str]]) -> dict[str, Any]:
    """Form pairs as the connector's read_form gives them (user[] repeats into a list)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key.endswith("[]"):
            out.setdefault(key, []).append(value)
        else:
            out.setdefault(key, value)
    return out


# --- over HTTP: what the seller finally sees through GET /v1/leads ---------------------------

MakeClient = Callable[..., Awaitable[Client]]


@pytest.fixture
def make_client(aiohttp_client: Any, tmp_path: Path) -> MakeClient:
    async def make(**overrides: Any) -> Client:
        telephony = {
            "zadarma": {"api_secret": ZADARMA_SECRET},
            "mango": {"api_key": MANGO_KEY, "api_salt": MANGO_SALT},
            "cti": {"token": CTI_TOKEN},
            **overrides.pop("telephony", {}),
        }
        sellers = [
            {"id": "anna", "name": "Анна", "crm_user_id": 1, "extension": "123"},
            {"id": "boris", "name": "Борис", "crm_user_id": 2, "extension": "100"},
        ]
        settings = make_settings(tmp_path, telephony=telephony, sellers=sellers, **overrides)
        client: Client = await aiohttp_client(create_app(settings))
        return client

    return make


async def leads(client: Client) -> list[dict[str, Any]]:
    """Every lead with its events, as the admin API shows them."""
    resp = await client.get("/v1/leads", params={"limit": "500"}, headers=ADMIN_AUTH)
    assert resp.status == 200
    found = []
    for listed in (await resp.json())["leads"]:
        one = await client.get(f"/v1/leads/{listed['id']}", headers=ADMIN_AUTH)
        assert one.status == 200
        found.append(await one.json())
    return found


def result_of(lead: dict[str, Any]) -> dict[str, Any]:
    (fact,) = [e["meta"] for e in lead["events"] if e["meta"].get("kind") == "call_result"]
    return fact


async def play_cti(client: Client, name: str) -> list[tuple[int, Any]]:
    out = []
    for req in load("cti", name)["requests"]:
        out.append(await send(client, "cti", req, token=CTI_TOKEN))
    return out


async def test_cti_foreign_caller_keeps_the_number_and_names_who_answered(
    make_client: MakeClient,
) -> None:
    client = await make_client()
    answers = await play_cti(client, "zammad_docs_inbound_json")
    assert [status for status, _ in answers] == [200, 200, 200]
    (lead,) = await leads(client)
    assert lead["contact"]["phones"] == ["+493023125741"]  # "493023125741", no "+"
    fact = result_of(lead)
    assert fact["answered"] is True and fact["missed"] is False
    assert fact["answered_by_extension"] == "emma@chrispresso.com"


async def test_cti_call_id_spelling_and_voicemail_is_a_missed_call(
    make_client: MakeClient,
) -> None:
    client = await make_client()
    answers = await play_cti(client, "zammad_spec_inbound_voicemail")
    assert [status for status, _ in answers] == [200, 200, 200]  # call_id, not callId
    (lead,) = await leads(client)
    assert lead["events"][0]["external_id"] == "cti:1234567890-4"
    fact = result_of(lead)
    assert fact["missed"] is True and fact["answered"] is False
    assert fact["disposition"] == "not_reached"
    assert fact["provider_disposition"] == "normalClearing, voicemail"
    assert fact["summary"].startswith("Пропущенный звонок")


async def test_cti_hangup_naming_only_the_call_settles_it(make_client: MakeClient) -> None:
    client = await make_client()
    answers = await play_cti(client, "zammad_spec_inbound_answered")
    assert [status for status, _ in answers] == [200, 200, 200]
    (lead,) = await leads(client)
    assert lead["contact"]["phones"] == []  # 4912347114711 is no valid number anywhere
    assert lead["events"][0]["meta"]["caller_hidden"] is True
    fact = result_of(lead)
    assert fact["answered"] is True and fact["answered_by"] is None  # picked up, unnamed
    # Zammad's "hangup by agent" of an outgoing call carries no from/to: still accepted.
    bare = [["event", "hangup"], ["direction", "out"], ["call_id", "x-1"], ["cause", "cancel"]]
    status, body = await send(client, "cti", {"form": bare}, token=CTI_TOKEN)
    assert (status, body) == (200, {})
    assert len(await leads(client)) == 1  # a fact about a call never makes a lead


async def test_blocked_foreign_number_written_without_plus_is_rejected(
    make_client: MakeClient,
) -> None:
    # Zammad's spec blocks caller id 491715000000 (written, like the PBX sends it, without +).
    client = await make_client(telephony={"blocked_numbers": ["491715000000"]})
    answers = await play_cti(client, "zammad_spec_blocked_and_anonymous")
    assert answers[0] == (200, {"action": "reject", "reason": "busy"})
    assert answers[1] == (200, {})
    by_phone = {tuple(lead["contact"]["phones"]): lead for lead in await leads(client)}
    assert by_phone[("+491715000000",)]["status"] == "JUNK"
    assert by_phone[()]["status"] == "NEW"  # anonymous: a lead, hidden caller


async def test_mango_manual_calls_over_http(make_client: MakeClient) -> None:
    client = await make_client()
    for name in ("call_ivr_routed_answered", "call_callback_internal_leg"):
        for req in load("mango", name)["requests"]:
            assert await send(client, "mango", req) == (200, "")
    (lead,) = await leads(client)  # the callback's internal leg made nothing
    assert lead["contact"]["phones"] == ["+79000000000"]
    summary = load("mango", "summary_examples")["requests"][1]  # left in the IVR
    assert await send(client, "mango", summary) == (200, "")
    (lead,) = await leads(client)
    fact = result_of(lead)
    assert fact["missed"] is True and fact["disposition"] == "not_reached"


async def test_zadarma_notifications_over_http(make_client: MakeClient) -> None:
    """The whole inbound sequence (start, IVR, internal, answer, end, recording) and the
    outgoing one, as signed by the vendor's formula: one lead for the Polish caller who
    called without "+", answered by extension 100 (Борис), with its recording."""
    client = await make_client()
    # The notifications carry their own call_start; deliver them when they were sent.
    set_clock(client, lambda: datetime(2026, 5, 12, 10, 0, 30, tzinfo=UTC))
    inbound = [
        "notify_start",
        "notify_ivr",
        "notify_internal",
        "notify_answer",
        "notify_end",
        "notify_record",
    ]
    for name in [*inbound, "notify_out_start", "notify_out_end"]:
        doc = load("zadarma", name)
        status, _ = await send(client, "zadarma", doc)
        assert status == 200, name
    leads_now = await leads(client)
    by_phone = {tuple(lead["contact"]["phones"]): lead for lead in leads_now}
    lead = by_phone[("+48123123123",)]
    fact = result_of(lead)
    assert fact["answered"] is True and fact["answered_by"] == "boris"
    assert fact["duration"] == 42
    kinds = [e["meta"]["kind"] for e in lead["events"]]
    assert kinds.count("call") == 1 and "call_recording" in kinds
    # The outgoing call to a number with no open lead makes no lead (kept on none).
    assert ("+48792010388",) not in by_phone
