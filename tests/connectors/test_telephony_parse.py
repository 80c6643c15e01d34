"""Telephony without HTTP: signatures, the pure parse functions, settling a call's end,
the events a call makes, steering answers and the config section."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from test_telephony_support import (
    CTI_TOKEN,
    FIXTURES,
    MANGO_KEY,
    MANGO_SALT,
    ZADARMA_SECRET,
    load,
    mango_request,
    zadarma_signature,
)

from connectors.telephony import cti, mango, zadarma
from connectors.telephony.calls import (
    ANSWERED,
    BUSY,
    CANCEL,
    FAILED,
    FORWARDED,
    KIND_CALL,
    KIND_RECORDING,
    KIND_RESULT,
    NO_ANSWER,
    NOT_REACHED,
    Call,
    CallEnd,
    CallInvalid,
    Notice,
    Recording,
    call_event,
    customer_number,
    recording_event,
    result_event,
    settle,
)
from gateway.config import ConfigError, load_settings

MSK = ZoneInfo("Europe/Moscow")
NOW = datetime(2025, 3, 12, 9, 0, tzinfo=UTC)
START = {
    "event": "NOTIFY_START",
    "call_start": "2025-03-11 11:02:15",
    "pbx_call_id": "in_abc",
    "caller_id": "79161234567",
    "called_did": "74951234567",
}


def zd(fields: dict[str, str], **kw: Any) -> Notice:
    return zadarma.parse(fields, tz=kw.pop("tz", MSK), **kw)


def fixture_names(provider: str) -> list[str]:
    return sorted(p.stem for p in FIXTURES.glob(f"{provider}_*.json"))


# --- signatures ----------------------------------------------------------------------


@pytest.mark.parametrize("name", fixture_names("zadarma"))
def test_recorded_zadarma_signatures_verify(name: str) -> None:
    for req in load(name)["requests"]:
        form, given = req["form"], req["headers"]["Signature"]
        assert zadarma_signature(form) == given  # the fixture follows the documented formula
        assert zadarma.signature(ZADARMA_SECRET, form) == given
        assert zadarma.verify(ZADARMA_SECRET, form, given)
        assert not zadarma.verify("another-secret", form, given)
        tampered = {**form, "pbx_call_id": form["pbx_call_id"] + "x"}
        signed = zadarma.SIGNED_FIELDS[form["event"]]
        assert zadarma.verify(ZADARMA_SECRET, tampered, given) is ("pbx_call_id" not in signed)


def test_zadarma_signature_is_base64_of_lowercase_hex() -> None:
    # Known vector, computed outside this code base with the docs' shell recipe (OpenSSL):
    #   printf '%s' '79161234567749512345672025-03-11 11:02:15' \
    #     | openssl dgst -sha1 -hmac secret | awk '{print $NF}' | tr -d '\n' | base64
    # and, for the raw-digest spelling of Zadarma's TypeScript SDK, with Node's crypto:
    #   crypto.createHmac('sha1', 'secret').update(s).digest('base64')
    sig = zadarma.signature("secret", START)
    assert sig == "NGE2YWUyMGQ3YTIyZGQ5ODZmM2I1MTg5ODg0MWI2MGIwZjhmNmE1NQ=="
    decoded = __import__("base64").b64decode(sig).decode()
    assert decoded == "4a6ae20d7a22dd986f3b51898841b60b0f8f6a55"  # lowercase hex
    assert zadarma.verify("secret", START, sig)
    assert zadarma.verify("secret", START, "SmriDXoi3ZhvO1GJiEG2Cw+PalU=")
    assert not zadarma.verify("secret", START, sig.lower())
    assert zadarma.signature("secret", {**START, "event": "NOTIFY_SOMETHING"}) is None
    assert not zadarma.verify("secret", START, None)
    assert not zadarma.verify("secret", START, "")


@pytest.mark.parametrize("name", fixture_names("mango"))
def test_recorded_mango_signatures_verify(name: str) -> None:
    for req in load(name)["requests"]:
        form = req["form"]
        assert mango.verify(MANGO_KEY, MANGO_SALT, form) is None
        assert mango.verify(MANGO_KEY, "other-salt", form) == "wrong"
        assert mango.verify("other-key", MANGO_SALT, form) == "wrong"
        assert mango.verify(MANGO_KEY, MANGO_SALT, {**form, "json": form["json"] + " "}) == "wrong"
        assert mango.verify(MANGO_KEY, MANGO_SALT, {"json": form["json"]}) == "missing"


def test_mango_sign_is_sha256_of_key_json_salt() -> None:
    req = mango_request("events/call", {"entry_id": "X"}, key="k", salt="s")
    assert req["form"]["sign"] == mango.sign("k", '{"entry_id":"X"}', "s")
    assert mango.sign("k", "j", "s") == (
        __import__("hashlib").sha256(b"kjs").hexdigest()
    )  # plain concatenation


# --- Zadarma parsing ------------------------------------------------------------------


def test_zadarma_start_names_the_call_in_the_configured_zone() -> None:
    n = zd(START)
    assert (n.kind, n.call_id, n.direction) == ("start", "in_abc", "in")
    assert n.call is not None
    assert n.call.number == "+79161234567" and n.call.line == "+74951234567"
    assert n.call.started_at == datetime(2025, 3, 11, 8, 2, 15, tzinfo=UTC)
    assert n.call.external_id == "zadarma:in_abc"
    assert zd(START, tz=ZoneInfo("UTC")).call.started_at == datetime(  # type: ignore[union-attr]
        2025, 3, 11, 11, 2, 15, tzinfo=UTC
    )


@pytest.mark.parametrize("caller", ["0", "anonymous", "", "sip:guest@example.org", "12"])
def test_zadarma_hidden_or_odd_caller_is_still_a_call(caller: str) -> None:
    n = zd({**START, "caller_id": caller})
    assert n.kind == "start" and n.call is not None and n.call.number is None
    event = call_event(n.call, received_at=NOW, raw={})
    assert event.contact.phones == () and event.creates_lead
    assert event.meta["caller_hidden"] is True


@pytest.mark.parametrize(
    ("word", "disposition"),
    [
        ("answered", ANSWERED),
        ("busy", BUSY),
        ("cancel", CANCEL),
        ("no answer", NO_ANSWER),
        ("failed", FAILED),
        ("no money", FAILED),
        ("line limit", FAILED),
    ],
)
def test_zadarma_dispositions(word: str, disposition: str) -> None:
    n = zd({**START, "event": "NOTIFY_END", "disposition": word, "duration": "0"})
    assert n.kind == "end" and n.end is not None
    assert n.end.disposition == disposition and n.end.provider_disposition == word


def test_zadarma_end_answered_only_when_a_person_took_it() -> None:
    end_fields = {**START, "event": "NOTIFY_END", "disposition": "answered", "duration": "95"}
    by_person = zd({**end_fields, "internal": "101", "is_recorded": "1"}).end
    assert by_person is not None and by_person.recorded
    assert settle(by_person, "in").disposition == ANSWERED
    assert settle(by_person, "in").answered_by == "101"
    by_ivr = zd(end_fields).end
    assert by_ivr is not None
    assert settle(by_ivr, "in").disposition == NOT_REACHED
    # ... unless the answer event said who took it.
    assert settle(by_ivr, "in", "102").answered_by == "102"
    assert settle(by_ivr, "in", "102").disposition == ANSWERED
    # Outgoing: the customer answered; nobody of ours "answered" it.
    assert settle(by_ivr, "out").disposition == ANSWERED
    assert settle(by_person, "out").answered_by is None


def test_zadarma_answer_tells_who() -> None:
    n = zd(
        {
            "event": "NOTIFY_ANSWER",
            "call_start": START["call_start"],
            "pbx_call_id": "in_abc",
            "caller_id": "79161234567",
            "destination": "101",
            "internal": "101",
        }
    )
    assert n.kind == "answer" and n.answered_by == "101" and n.call is not None


def test_zadarma_outgoing() -> None:
    fields = {
        "event": "NOTIFY_OUT_START",
        "call_start": "2025-03-11 16:20:00",
        "pbx_call_id": "out_1",
        "internal": "101",
        "destination": "89161234567",
    }
    n = zd(fields)
    assert n.kind == "start" and n.direction == "out" and n.call is not None
    assert n.call.number == "+79161234567" and n.call.extension == "101"
    event = call_event(n.call, received_at=NOW, raw=fields)
    assert not event.creates_lead and event.contact.phones == ("+79161234567",)
    hidden = call_event(n.call, received_at=NOW, raw=fields, keep_number=False)
    assert hidden.contact.phones == () and hidden.meta["number"] == "+79161234567"
    internal = zd({**fields, "destination": "102"})
    assert internal.kind == "ignored" and internal.reason == "not an outside call"


def test_zadarma_record_makes_a_link() -> None:
    fields = {"event": "NOTIFY_RECORD", "pbx_call_id": "in_abc", "call_id_with_rec": "17.5"}
    n = zd(fields, recording_url="https://rec.example/{call_id}/{recording_id}.mp3")
    assert n.kind == "recording" and n.recording == Recording(
        "17.5", "https://rec.example/in_abc/17.5.mp3"
    )
    assert zd(fields).recording == Recording("17.5", None)


def test_zadarma_unknown_event_is_ignored() -> None:
    n = zd({"event": "NOTIFY_SOMETHING_NEW", "pbx_call_id": "x"})
    assert n.kind == "ignored" and n.reason == "unknown event"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"call_start": ""}, "call_start is missing"),
        ({"call_start": "11.03.2025 11:02"}, "call_start is not"),
        ({"call_start": "0001-01-01 00:00:00"}, "before the year 2000"),
        ({"pbx_call_id": ""}, "pbx_call_id is missing"),
        ({"pbx_call_id": "x" * 300}, "pbx_call_id is not a call id"),
        ({"event": "NOTIFY_END", "disposition": "answered", "duration": "ten"}, "duration"),
        ({"event": "NOTIFY_END", "disposition": "answered", "duration": "-1"}, "duration"),
        ({"event": "NOTIFY_END"}, "disposition is missing"),
    ],
)
def test_zadarma_malformed(change: dict[str, str], message: str) -> None:
    with pytest.raises(CallInvalid, match=message):
        zd({**START, **change})


def test_zadarma_steering() -> None:
    base: dict[str, Any] = {
        "after_hours_ivr": "F1",
        "sticky_redirect": True,
        "redirect_timeout": 20,
        "blocked_action": "blacklist",
    }
    assert zadarma.steer(blocked=True, after_hours=True, seller_extension="101", **base) == {
        "redirect": "blacklist",
        "return_timeout": 0,
    }
    assert zadarma.steer(
        blocked=True,
        after_hours=False,
        seller_extension=None,
        **{**base, "blocked_action": "hangup"},
    ) == {"hangup": 1}
    assert zadarma.steer(blocked=False, after_hours=True, seller_extension="101", **base) == {
        "ivr_play": "F1"
    }
    assert (
        zadarma.steer(
            blocked=False,
            after_hours=True,
            seller_extension=None,
            **{**base, "after_hours_ivr": None},
        )
        == {}
    )
    assert zadarma.steer(blocked=False, after_hours=False, seller_extension="101", **base) == {
        "redirect": "101",
        "return_timeout": 20,
    }
    assert (
        zadarma.steer(
            blocked=False,
            after_hours=False,
            seller_extension="101",
            **{**base, "sticky_redirect": False},
        )
        == {}
    )
    assert zadarma.steer(blocked=False, after_hours=False, seller_extension=None, **base) == {}


# --- Mango parsing --------------------------------------------------------------------


def mango_json(req: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(req["form"]["json"])
    return data


def test_mango_call_states() -> None:
    reqs = load("mango_answered")["requests"]
    kinds = [mango.parse(r["path"].split("/", 1)[1], mango_json(r)).kind for r in reqs]
    assert kinds == ["start", "start", "answer", "progress", "end"]
    first = mango.parse("call", mango_json(reqs[0]))
    assert first.call is not None and first.call.number == "+79161234567"
    assert first.call.line == "+74951234567" and first.direction == "in"
    assert first.call.started_at == datetime(2025, 3, 11, 8, 2, 15, tzinfo=UTC)
    assert mango.parse("call", mango_json(reqs[2])).answered_by == "101"
    summary = mango.parse("summary", mango_json(reqs[-1]))
    assert summary.end is not None and summary.end.duration == 120
    assert settle(summary.end, "in").answered_by == "101"


def test_mango_summary_without_talk() -> None:
    base = {
        "entry_id": "E1",
        "call_direction": 1,
        "from": {"number": "79161234567"},
        "to": {"extension": "101"},
        "create_time": 1741680135,
        "talk_time": 0,
        "end_time": 1741680160,
        "entry_result": 0,
    }
    # The VPBX manual: `to` of a missed call is the first employee it rang, empty when the
    # caller never left the IVR; forward_time is set either way (its example 2).
    in_ivr = mango.parse("summary", {**base, "to": {}, "forward_time": 1741680140}).end
    rang = mango.parse("summary", {**base, "forward_time": 0}).end
    assert in_ivr is not None and rang is not None
    assert (in_ivr.disposition, rang.disposition) == (NOT_REACHED, NO_ANSWER)
    assert settle(rang, "in").answered_by is None


def test_mango_internal_and_outgoing() -> None:
    internal = {
        "entry_id": "E2",
        "timestamp": 1741680135,
        "call_state": "Appeared",
        "from": {"extension": "101"},
        "to": {"extension": "102"},
    }
    assert mango.parse("call", internal).reason == "internal call"
    out = load("mango_outgoing")["requests"]
    first = mango.parse("call", mango_json(out[0]))
    assert first.direction == "out" and first.call is not None
    assert first.call.number == "+79161234567" and first.call.extension == "101"
    end = mango.parse("summary", mango_json(out[-1])).end
    assert end is not None and end.disposition == ANSWERED and end.duration == 41


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"timestamp": 1741680135, "call_state": "Appeared"}, "entry_id is missing"),
        ({"entry_id": "E", "call_state": "Appeared"}, "timestamp is missing"),
        ({"entry_id": "E", "timestamp": "soon", "call_state": "Appeared"}, "unix time"),
        ({"entry_id": "E", "timestamp": 5, "call_state": "Appeared"}, "before the year 2000"),
        ({"entry_id": "E", "timestamp": 10**20, "call_state": "Appeared"}, "unix time"),
        ({"entry_id": "E", "timestamp": 1741680135, "call_state": "Exploded"}, "call_state"),
        ({"entry_id": "E", "timestamp": 1741680135, "from": "x"}, "from is not an object"),
    ],
)
def test_mango_malformed(data: dict[str, Any], message: str) -> None:
    with pytest.raises(CallInvalid, match=message):
        mango.parse("call", data)


def test_mango_other_event_kinds_are_ignored() -> None:
    assert mango.parse("record/added", {"entry_id": "E"}).kind == "ignored"


# --- generic CTI parsing --------------------------------------------------------------


def cti_data(req: dict[str, Any]) -> dict[str, Any]:
    if "json" in req:
        data: dict[str, Any] = req["json"]
        return data
    out: dict[str, Any] = {}
    for key, value in req["form"]:
        if key.endswith("[]"):
            out.setdefault(key, []).append(value)
        else:
            out.setdefault(key, value)
    return out


def test_cti_sequence() -> None:
    reqs = load("cti_answered")["requests"]
    notices = [cti.parse(cti_data(r), received_at=NOW) for r in reqs]
    assert [n.kind for n in notices] == ["start", "answer", "end"]
    assert notices[0].call is not None and notices[0].call.started_at == NOW
    assert notices[0].call.number == "+79161234567"
    assert notices[1].answered_by == "101"
    end = notices[2].end
    assert end is not None and settle(end, "in").disposition == ANSWERED


@pytest.mark.parametrize(
    ("cause", "disposition"),
    [
        ("normalClearing", ANSWERED),
        ("busy", BUSY),
        ("cancel", CANCEL),
        ("noAnswer", NO_ANSWER),
        ("congestion", FAILED),
        ("notFound", FAILED),
        ("forwarded", FORWARDED),
        ("somethingElse", FAILED),
    ],
)
def test_cti_causes(cause: str, disposition: str) -> None:
    data = {"event": "hangup", "from": "79161234567", "to": "74951234567"}
    n = cti.parse({**data, "direction": "in", "callId": "c1", "cause": cause}, received_at=NOW)
    assert n.end is not None and n.end.disposition == disposition
    assert settle(n.end, "in").disposition == (
        NOT_REACHED if disposition == ANSWERED else disposition
    )


def test_cti_outgoing_and_unknown() -> None:
    out = {"event": "newCall", "from": "74951234567", "direction": "out", "callId": "c2"}
    n = cti.parse({**out, "to": "79161234567", "user": ["Анна"]}, received_at=NOW)
    assert n.call is not None and n.call.number == "+79161234567" and n.call.extension == "Анна"
    assert cti.parse({**out, "to": "101"}, received_at=NOW).kind == "ignored"
    assert cti.parse({"event": "transfer", "callId": "c2"}, received_at=NOW).kind == "ignored"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"event": "newCall", "direction": "in"}, r"callId \(or call_id\) is missing"),
        ({"event": "newCall", "callId": "c", "direction": "sideways"}, "direction"),
        ({"event": "newCall", "callId": ["c"] * 0, "direction": "in"}, r"callId \(or call_id\)"),
    ],
)
def test_cti_malformed(data: dict[str, Any], message: str) -> None:
    with pytest.raises(CallInvalid, match=message):
        cti.parse(data, received_at=NOW)


def test_cti_steering() -> None:
    assert cti.steer(blocked=True) == {"action": "reject", "reason": "busy"}
    assert cti.steer(blocked=False) == {}


# --- the events a call makes ----------------------------------------------------------


def test_one_call_one_attempt_plus_facts() -> None:
    call = Call(
        "zadarma",
        "in_abc",
        "in",
        "+79161234567",
        "79161234567",
        "+74951234567",
        None,
        datetime(2025, 3, 11, 8, 2, 15, tzinfo=UTC),
    )
    attempt = call_event(call, received_at=NOW, raw={"a": 1})
    assert attempt.external_id == "zadarma:in_abc" and attempt.creates_lead
    assert attempt.occurred_at == call.started_at and attempt.meta["kind"] == KIND_CALL
    assert attempt.meta["missed"] is None and attempt.contact.phones == ("+79161234567",)
    assert attempt.channel.value == "phone" and attempt.raw == {"a": 1}

    missed = CallEnd(NOT_REACHED, "answered", duration=14)
    fact = result_event(
        "zadarma", "in_abc", "in", missed, occurred_at=call.started_at, received_at=NOW, raw={}
    )
    assert fact.external_id == "zadarma:in_abc:end" and fact.replies_to == ("zadarma:in_abc",)
    assert not fact.creates_lead and fact.contact.phones == () and fact.text is None
    assert fact.meta["kind"] == KIND_RESULT and fact.meta["missed"] is True
    assert fact.meta["answered_by"] is None and "Пропущенный" in fact.meta["summary"]

    talked = CallEnd(ANSWERED, "answered", answered_by="101", duration=95)
    fact = result_event(
        "zadarma",
        "in_abc",
        "in",
        talked,
        occurred_at=call.started_at,
        received_at=NOW,
        raw={},
        seller_id="anna",
    )
    assert fact.meta["missed"] is False and fact.meta["answered_by"] == "anna"
    assert fact.meta["answered_by_extension"] == "101" and fact.meta["duration"] == 95
    assert fact.meta["summary"] == "Разговор, 1 мин 35 с, ответил(а) anna"

    out = result_event(
        "zadarma", "out_1", "out", talked, occurred_at=call.started_at, received_at=NOW, raw={}
    )
    assert "missed" not in out.meta

    rec = recording_event(
        "zadarma",
        "in_abc",
        Recording("17.5", "https://r/17.5"),
        occurred_at=NOW,
        received_at=NOW,
        raw={},
    )
    assert rec.external_id == "zadarma:in_abc:record:17.5" and rec.meta["kind"] == KIND_RECORDING
    assert rec.attachments[0].url == "https://r/17.5" and rec.replies_to == ("zadarma:in_abc",)


def test_future_call_start_is_clamped_to_receipt() -> None:
    call = zd({**START, "call_start": "2030-01-01 00:00:00"}).call
    assert call is not None
    assert call_event(call, received_at=NOW, raw={}).occurred_at == NOW


def test_customer_number() -> None:
    assert customer_number("+7 (916) 123-45-67", "RU") == "+79161234567"
    assert customer_number("89161234567", "RU") == "+79161234567"
    assert customer_number(None, "RU") is None
    assert customer_number("Anonymous", "RU") is None


# --- the config section ---------------------------------------------------------------


def test_config_defaults_and_validation() -> None:
    s = load_settings(None)
    assert not s.telephony.any_provider
    assert s.telephony.zadarma.timezone == "Europe/Moscow"
    ok = load_settings(
        None,
        telephony={
            "zadarma": {"api_secret": "x", "timezone": "Asia/Yekaterinburg"},
            "cti": {"token": CTI_TOKEN},
        },
    )
    assert ok.telephony.any_provider and ok.telephony.zadarma.redirect_timeout == 20
    for bad, where in [
        ({"zadarma": {"timezone": "Mars/Olympus"}}, "telephony.zadarma.timezone"),
        ({"zadarma": {"secret": "x"}}, "telephony.zadarma.secret"),
        ({"mango": {"api_key": "k"}}, "telephony.mango"),
        ({"cti": {"token": "short"}}, "telephony.cti.token"),
        ({"zadarma": {"blocked_action": "explode"}}, "telephony.zadarma.blocked_action"),
    ]:
        with pytest.raises(ConfigError) as info:
            load_settings(None, telephony=bad)
        assert any(p.startswith(where) for p in info.value.problems), info.value.problems
