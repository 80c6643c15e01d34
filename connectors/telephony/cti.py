"""Generic CTI (Zammad's vendor-neutral format) for any other PBX.

POST JSON or form to /v1/telephony/cti/{token}: events newCall, answer, hangup with from,
to, direction (in|out), callId, user (user[] in forms), queue, answeringNumber, cause.
The format carries no timestamps: a call is timed by when its first event reached us.
The answer to newCall may reject the call: {"action": "reject", "reason": "busy"}.
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
    call_id = checked_call_id(_text(data, "callId"), "callId")
    way = _text(data, "direction")
    if way not in ("in", "out"):
        raise CallInvalid("direction must be in or out")
    direction: Direction = "in" if way == "in" else "out"
    users = _users(data)
    raw_number = _text(data, "from" if direction == "in" else "to")
    line_raw = _text(data, "to" if direction == "in" else "from")
    number = customer_number(raw_number, region)
    if direction == "out" and number is None:
        return Notice(PROVIDER, event, "ignored", call_id=call_id, reason="not an outside call")
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
        who = answering or (users[0] if users else None)
        return Notice(PROVIDER, event, "answer", call_id, direction, call=call, answered_by=who)
    if kind == "end":
        cause = _text(data, "cause") or ""
        end = CallEnd(
            disposition=_CAUSES.get(cause, FAILED),
            provider_disposition=cause[:64] or None,
            answered_by=answering,
            ended_at=received_at,
        )
        return Notice(PROVIDER, event, "end", call_id, direction, call=call, end=end)
    return Notice(PROVIDER, event, "start", call_id, direction, call=call)


def steer(*, blocked: bool) -> dict[str, Any]:
    return {"action": "reject", "reason": "busy"} if blocked else {}
