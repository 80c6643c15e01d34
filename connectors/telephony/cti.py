"""Generic CTI (Zammad's vendor-neutral format) for any other PBX.

POST JSON or form to /v1/telephony/cti/{token}: events newCall, answer, hangup with from,
to, direction (in|out), callId, user (user[] in forms), queue, answeringNumber, cause.
Zammad's own request specs spell the call id `call_id` (its docs: `callId`): both are read.
An answer by `voicemail` (Zammad's word, in `user` or `answeringNumber`) is no person: the
call stays missed. A hangup may name only the call (no from/to): it settles the call
without making one. The format carries no timestamps: a call is timed by when its first
event reached us. The answer to newCall may reject the call: {"action": "reject",
"reason": "busy"}.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from connectors.telephony.calls import (
    ANSWERED,
    BUSY,
    CANCEL,
    FAILED,
    FORWARDED,
    NO_ANSWER,
    UNNAMED,
    VOICEMAIL,
    Call,
    CallEnd,
    CallInvalid,
    Direction,
    Notice,
    checked_call_id,
    customer_number,
)

PROVIDER = "cti"

_KINDS = {"newCall": "start", "answer": "answer", "hangup": "end"}
_CAUSES = {
    "normalClearing": ANSWERED,  # settle() tells a person from an IVR by who answered
    "busy": BUSY,
    "cancel": CANCEL,
    "noAnswer": NO_ANSWER,
    "congestion": FAILED,
    "notFound": FAILED,
    "forwarded": FORWARDED,
}


def _text(data: Mapping[str, Any], name: str) -> str | None:
    value = data.get(name)
    if isinstance(value, list):  # user[] may come as a list in JSON too
        value = value[0] if value else None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        return None
    return value.strip()[:200]


def _users(data: Mapping[str, Any]) -> list[str]:
    value = data.get("user", data.get("user[]"))
    items = value if isinstance(value, list) else [value]
    return [v.strip()[:200] for v in items if isinstance(v, str) and v.strip()][:20]


def parse(data: Mapping[str, Any], *, received_at: datetime, region: str = "RU") -> Notice:
    """A verified event -> Notice; raises CallInvalid."""
    event = _text(data, "event") or ""
    kind = _KINDS.get(event)
    if kind is None:
        return Notice(PROVIDER, event, "ignored", reason="unknown event")
    call_id = checked_call_id(
        _text(data, "callId") or _text(data, "call_id"), "callId (or call_id)"
    )
    way = _text(data, "direction")
    if way not in ("in", "out"):
        raise CallInvalid("direction must be in or out")
    direction: Direction = "in" if way == "in" else "out"
    users = _users(data)
    customer_field = "from" if direction == "in" else "to"
    raw_number = _text(data, customer_field)
    line_raw = _text(data, "to" if direction == "in" else "from")
    number = customer_number(raw_number, region)
    call: Call | None = None
    if kind != "start" and customer_field not in data:
        # Zammad's own specs hang up with only event, direction, call id and cause: such an
        # event settles a call made earlier; it cannot name (or hide) the customer itself.
        pass
    elif direction == "out" and number is None:
        return Notice(PROVIDER, event, "ignored", call_id=call_id, reason="not an outside call")
    else:
        call = Call(
            provider=PROVIDER,
            call_id=call_id,
            direction=direction,
            number=number,
            number_raw=raw_number[:64] if raw_number else None,
            line=(customer_number(line_raw, region) or line_raw[:64]) if line_raw else None,
            extension=(users[0] if users else None) if direction == "out" else None,
            started_at=received_at,
        )
    answering = _text(data, "answeringNumber")
    if kind == "answer":
        # The event itself says someone picked up (Zammad counts such a call done), even
        # when it does not say who; "voicemail" is the one answer that is no person.
        who = answering or (users[0] if users else None) or UNNAMED
        if _is_voicemail(who) or any(_is_voicemail(u) for u in users):
            who = VOICEMAIL  # kept for the end: the call was not taken by a person
        return Notice(PROVIDER, event, "answer", call_id, direction, call=call, answered_by=who)
    if kind == "end":
        cause = _text(data, "cause") or ""
        end = CallEnd(
            disposition=_CAUSES.get(cause, FAILED),
            provider_disposition=cause[:64] or None,
            answered_by=VOICEMAIL if _is_voicemail(answering) else answering,
            ended_at=received_at,
        )
        return Notice(PROVIDER, event, "end", call_id, direction, call=call, end=end)
    return Notice(PROVIDER, event, "start", call_id, direction, call=call)


def _is_voicemail(who: str | None) -> bool:
    return who is not None and who.strip().lower() == VOICEMAIL


def steer(*, blocked: bool) -> dict[str, Any]:
    return {"action": "reject", "reason": "busy"} if blocked else {}
