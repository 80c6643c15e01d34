"""A leadgate lead as Bitrix24 fields: crm.lead.add fields, comment texts, ФИО split.

Pure functions over the lead, so the mapping is tested without HTTP.
"""

from __future__ import annotations

import string
from collections import defaultdict
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import phonenumbers

from gateway.delivery.settings import Bitrix24Settings
from gateway.models import Channel, EventRecord, Lead, LeadStatus

CHANNEL_NAMES = {
    Channel.WEBFORM: "Форма на сайте",
    Channel.ORDERS: "Интернет-магазин",
    Channel.CHAT: "Чат на сайте",
    Channel.CALLBACK: "Обратный звонок",
    Channel.PHONE: "Телефон",
    Channel.EMAIL: "Почта",
    Channel.VK: "ВКонтакте",
    Channel.FACEBOOK: "Facebook",
    Channel.TELEGRAM: "Telegram",
}
UTM_KEYS = ("utm_source", "utm_medium", "utm_campaign", "utm_content", "utm_term")
_FMT = "%d.%m.%Y %H:%M"

# --- ФИО ---------------------------------------------------------------------------------

# Russian patronymics are the one reliable signal: -ович/-евич/-ич, -овна/-евна/-ична.
_PATRONYMIC = ("ович", "евич", "ьич", "овна", "евна", "ична", "инична")
_TURKIC_PATRONYMIC = ("оглы", "кызы", "улы", "уулу")
# Surname endings; "strong" ones are rarely first names, "weak" ones often are (Ирина, Марина).
_STRONG_SURNAME = ("ов", "ев", "ёв", "ова", "ева", "ёва", "ский", "цкий", "ская", "цкая", "швили")
_WEAK_SURNAME = ("ин", "ын", "ина", "ына", "их", "ых", "ко", "ук", "юк", "ян", "дзе")


def _is_patronymic(word: str) -> bool:
    return word.lower().endswith(_PATRONYMIC)


def _surname_score(word: str) -> int:
    w = word.lower()
    if len(w) > 3 and w.endswith(_STRONG_SURNAME):
        return 2
    if len(w) > 3 and w.endswith(_WEAK_SURNAME):
        return 1
    return 0


def split_name(full: str | None, order: str = "auto") -> dict[str, str]:
    """ФИО -> NAME / LAST_NAME / SECOND_NAME. See docs/delivery/bitrix24.md for the rules.

    auto: three words with a patronymic last are «Фамилия Имя Отчество», with a patronymic
    in the middle «Имя Отчество Фамилия»; two words with a patronymic are «Имя Отчество»;
    two plain words go by which looks more like a surname (-ов/-ева/-ский beat -ин/-ина),
    else «Имя Фамилия»; one word is the first name; anything else stays whole in NAME.
    """
    words = (full or "").split()
    if not words:
        return {}
    if len(words) >= 2 and words[-1].lower() in _TURKIC_PATRONYMIC:
        # «Мамедов Али Гусейн оглы»: the patronymic is two words.
        words = [*words[:-2], f"{words[-2]} {words[-1]}"]
        if len(words) == 3:
            return {"LAST_NAME": words[0], "NAME": words[1], "SECOND_NAME": words[2]}
    if order == "whole" or len(words) == 1:
        return {"NAME": " ".join(words)}
    if order == "first_last":
        out = {"NAME": words[0], "LAST_NAME": words[-1]}
        if len(words) > 2:
            out["SECOND_NAME"] = " ".join(words[1:-1])
        return out
    if order == "last_first":
        out = {"LAST_NAME": words[0], "NAME": words[1]}
        if len(words) > 2:
            out["SECOND_NAME"] = " ".join(words[2:])
        return out
    if len(words) == 3:
        if _is_patronymic(words[2]):
            return {"LAST_NAME": words[0], "NAME": words[1], "SECOND_NAME": words[2]}
        if _is_patronymic(words[1]):
            return {"NAME": words[0], "SECOND_NAME": words[1], "LAST_NAME": words[2]}
        return {"NAME": " ".join(words)}
    if len(words) == 2:
        first, second = words
        if _is_patronymic(second):
            return {"NAME": first, "SECOND_NAME": second}
        if _surname_score(first) > _surname_score(second):
            return {"LAST_NAME": first, "NAME": second}
        return {"NAME": first, "LAST_NAME": second}
    return {"NAME": " ".join(words)}


# --- titles and texts ----------------------------------------------------------------------


def pretty_phone(e164: str) -> str:
    """+79161234567 -> +7 916 123-45-67 (what a seller reads), or as given."""
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return e164
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)


def title_values(lead: Lead, event: EventRecord | None) -> dict[str, str]:
    c = lead.contact
    phone = pretty_phone(c.phones[0]) if c.phones else ""
    email = c.emails[0] if c.emails else ""
    who = c.name or phone or email or (c.handles[0] if c.handles else "")
    return {
        "channel": CHANNEL_NAMES.get(lead.channel, lead.channel.value),
        "name": c.name or "",
        "who": who,
        "phone": phone,
        "email": email,
        "company": c.company or "",
        "external_id": event.external_id if event else "",
        "source_detail": (event.source_detail if event else None) or "",
    }


def render_title(template: str, values: Mapping[str, str]) -> str:
    used = [name for _, name, _, _ in string.Formatter().parse(template) if name]
    if any(not values.get(name) for name in used):
        # "Звонок с " helps nobody: say which channel and whoever we know.
        who = values.get("who", "")
        title = values["channel"] + (f": {who}" if who else "")
    else:
        title = template.format_map(defaultdict(str, values))
    return " ".join(title.split())[:255] or values["channel"]


def _local(at: datetime, tz: ZoneInfo) -> str:
    return at.astimezone(tz).strftime(_FMT)


def lead_comments(lead: Lead, event: EventRecord | None, tz: ZoneInfo) -> str:
    lines: list[str] = []
    if event is not None and event.text:
        lines += [event.text.strip(), ""]
    channel = CHANNEL_NAMES.get(lead.channel, lead.channel.value)
    detail = f" ({event.source_detail})" if event is not None and event.source_detail else ""
    lines.append(f"Канал: {channel}{detail}; получено {_local(lead.created_at, tz)}")
    if lead.after_hours:
        reason = f" ({lead.after_hours_reason})" if lead.after_hours_reason else ""
        opens = f"; в работу с {_local(lead.next_open_at, tz)}" if lead.next_open_at else ""
        lines.append(f"Вне рабочего времени{reason}{opens}")
    lines.append(f"Взять в работу до {_local(lead.sla_due_at, tz)}")
    if lead.junk_reason:
        lines.append(f"Спам: {lead.junk_reason}")
    if lead.contact.handles:
        lines.append("Мессенджеры: " + ", ".join(lead.contact.handles))
    if event is not None and event.attachments:
        names = [a.url or a.name or "файл" for a in event.attachments]
        lines.append("Вложения: " + ", ".join(names))
    lines.append(f"leadgate: {lead.id}")
    return "\n".join(lines)


def marker(event_id: str) -> str:
    """The tag that finds our comment again after a lost answer."""
    return f"leadgate:{event_id}"


def event_comment(lead: Lead, event: EventRecord | None, event_id: str, tz: ZoneInfo) -> str:
    """A later contact by the same person, as a timeline comment on their CRM lead."""
    if event is None:
        return f"Повторное обращение\n{marker(event_id)}"
    channel = CHANNEL_NAMES.get(event.channel, event.channel.value)
    lines = [f"Повторное обращение: {channel}, {_local(event.occurred_at, tz)}"]
    c = event.contact
    reach = [c.name or "", *(pretty_phone(p) for p in c.phones), *c.emails, c.company or ""]
    if any(reach):
        lines.append("Контакт: " + ", ".join(x for x in reach if x))
    if event.source_detail:
        lines.append(f"Откуда: {event.source_detail}")
    if event.text:
        lines += ["", event.text.strip()]
    if event.attachments:
        lines.append("Вложения: " + ", ".join(a.url or a.name or "файл" for a in event.attachments))
    lines += ["", marker(event_id)]
    return "\n".join(lines)


# --- crm.lead.add ----------------------------------------------------------------------------


def lead_fields(
    lead: Lead,
    event: EventRecord | None,
    settings: Bitrix24Settings,
    *,
    assigned_by: int | None,
    tz: ZoneInfo,
) -> dict[str, Any]:
    c = lead.contact
    template = settings.titles.get(lead.channel, "{channel}: {who}")
    fields: dict[str, Any] = {
        "TITLE": render_title(template, title_values(lead, event)),
        **split_name(c.name, settings.name_order),
        "STATUS_ID": (
            settings.junk_status_id if lead.status is LeadStatus.JUNK else settings.new_status_id
        ),
        "SOURCE_ID": lead.source_id,
        "SOURCE_DESCRIPTION": _source_description(lead, event),
        "COMMENTS": lead_comments(lead, event, tz),
        "ORIGINATOR_ID": settings.originator_id,
        "ORIGIN_ID": lead.id,
    }
    if c.company:
        fields["COMPANY_TITLE"] = c.company
    if c.phones:
        fields["PHONE"] = [{"VALUE": p, "VALUE_TYPE": settings.phone_type} for p in c.phones]
    if c.emails:
        fields["EMAIL"] = [{"VALUE": e, "VALUE_TYPE": settings.email_type} for e in c.emails]
    if assigned_by is not None:
        fields["ASSIGNED_BY_ID"] = assigned_by
    if event is not None:
        for key in UTM_KEYS:
            if value := event.utm.get(key):
                fields[key.upper()] = value
    interest = lead.interest
    if settings.category_field and interest.equipment_category is not None:
        category = interest.equipment_category
        # A list field wants its enum item id; without a mapping the label is sent as is.
        fields[settings.category_field] = settings.category_values.get(category, category.value)
    if settings.equipment_field and interest.probable_equipment:
        fields[settings.equipment_field] = interest.probable_equipment
    return fields


def _source_description(lead: Lead, event: EventRecord | None) -> str:
    channel = CHANNEL_NAMES.get(lead.channel, lead.channel.value)
    detail = event.source_detail if event is not None else None
    return f"leadgate: {channel}" + (f" ({detail})" if detail else "")
