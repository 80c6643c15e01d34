"""Mango Office VPBX events: form POSTs of vpbx_api_key, sign and json to {base}/events/<kind>.

sign = sha256 hex of (api_key + json + api_salt); vpbx_api_key must be our key. A call is
one entry_id (all its legs: IVR, queue, each ringing extension). events/call tells the
states as they happen (Appeared, Connected, OnHold, Disconnected) and where the leg is
(`location`: ivr, queue, abonent); events/summary comes once per entry at its end.
Timestamps are unix seconds.

What the VPBX API manual (v1.10, "Уведомление о завершении вызова") says the summary means,
read against its own examples:
- call_direction: 0 internal (two VPBX employees), 1 inbound, 2 outbound. An internal call
  is no customer's, even when `to.number` is an employee's mobile.
- a person talked to the customer when talk_time is set (and entry_result is not 0);
- `to` of a missed call is the first employee it rang; it is empty when the caller never
  left the IVR (the manual's example 2: to {}, talk_time 0, forward_time set, entry_result
  1). So `to`, not forward_time, tells "rang a person, nobody picked up" (no_answer) from
  "left in the IVR or the queue" (not_reached); forward_time is set in both.
- disconnect_reason codes are classed (11xx normal end, 2xxx billing, 3xxx/4xxx number or
  reachability, 5xxx PBX trouble): 1110 the caller hung up (cancel), 1121/1123 busy or do
  not disturb (busy), 2xxx-5xxx the call did not go through (failed).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from connectors.telephony.calls import (
    ANSWERED,
    BUSY,
    CANCEL,
    FAILED,
    NO_ANSWER,
    NOT_REACHED,
    Call,
    CallEnd,
    CallInvalid,
    Direction,
    Notice,
    checked_call_id,
    checked_time,
    customer_number,
)
from gateway.textsafe import header_bytes

PROVIDER = "mango"
KNOWN_KINDS = ("call", "summary")


def sign(api_key: str, json_text: str, api_salt: str) -> str:
    return hashlib.sha256((api_key + json_text + api_salt).encode()).hexdigest()


def verify(api_key: str, api_salt: str, fields: Mapping[str, str]) -> str | None:
    """None when the request is ours, else what is wrong ("missing" or "wrong")."""
    given_key = fields.get("vpbx_api_key")
    given_sign = fields.get("sign")
    if not given_key or not given_sign or "json" not in fields:
        return "missing"
    key_ok = hmac.compare_digest(header_bytes(given_key), api_key.encode())
    expected = sign(api_key, fields["json"], api_salt)
    sign_ok = hmac.compare_digest(expected.encode(), header_bytes(given_sign.strip().lower()))
    return None if key_ok and sign_ok else "wrong"


def _party(data: Mapping[str, Any], name: str) -> dict[str, str]:
    value = data.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise CallInvalid(f"{name} is not an object")
    return {k: str(v).strip() for k, v in value.items() if isinstance(v, str | int) and str(v)}


def _time(value: Any, field: str, *, required: bool = True) -> datetime | None:
    if value in (None, "", 0, "0"):
        if required:
            raise CallInvalid(f"{field} is missing")
        return None
    if isinstance(value, bool):
        raise CallInvalid(f"{field} is not a unix time")
    try:
        seconds = int(value)
    except (TypeError, ValueError):
        raise CallInvalid(f"{field} is not a unix time") from None
    if not 0 < seconds < 32_503_680_000:  # before year 3000
        raise CallInvalid(f"{field} is not a unix time")
    return checked_time(datetime.fromtimestamp(seconds, UTC), field)


def _direction(data: Mapping[str, Any], src: dict[str, str], dst: dict[str, str]) -> str:
    """One of in, out, internal: call_direction when given (0 internal, 1 in, 2 out), else
    who is who: an extension on both sides is two employees, whatever numbers their
    devices have (events/call carries no call_direction)."""
    given = data.get("call_direction")
    if given in (0, "0"):
        return "internal"
    if given in (1, "1"):
        return "in"
    if given in (2, "2"):
        return "out"
    if src.get("extension"):
        return "internal" if dst.get("extension") else "out"
    return "in"


def _reason(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


def _missed(way: Direction, rang_person: bool, reason: int | None) -> str:
    """The normalized disposition of a call nobody talked on, from the manual's code classes."""
    if reason is not None and 2000 <= reason < 6000:
        return FAILED  # billing limits, a wrong or unreachable number, PBX trouble
    if way == "out":
        return BUSY if reason in (1121, 1123) else NO_ANSWER
    if not rang_person:
        return NOT_REACHED
    if reason in (1121, 1123):
        return BUSY
    if reason == 1110:
        return CANCEL  # the caller hung up while it rang
    return NO_ANSWER


def _call(
    entry_id: str,
    direction: Direction,
    src: dict[str, str],
    dst: dict[str, str],
    started: datetime,
    region: str,
    line_number: str | None,
) -> Call:
    customer = src if direction == "in" else dst
    raw = customer.get("number")
    line_raw = (
        line_number
        or dst.get("line_number")
        or (dst.get("number") if direction == "in" else src.get("number"))
    )
    line = (customer_number(line_raw, region) or line_raw[:64]) if line_raw else None
    return Call(
        provider=PROVIDER,
        call_id=entry_id,
        direction=direction,
        number=customer_number(raw, region),
        number_raw=raw[:64] if raw else None,
        line=line,
        extension=src.get("extension") if direction == "out" else None,
        started_at=started,
    )


def parse(kind: str, data: Mapping[str, Any], *, region: str = "RU") -> Notice:
    """A verified event (its `json` decoded) -> Notice; raises CallInvalid."""
    if kind not in KNOWN_KINDS:
        return Notice(PROVIDER, kind, "ignored", reason="unknown event")
    entry_id = checked_call_id(data.get("entry_id"), "entry_id")
    src, dst = _party(data, "from"), _party(data, "to")
    direction = _direction(data, src, dst)
    if direction == "internal":
        return Notice(PROVIDER, kind, "ignored", call_id=entry_id, reason="internal call")
    way: Direction = "in" if direction == "in" else "out"
    line_number = data.get("line_number") if isinstance(data.get("line_number"), str) else None

    if kind == "call":
        state = str(data.get("call_state") or "")
        started = _time(data.get("timestamp"), "timestamp")
        assert started is not None
        call = _call(entry_id, way, src, dst, started, region, line_number)
        if way == "out" and call.number is None:
            return Notice(PROVIDER, kind, "ignored", call_id=entry_id, reason="not an outside call")
        event = f"call:{state or 'unknown'}"
        if state == "Appeared":
            return Notice(PROVIDER, event, "start", entry_id, way, call=call)
        location = str(data.get("location") or "abonent")
        if state == "Connected" and way == "in" and dst.get("extension") and location == "abonent":
            return Notice(
                PROVIDER, event, "answer", entry_id, way, call=call, answered_by=dst["extension"]
            )
        if state not in ("Connected", "Disconnected", "OnHold"):
            raise CallInvalid("call_state is not Appeared, Connected, OnHold or Disconnected")
        return Notice(PROVIDER, event, "progress", entry_id, way, call=call)

    created = _time(data.get("create_time"), "create_time")
    assert created is not None
    forwarded = _time(data.get("forward_time"), "forward_time", required=False)
    talked = _time(data.get("talk_time"), "talk_time", required=False)
    ended = _time(data.get("end_time"), "end_time", required=False)
    call = _call(entry_id, way, src, dst, created, region, line_number)
    if way == "out" and call.number is None:
        return Notice(PROVIDER, kind, "ignored", call_id=entry_id, reason="not an outside call")
    reason = data.get("disconnect_reason")
    result = data.get("entry_result")
    del forwarded  # set for calls that ended in the IVR too (the manual's example 2)
    if talked is not None and result not in (0, "0"):
        disposition = ANSWERED
        who = (dst.get("extension") or dst.get("number")) if way == "in" else src.get("extension")
    else:
        # Nobody talked. `to` names the first employee it rang; empty, the caller never got
        # past the IVR or the queue.
        line = line_number or dst.get("line_number")
        rang = bool(dst.get("extension") or (dst.get("number") and dst.get("number") != line))
        disposition = _missed(way, rang, _reason(reason))
        who = None
        talked = None
    duration = int((ended - talked).total_seconds()) if talked and ended else None
    end = CallEnd(
        disposition=disposition,
        provider_disposition=f"entry_result={result}, disconnect_reason={reason}"[:64],
        answered_by=who,
        duration=max(duration, 0) if duration is not None else None,
        ended_at=ended,
    )
    return Notice(PROVIDER, "summary", "end", entry_id, way, call=call, end=end)
