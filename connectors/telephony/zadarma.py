"""Zadarma PBX notifications: form-encoded POSTs with an event name and a Signature header.

Signature = base64 of the lowercase hex HMAC-SHA1 (api secret) of some of the event's
fields concatenated; which fields depends on the event (SIGNED_FIELDS). That is the formula
of Zadarma's docs and PHP SDK (`base64_encode(hash_hmac('sha1', ...))`, hex by default);
Zadarma's own TypeScript SDK checks the base64 of the raw digest instead, so both spellings
of the same HMAC are accepted (neither can be made without the secret). call_start is the
provider's local wall time "YYYY-MM-DD HH:MM:SS" (zone configurable). The answer to
NOTIFY_START may steer the call (steer()).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from connectors.telephony.calls import (
    ANSWERED,
    BUSY,
    CANCEL,
    FAILED,
    NO_ANSWER,
    Call,
    CallEnd,
    CallInvalid,
    Direction,
    Notice,
    NoticeKind,
    Recording,
    checked_call_id,
    checked_time,
    customer_number,
)
from gateway.textsafe import header_bytes

PROVIDER = "zadarma"

_INBOUND = ("caller_id", "called_did", "call_start")
SIGNED_FIELDS: dict[str, tuple[str, ...]] = {
    "NOTIFY_START": _INBOUND,
    "NOTIFY_INTERNAL": _INBOUND,
    "NOTIFY_END": _INBOUND,
    "NOTIFY_IVR": _INBOUND,
    "NOTIFY_ANSWER": ("caller_id", "destination", "call_start"),
    "NOTIFY_OUT_START": ("internal", "destination", "call_start"),
    "NOTIFY_OUT_END": ("internal", "destination", "call_start"),
    "NOTIFY_RECORD": ("pbx_call_id", "call_id_with_rec"),
}

_DISPOSITIONS = {
    "answered": ANSWERED,
    "busy": BUSY,
    "cancel": CANCEL,
    "no answer": NO_ANSWER,
}

_KINDS: dict[str, NoticeKind] = {
    "NOTIFY_START": "start",
    "NOTIFY_INTERNAL": "progress",
    "NOTIFY_IVR": "progress",
    "NOTIFY_ANSWER": "answer",
    "NOTIFY_END": "end",
    "NOTIFY_OUT_START": "start",
    "NOTIFY_OUT_END": "end",
    "NOTIFY_RECORD": "recording",
}


def signed_string(fields: Mapping[str, str]) -> str | None:
    """The text Zadarma signs for this event, or None for an event we do not know."""
    names = SIGNED_FIELDS.get(fields.get("event", ""))
    if names is None:
        return None
    return "".join(fields.get(name, "") for name in names)


def _digest(secret: str, fields: Mapping[str, str]) -> bytes | None:
    text = signed_string(fields)
    if text is None:
        return None
    return hmac.new(secret.encode(), text.encode(), hashlib.sha1).digest()


def signature(secret: str, fields: Mapping[str, str]) -> str | None:
    """The documented Signature: base64 of the lowercase hex HMAC-SHA1."""
    digest = _digest(secret, fields)
    if digest is None:
        return None
    return base64.b64encode(digest.hex().encode()).decode()


def verify(secret: str, fields: Mapping[str, str], given: str | None) -> bool:
    digest = _digest(secret, fields)
    if digest is None or not given:
        return False
    # A header that is not UTF-8 arrives with lone surrogates: compare its bytes, never raise.
    sent = header_bytes(given.strip())
    documented = base64.b64encode(digest.hex().encode())
    raw = base64.b64encode(digest)  # as Zadarma's TypeScript SDK computes it
    # Both compared, always, so the time taken does not tell which spelling came close.
    ok_documented = hmac.compare_digest(documented, sent)
    ok_raw = hmac.compare_digest(raw, sent)
    return ok_documented or ok_raw


def parse_time(value: str | None, tz: ZoneInfo) -> datetime:
    """call_start: "YYYY-MM-DD HH:MM:SS" in the provider's zone -> an aware datetime."""
    if not value:
        raise CallInvalid("call_start is missing")
    try:
        local = datetime.strptime(value.strip(), "%Y-%m-%d %H:%M:%S")
    except ValueError:
        raise CallInvalid("call_start is not YYYY-MM-DD HH:MM:SS") from None
    return checked_time(local.replace(tzinfo=tz), "call_start")


MAX_SECONDS = 10**9


def _int(value: str | None, field: str) -> int | None:
    if value is None or value.strip() == "":
        return None
    try:
        number = int(value.strip())
    except ValueError:
        raise CallInvalid(f"{field} is not a number") from None
    if number < 0:
        raise CallInvalid(f"{field} is negative")
    if number > MAX_SECONDS:  # a call longer than ~30 years is not a call; JSON can't hold it
        raise CallInvalid(f"{field} is too large")
    return number


def _line(value: str | None, region: str) -> str | None:
    if not value or not value.strip():
        return None
    return customer_number(value, region) or value.strip()[:64]


def recording_link(template: str | None, recording_id: str, call_id: str) -> str | None:
    if not template:
        return None
    return template.replace("{recording_id}", recording_id).replace("{call_id}", call_id)


def parse(
    fields: Mapping[str, str],
    *,
    tz: ZoneInfo,
    region: str = "RU",
    recording_url: str | None = None,
) -> Notice:
    """A verified notification -> Notice; raises CallInvalid naming what is wrong."""
    event = fields.get("event", "")
    kind = _KINDS.get(event)
    if kind is None:
        return Notice(PROVIDER, event, "ignored", reason="unknown event")
    call_id = checked_call_id(fields.get("pbx_call_id"), "pbx_call_id")
    if kind == "recording":
        rec_id = checked_call_id(fields.get("call_id_with_rec"), "call_id_with_rec")
        link = recording_link(recording_url, rec_id, call_id)
        return Notice(
            PROVIDER, event, "recording", call_id=call_id, recording=Recording(rec_id, link)
        )

    started = parse_time(fields.get("call_start"), tz)
    direction: Direction = "out" if event.startswith("NOTIFY_OUT_") else "in"
    if direction == "in":
        raw_number = fields.get("caller_id")
        number = customer_number(raw_number, region)
        line = _line(fields.get("called_did"), region)
        extension = None
    else:
        raw_number = fields.get("destination")
        number = customer_number(raw_number, region)
        if number is None:
            # An internal call or a service number: not a person we could have a lead for.
            return Notice(PROVIDER, event, "ignored", call_id=call_id, reason="not an outside call")
        line = _line(fields.get("caller_id"), region)
        extension = (fields.get("internal") or "").strip() or None
    call = Call(
        provider=PROVIDER,
        call_id=call_id,
        direction=direction,
        number=number,
        number_raw=(raw_number or "").strip()[:64] or None,
        line=line,
        extension=extension,
        started_at=started,
    )
    if kind == "answer":
        who = (fields.get("internal") or fields.get("destination") or "").strip() or None
        return Notice(PROVIDER, event, "answer", call_id, direction, call=call, answered_by=who)
    if kind == "end":
        word = (fields.get("disposition") or "").strip().lower()
        if not word:
            raise CallInvalid("disposition is missing")
        end = CallEnd(
            disposition=_DISPOSITIONS.get(word, FAILED),
            provider_disposition=word[:64],
            answered_by=(fields.get("internal") or "").strip() or None,
            duration=_int(fields.get("duration"), "duration"),
            recorded=(fields.get("is_recorded") or "").strip() == "1",
        )
        return Notice(PROVIDER, event, "end", call_id, direction, call=call, end=end)
    return Notice(PROVIDER, event, kind, call_id, direction, call=call)


def steer(
    *,
    blocked: bool,
    after_hours: bool,
    seller_extension: str | None,
    after_hours_ivr: str | None,
    sticky_redirect: bool,
    redirect_timeout: int,
    blocked_action: str,
) -> dict[str, Any]:
    """The JSON answer to NOTIFY_START: {} lets the PBX run its own scenario."""
    if blocked:
        if blocked_action == "hangup":
            return {"hangup": 1}
        return {"redirect": "blacklist", "return_timeout": 0}
    if after_hours:
        return {"ivr_play": after_hours_ivr} if after_hours_ivr else {}
    if sticky_redirect and seller_extension:
        return {"redirect": seller_extension, "return_timeout": redirect_timeout}
    return {}
