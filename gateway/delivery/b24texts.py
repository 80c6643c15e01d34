"""What a seller reads in Bitrix24: a new lead's COMMENTS and the timeline comments.

Pure functions over leads and events, in Russian, times in the calendar's time zone.
Call facts (how a call ended, its recording) read as a seller expects them, from the
meta keys the telephony connector sets (connectors/telephony/calls.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import phonenumbers

from gateway import channels
from gateway.models import Channel, EventRecord, Interest, Lead

_FMT = "%d.%m.%Y %H:%M"

# Event kinds in meta["kind"] (connectors/telephony/calls.py): the call, and facts about it.
KIND_CALL = "call"
KIND_CALL_RESULT = "call_result"
KIND_CALL_RECORDING = "call_recording"
_FACTS = (KIND_CALL_RESULT, KIND_CALL_RECORDING)
# STATUS_SEMANTIC_ID of a closed lead, as a seller would say it.
CLOSED_AS = {"S": "сконвертирован (успешно закрыт)", "F": "закрыт как некачественный"}


def pretty_phone(e164: str) -> str:
    """+79161234567 -> +7 916 123-45-67 (what a seller reads), or as given."""
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return e164
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)


def local_time(at: datetime, tz: ZoneInfo) -> str:
    return at.astimezone(tz).strftime(_FMT)


def marker(event_id: str) -> str:
    """The tag that finds our comment again after a lost answer."""
    return f"leadgate:{event_id}"


def channel_name(channel: Channel) -> str:
    """The channel as a seller reads it; each channel's spec declares its label."""
    return channels.label(channel)


# --- what kind of event ----------------------------------------------------------------------


def _kind(event: EventRecord | None) -> str:
    return str(event.meta.get("kind") or "") if event is not None else ""


def is_fact(event: EventRecord | None) -> bool:
    """A fact learnt later about a call (its result, its recording): not a new contact."""
    return _kind(event) in _FACTS


def is_request(event: EventRecord | None) -> bool:
    """The customer reached out (not a call fact, not our own outgoing call)."""
    if is_fact(event):
        return False
    return not (
        event is not None and _kind(event) == KIND_CALL and event.meta.get("direction") == "out"
    )


# --- pieces ------------------------------------------------------------------------------------


def after_hours_ru(reason: str | None) -> str | None:
    """gateway.calendar's reasons ("outside hours: 10:00–19:00", "weekend: суббота",
    "holiday: …") as a Russian comment says them."""
    if not reason:
        return None
    head, sep, rest = reason.partition(": ")
    if not sep:
        return reason
    if head == "outside hours":
        # "нерабочий день по графику (суббота)" says it all by itself.
        return rest if rest.startswith("нерабоч") else f"вне рабочих часов ({rest})"
    if head == "weekend":
        return f"выходной ({rest})"
    if head == "holiday":
        return f"праздник: {rest}"
    return reason


def _one_line(text: str) -> str:
    return "; ".join(part.strip() for part in text.splitlines() if part.strip())


def interest_lines(interest: Interest, text: str | None) -> list[str]:
    """«Категория оборудования», «Вероятное оборудование» (unless the text above already
    shows it, as an order's cart does)."""
    lines: list[str] = []
    if interest.equipment_category is not None:
        lines.append(f"Категория оборудования: {interest.equipment_category.value}")
    equipment = (interest.probable_equipment or "").strip()
    if equipment and not (text and equipment in text):
        lines.append(f"Вероятное оборудование: {_one_line(equipment)}")
    return lines


def interest_line(interest: Interest, text: str | None) -> str | None:
    """«Интерес: Крупное; Пресс гидравлический» for a merge comment (the equipment only when
    the text does not already show it)."""
    parts = [interest.equipment_category.value] if interest.equipment_category else []
    equipment = (interest.probable_equipment or "").strip()
    if equipment and not (text and equipment in text):
        parts.append(_one_line(equipment))
    return "Интерес: " + "; ".join(parts) if parts else None


def extra_field_lines(meta: Mapping[str, Any]) -> list[str]:
    """A form's fields leadgate has no place for (meta["extra_fields"])."""
    extra = meta.get("extra_fields")
    if not isinstance(extra, Mapping) or not extra:
        return []
    return ["Другие поля формы:", *(f"{key}: {value}" for key, value in extra.items())]


def _duration_ru(seconds: Any) -> str:
    if not isinstance(seconds, int) or seconds <= 0:
        return ""
    minutes, sec = divmod(seconds, 60)
    return f"{minutes} мин {sec} с" if minutes else f"{sec} с"


def _callback_by(lead: Lead, event: EventRecord, tz: ZoneInfo) -> str:
    if lead.sla_due_at >= event.occurred_at:
        return f"Перезвонить до {local_time(lead.sla_due_at, tz)}"
    return "Перезвонить как можно скорее"


def call_fact_lines(
    lead: Lead, event: EventRecord, tz: ZoneInfo, names: Mapping[str, str]
) -> list[str]:
    """How a call ended, or its recording, as one or two lines a seller reads at a glance."""
    meta = event.meta
    if _kind(event) == KIND_CALL_RECORDING:
        url = meta.get("recording_url") or next((a.url for a in event.attachments if a.url), None)
        if url:
            return [f"Запись разговора: {url}"]
        rec = meta.get("recording_id")
        return ["Запись разговора сохранена у оператора" + (f" (запись {rec})" if rec else "")]
    inbound = meta.get("direction") != "out"
    if meta.get("answered"):
        seller = meta.get("answered_by")
        ext = meta.get("answered_by_extension")
        who = (
            (names.get(seller) if isinstance(seller, str) else None)
            or meta.get("answered_by_name")
            or seller
            or (f"доб. {ext}" if ext else None)
        )
        talk = _duration_ru(meta.get("duration"))
        head = "Разговор" if inbound else "Исходящий звонок: разговор"
        line = head + (f" {talk}" if talk else "")
        if inbound and who:
            line += f", ответил(а) {who}"
        return [line]
    summary = str(meta.get("summary") or "")
    if not inbound:
        return [summary or "Исходящий звонок не состоялся"]
    head = summary if summary.startswith("Пропущенный") else "Пропущенный звонок"
    return [f"{head}. {_callback_by(lead, event, tz)}"]


# --- a new lead's COMMENTS -------------------------------------------------------------------


def _lead_body(lead: Lead, event: EventRecord | None, *, with_interest: bool) -> list[str]:
    """The customer's own words, what they are interested in, extra form fields."""
    lines: list[str] = []
    text = event.text.strip() if event is not None and event.text else None
    if text:
        lines += [text, ""]
    elif event is not None and event.meta.get("summary"):
        lines += [str(event.meta["summary"]), ""]  # a call: «Входящий звонок с … на …»
    extra = [
        *(interest_lines(lead.interest, text) if with_interest else []),
        *(extra_field_lines(event.meta) if event is not None else []),
    ]
    if extra:
        lines += [*extra, ""]
    return lines


def _tail(lead: Lead, event: EventRecord | None) -> list[str]:
    lines: list[str] = []
    if lead.junk_reason:
        lines.append(f"Спам: {lead.junk_reason}")
    if lead.contact.handles:
        lines.append("Мессенджеры: " + ", ".join(lead.contact.handles))
    if event is not None and event.attachments:
        names = [a.url or a.name or "файл" for a in event.attachments]
        lines.append("Вложения: " + ", ".join(names))
    lines.append(f"leadgate: {lead.id}")
    return lines


def lead_comments(lead: Lead, event: EventRecord | None, tz: ZoneInfo) -> str:
    lines = _lead_body(lead, event, with_interest=True)
    channel = channel_name(lead.channel)
    detail = f" ({event.source_detail})" if event is not None and event.source_detail else ""
    lines.append(f"Канал: {channel}{detail}; получено {local_time(lead.created_at, tz)}")
    if lead.after_hours:
        reason = after_hours_ru(lead.after_hours_reason)
        opens = f"; в работу с {local_time(lead.next_open_at, tz)}" if lead.next_open_at else ""
        lines.append("Нерабочее время" + (f" — {reason}" if reason else "") + opens)
    lines.append(f"Взять в работу до {local_time(lead.sla_due_at, tz)}")
    return "\n".join(lines + _tail(lead, event))


def repeat_comments(
    lead: Lead,
    event: EventRecord | None,
    event_id: str,
    tz: ZoneInfo,
    *,
    previous_id: str,
    previous_semantic: str | None,
) -> str:
    """COMMENTS of a new CRM lead made for a returning customer whose CRM lead is closed."""
    closed = CLOSED_AS.get(previous_semantic or "", "закрыт")
    lines = [f"Повторное обращение: предыдущий лид №{previous_id} {closed}", ""]
    with_interest = event is not None and channels.carries_interest(event.channel)
    lines += _lead_body(lead, event, with_interest=with_interest)
    if event is not None:
        detail = f" ({event.source_detail})" if event.source_detail else ""
        got = local_time(event.occurred_at, tz)
        lines.append(f"Канал: {channel_name(event.channel)}{detail}; получено {got}")
        if lead.sla_due_at >= event.occurred_at:
            lines.append(f"Взять в работу до {local_time(lead.sla_due_at, tz)}")
    return "\n".join([*lines, *_tail(lead, event), marker(event_id)])


# --- timeline comments for merged events -----------------------------------------------------


def event_comment(
    lead: Lead,
    event: EventRecord | None,
    event_id: str,
    tz: ZoneInfo,
    names: Mapping[str, str] | None = None,
) -> str:
    """A later contact by the same person (or a fact about a call), as a timeline comment
    on their CRM lead; the last line is the marker that finds it again."""
    if event is None:
        return f"Повторное обращение\n{marker(event_id)}"
    if is_fact(event):
        return "\n".join([*call_fact_lines(lead, event, tz, names or {}), "", marker(event_id)])
    when = local_time(event.occurred_at, tz)
    summary = str(event.meta.get("summary") or "")
    if is_request(event):
        lines = [f"Повторное обращение: {channel_name(event.channel)}, {when}"]
        if summary and not event.text:
            lines.append(summary)
    else:  # our own outgoing call
        lines = [f"{summary or channel_name(event.channel)}, {when}"]
    c = event.contact
    reach = [c.name or "", *(pretty_phone(p) for p in c.phones), *c.emails, c.company or ""]
    if any(reach):
        lines.append("Контакт: " + ", ".join(x for x in reach if x))
    if event.source_detail:
        lines.append(f"Откуда: {event.source_detail}")
    interest = interest_line(lead.interest, event.text)
    if channels.carries_interest(event.channel) and interest:
        lines.append(interest)
    lines += extra_field_lines(event.meta)
    if event.text:
        lines += ["", event.text.strip()]
    if event.attachments:
        lines.append("Вложения: " + ", ".join(a.url or a.name or "файл" for a in event.attachments))
    lines += ["", marker(event_id)]
    return "\n".join(lines)
