"""Calls, provider-neutral: what a webhook tells about a call, and the LeadEvents it makes.

One call is one contact attempt. Its *call event* (external id "<provider>:<call id>") is
the attempt itself: a new lead, activity on the person's open lead, or (outgoing, no open
lead) kept on no lead. It is made from the first webhook of the call that names the caller,
normally the start, and every later webhook of the call carries enough to make it again: a
repeat is a replay, so a lost start or a restart between start and end changes nothing.

What is learnt later is recorded as *call facts* on the call's own lead: the result (missed
or answered, by whom, how long) and recordings. A fact has its own external id
("<call external id>:end", ":record:<id>"), no contact of its own, and names the call event
in `replies_to`, so it joins exactly the lead the call went to and never makes a lead.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal

from gateway.identity import normalize_phone
from gateway.models import Attachment, Channel, Contact, LeadEvent

Direction = Literal["in", "out"]
NoticeKind = Literal["start", "progress", "answer", "end", "recording", "ignored"]

# Event kinds in meta["kind"]: the contact attempt, and the facts learnt about it later.
KIND_CALL = "call"
KIND_RESULT = "call_result"
KIND_RECORDING = "call_recording"

# Normalized dispositions (meta["disposition"]); the provider's own word is kept beside it.
ANSWERED = "answered"
BUSY = "busy"
CANCEL = "cancel"  # the caller hung up while it rang
NO_ANSWER = "no_answer"
NOT_REACHED = "not_reached"  # hung up in the IVR, the queue or the after-hours message
FAILED = "failed"
FORWARDED = "forwarded"

# Who "answered" when a mailbox did (Zammad's CTI word): a call that reached it is missed.
VOICEMAIL = "voicemail"
# Who answered when the provider says a person did but not which one (a CTI `answer` event
# without user or answeringNumber): answered, by no seller we can name.
UNNAMED = "(unnamed)"

MAX_CALL_ID = 200  # "zadarma:" + id + ":record:" + id must fit LeadEvent's 512
# Call times before this are a provider's placeholder or garbage, not a call.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
_HIDDEN = {"", "0", "anonymous", "unknown", "private", "restricted", "hidden", "unavailable"}

_DISPOSITION_RU = {
    ANSWERED: "разговор",
    BUSY: "занято",
    CANCEL: "звонивший положил трубку, не дождавшись ответа",
    NO_ANSWER: "никто не ответил",
    NOT_REACHED: "звонивший не дождался сотрудника (голосовое меню, очередь или автоответчик)",
    FAILED: "звонок не состоялся",
    FORWARDED: "переадресован",
}


class CallInvalid(ValueError):
    """An authentic webhook that cannot be read as a call event (missing or bad fields)."""


@dataclass(frozen=True, slots=True)
class Call:
    """What any webhook of a call knows about it: enough to make its contact-attempt event."""

    provider: str
    call_id: str
    direction: Direction
    number: str | None  # the customer's number, E.164; None when hidden or not a phone
    number_raw: str | None  # the customer's number as the provider spelled it
    line: str | None  # our number the customer dialled (in) or showed (out), E.164 if a phone
    extension: str | None  # the extension that dialled (out)
    started_at: datetime

    @property
    def external_id(self) -> str:
        return call_external_id(self.provider, self.call_id)


@dataclass(frozen=True, slots=True)
class CallEnd:
    """How a call ended, as the provider tells it (settle() turns it into missed/answered)."""

    disposition: str  # normalized; ANSWERED means connected, perhaps only to the IVR
    provider_disposition: str | None
    answered_by: str | None = None  # extension (or number) that talked to the customer
    answered_by_name: str | None = None
    duration: int | None = None  # seconds talked
    ended_at: datetime | None = None
    recorded: bool = False


@dataclass(frozen=True, slots=True)
class Recording:
    recording_id: str
    url: str | None = None


@dataclass(frozen=True, slots=True)
class Notice:
    """One provider webhook, parsed: which call it is about and what it says."""

    provider: str
    event: str  # the provider's own event name, for metrics and logs
    kind: NoticeKind
    call_id: str | None = None
    direction: Direction | None = None
    call: Call | None = None  # when the webhook names the caller (it can make the call event)
    answered_by: str | None = None  # kind "answer"
    end: CallEnd | None = None  # kind "end"
    recording: Recording | None = None  # kind "recording"
    reason: str | None = None  # kind "ignored": why


def call_external_id(provider: str, call_id: str) -> str:
    return f"{provider}:{call_id}"


def checked_call_id(value: Any, field: str) -> str:
    text = value.strip() if isinstance(value, str) else ""
    if not text:
        raise CallInvalid(f"{field} is missing")
    if len(text) > MAX_CALL_ID or not text.isprintable():
        raise CallInvalid(f"{field} is not a call id")
    return text


def checked_time(value: datetime, field: str) -> datetime:
    if value < EARLIEST:
        raise CallInvalid(f"{field} is before the year 2000")
    return value


def customer_number(raw: Any, region: str) -> str | None:
    """The customer's number in E.164, or None when hidden, internal or not a phone."""
    if not isinstance(raw, str) or raw.strip().lower() in _HIDDEN:
        return None
    text = raw.strip()
    if text.startswith("sip:") or "@" in text:
        return None
    return normalize_phone(text, region)


def settle(end: CallEnd, direction: Direction, answered_by: str | None = None) -> CallEnd:
    """The final word on a call's end, with what else we know of who answered it.

    An inbound call counts as answered only when a person took it: "connected" with no
    extension is the IVR, the queue or the after-hours message talking, and "connected" to
    the voice mailbox is a message left: both are missed calls.
    """
    if direction == "out":
        # Our own extension dialled: nobody of ours "answered" it, the customer did.
        return replace(end, answered_by=None, answered_by_name=None)
    who = end.answered_by or answered_by
    if end.disposition != ANSWERED:
        return replace(end, answered_by=None, answered_by_name=None)
    if who == VOICEMAIL:
        # The voice mailbox took the call: nobody talked to the customer, call them back.
        word = ", ".join(w for w in (end.provider_disposition, VOICEMAIL) if w)
        return replace(
            end,
            disposition=NOT_REACHED,
            answered_by=None,
            answered_by_name=None,
            provider_disposition=word[:64],
        )
    if who is None:
        return replace(end, disposition=NOT_REACHED, answered_by_name=None)
    if who == UNNAMED:
        return replace(end, answered_by=None)
    return replace(end, answered_by=who)


def _when(dt: datetime) -> str:
    return dt.isoformat()


def _duration_ru(seconds: int) -> str:
    minutes, sec = divmod(seconds, 60)
    return f"{minutes} мин {sec:02d} с" if minutes else f"{sec} с"


def call_event(
    call: Call,
    *,
    received_at: datetime,
    raw: dict[str, Any],
    junk_reason: str | None = None,
    keep_number: bool = True,
) -> LeadEvent:
    """The contact attempt. Inbound may make a lead; outgoing only joins an open one."""
    shown = call.number or call.number_raw or "скрытый номер"
    if call.direction == "in":
        summary = f"Входящий звонок с {shown}" + (f" на {call.line}" if call.line else "")
    else:
        summary = f"Исходящий звонок на {shown}" + (
            f" с доб. {call.extension}" if call.extension else ""
        )
    meta: dict[str, Any] = {
        "kind": KIND_CALL,
        "provider": call.provider,
        "call_id": call.call_id,
        "direction": call.direction,
        "line": call.line,
        "started_at": _when(call.started_at),
        "summary": summary,
    }
    if call.direction == "in":
        meta["missed"] = None  # unknown until the call ends: see the call_result event
        meta["caller_hidden"] = call.number is None
    else:
        meta["extension"] = call.extension
        if call.number and not keep_number:
            meta["number"] = call.number
    phones = (call.number,) if call.number and keep_number else ()
    return LeadEvent(
        channel=Channel.PHONE,
        external_id=call.external_id,
        occurred_at=min(call.started_at, received_at),
        received_at=received_at,
        contact=Contact(phones=phones),
        source_detail=call.line,
        meta=meta,
        creates_lead=call.direction == "in",
        junk_reason=junk_reason,
        raw=raw,
    )


def result_event(
    provider: str,
    call_id: str,
    direction: Direction,
    end: CallEnd,
    *,
    occurred_at: datetime,
    received_at: datetime,
    raw: dict[str, Any],
    seller_id: str | None = None,
) -> LeadEvent:
    """How the call ended, on the call's lead: missed (call back!) or answered, by whom."""
    answered = end.disposition == ANSWERED
    meta: dict[str, Any] = {
        "kind": KIND_RESULT,
        "provider": provider,
        "call_id": call_id,
        "direction": direction,
        "answered": answered,
        "disposition": end.disposition,
        "provider_disposition": end.provider_disposition,
        "duration": end.duration,
        "answered_by": seller_id if answered else None,
        "answered_by_extension": end.answered_by if answered else None,
        "answered_by_name": end.answered_by_name if answered else None,
        "ended_at": _when(end.ended_at) if end.ended_at else None,
        "recorded": end.recorded,
    }
    if direction == "in":
        meta["missed"] = not answered
    if answered:
        who = (
            seller_id
            or end.answered_by_name
            or (f"доб. {end.answered_by}" if end.answered_by else None)
        )
        talk = f", {_duration_ru(end.duration)}" if end.duration else ""
        head = "Разговор" if direction == "in" else "Исходящий: разговор"
        meta["summary"] = f"{head}{talk}" + (f", ответил(а) {who}" if who else "")
    else:
        head = "Пропущенный звонок" if direction == "in" else "Исходящий не состоялся"
        meta["summary"] = f"{head}: {_DISPOSITION_RU.get(end.disposition, end.disposition)}"
    external_id = call_external_id(provider, call_id)
    return LeadEvent(
        channel=Channel.PHONE,
        external_id=f"{external_id}:end",
        occurred_at=min(occurred_at, received_at),
        received_at=received_at,
        meta=meta,
        creates_lead=False,
        replies_to=(external_id,),
        raw=raw,
    )


def recording_event(
    provider: str,
    call_id: str,
    recording: Recording,
    *,
    occurred_at: datetime,
    received_at: datetime,
    raw: dict[str, Any],
) -> LeadEvent:
    """A call recording, attached to the call's lead as a link."""
    external_id = call_external_id(provider, call_id)
    return LeadEvent(
        channel=Channel.PHONE,
        external_id=f"{external_id}:record:{recording.recording_id}",
        occurred_at=min(occurred_at, received_at),
        received_at=received_at,
        attachments=(
            Attachment(
                name=f"call-{recording.recording_id}.mp3",
                content_type="audio/mpeg",
                url=recording.url,
            ),
        ),
        meta={
            "kind": KIND_RECORDING,
            "provider": provider,
            "call_id": call_id,
            "recording_id": recording.recording_id,
            "recording_url": recording.url,
            "summary": "Запись разговора",
        },
        creates_lead=False,
        replies_to=(external_id,),
        raw=raw,
    )
