"""A leadgate lead as Bitrix24 fields: crm.lead.add fields, merge fill-ins, ФИО split.

Pure functions over the lead, so the mapping is tested without HTTP. The texts a seller
reads (COMMENTS, timeline comments) are in gateway.delivery.b24texts.
"""

from __future__ import annotations

import re
import string
from collections import defaultdict
from collections.abc import Mapping
from typing import Any
from zoneinfo import ZoneInfo

from gateway import channels
from gateway.delivery.b24texts import (
    channel_name,
    event_comment,
    lead_comments,
    marker,
    pretty_phone,
    repeat_comments,
)
from gateway.delivery.settings import Bitrix24Settings
from gateway.identity import normalize_phone
from gateway.models import MAX_PER_KIND, Channel, EventRecord, Lead, LeadStatus

__all__ = [
    "event_comment",
    "fill_fields",
    "lead_comments",
    "lead_fields",
    "marker",
    "person_fields",
    "pretty_phone",
    "render_title",
    "repeat_lead_fields",
    "repeat_origin",
    "split_name",
    "title_values",
]

UTM_KEYS = ("utm_source", "utm_medium", "utm_campaign", "utm_content", "utm_term")
NAME_KEYS = ("NAME", "LAST_NAME", "SECOND_NAME")

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

    auto: three words with a patronymic in the middle are «Имя Отчество Фамилия», else with
    a patronymic last «Фамилия Имя Отчество»; two words with a patronymic are «Имя Отчество»;
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
        # The middle word first: surnames end in -ович/-ич too (Абрамович, Бабич), so
        # «Роман Аркадьевич Абрамович» is «Имя Отчество Фамилия», not «Фамилия Имя Отчество».
        if _is_patronymic(words[1]):
            return {"NAME": words[0], "SECOND_NAME": words[1], "LAST_NAME": words[2]}
        if _is_patronymic(words[2]):
            return {"LAST_NAME": words[0], "NAME": words[1], "SECOND_NAME": words[2]}
        return {"NAME": " ".join(words)}
    if len(words) == 2:
        first, second = words
        if _is_patronymic(second):
            return {"NAME": first, "SECOND_NAME": second}
        if _surname_score(first) > _surname_score(second):
            return {"LAST_NAME": first, "NAME": second}
        return {"NAME": first, "LAST_NAME": second}
    return {"NAME": " ".join(words)}


# Russian legal forms: «ООО Ромашка» is a company, not a person called ООО.
_LEGAL_FORMS = frozenset({"ООО", "ИП", "АО", "ЗАО", "ПАО", "ОАО"})


def is_legal_entity(text: str | None) -> bool:
    words = (text or "").split()
    return bool(words) and words[0].strip("«»\"'.,").upper() in _LEGAL_FORMS


def person_fields(name: str | None, company: str | None, order: str = "auto") -> dict[str, str]:
    """NAME / LAST_NAME / SECOND_NAME and COMPANY_TITLE from what the contact gave.

    A "name" that starts with a legal form («ООО Ромашка», «ИП Сидоров») is the company:
    it goes to COMPANY_TITLE when no company was given (NAME stays empty); when another
    company was given, the text stays whole in NAME so nothing is lost.
    """
    company = (company or "").strip() or None
    out: dict[str, str] = {}
    if is_legal_entity(name):
        whole = " ".join((name or "").split())
        if company is None:
            return {"COMPANY_TITLE": whole}
        if whole != company:
            out["NAME"] = whole
    else:
        out.update(split_name(name, order))
    if company is not None:
        out["COMPANY_TITLE"] = company
    return out


# --- titles ----------------------------------------------------------------------------------


def title_values(
    lead: Lead, event: EventRecord | None, channel: Channel | None = None
) -> dict[str, str]:
    c = lead.contact
    phone = pretty_phone(c.phones[0]) if c.phones else ""
    email = c.emails[0] if c.emails else ""
    who = c.name or phone or email or (c.handles[0] if c.handles else "")
    return {
        "channel": channel_name(channel or lead.channel),
        "name": c.name or "",
        "who": who,
        "phone": phone,
        "email": email,
        "company": c.company or "",
        # An order's own number, not its key (which is scoped by token: "site:1001").
        "external_id": str(event.meta.get("order_id") or event.external_id) if event else "",
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
        **person_fields(c.name, c.company, settings.name_order),
        "STATUS_ID": (
            settings.junk_status_id if lead.status is LeadStatus.JUNK else settings.new_status_id
        ),
        "SOURCE_ID": lead.source_id,
        "SOURCE_DESCRIPTION": source_description(lead.channel, event),
        "COMMENTS": lead_comments(lead, event, tz),
        "ORIGINATOR_ID": settings.originator_id,
        "ORIGIN_ID": lead.id,
    }
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


def source_description(channel: Channel, event: EventRecord | None) -> str:
    detail = event.source_detail if event is not None else None
    return f"leadgate: {channel_name(channel)}" + (f" ({detail})" if detail else "")


# --- a new CRM lead for a returning customer whose CRM lead is closed ------------------------


def repeat_origin(lead_id: str, event_id: str) -> str:
    """ORIGIN_ID of a CRM lead made for a later request: the crash-safe look-up finds it,
    and every such lead of a leadgate lead starts with "<lead id>:"."""
    return f"{lead_id}:{event_id}"


def repeat_lead_fields(
    lead: Lead,
    event: EventRecord | None,
    event_id: str,
    settings: Bitrix24Settings,
    *,
    previous_id: str,
    previous_semantic: str | None,
    source_id: str,
    assigned_by: int | None,
    tz: ZoneInfo,
) -> dict[str, Any]:
    """crm.lead.add fields for a request whose CRM lead is closed: the person as leadgate
    knows them now, this request's channel, title and words, and the previous lead's id."""
    channel = event.channel if event is not None else lead.channel
    fields = lead_fields(lead, event, settings, assigned_by=assigned_by, tz=tz)
    template = settings.titles.get(channel, "{channel}: {who}")
    fields["TITLE"] = render_title(template, title_values(lead, event, channel))
    fields["STATUS_ID"] = settings.new_status_id
    fields["SOURCE_ID"] = source_id
    fields["SOURCE_DESCRIPTION"] = source_description(channel, event)
    fields["COMMENTS"] = repeat_comments(
        lead,
        event,
        event_id,
        tz,
        previous_id=previous_id,
        previous_semantic=previous_semantic,
    )
    fields["ORIGIN_ID"] = repeat_origin(lead.id, event_id)
    return fields


# --- crm.lead.update on a merge: fill what the CRM lead lacks --------------------------------


def _empty(value: Any) -> bool:
    return value is None or value is False or value == "" or value == [] or value == {}


def multifield(value: Any) -> list[dict[str, Any]]:
    """PHONE / EMAIL as Bitrix24 returns them: a list of {ID, VALUE, VALUE_TYPE, TYPE_ID}."""
    if isinstance(value, Mapping):
        value = list(value.values())
    if not isinstance(value, list | tuple):
        return []
    return [dict(item) for item in value if isinstance(item, Mapping) and item.get("VALUE")]


def _phone_key(value: str, region: str) -> str:
    return normalize_phone(value, region) or re.sub(r"\D", "", value)


def fill_fields(
    current: Mapping[str, Any],
    lead: Lead,
    event: EventRecord | None,
    settings: Bitrix24Settings,
    *,
    region: str = "RU",
) -> dict[str, Any]:
    """crm.lead.update fields for what this event brings and the CRM lead lacks: ФИО and
    company only when empty there, phones and emails it does not have yet (added, never
    replaced), the interest fields only when empty. A seller's own input is never touched.
    """
    if event is None:
        return {}
    out: dict[str, Any] = {}
    c = event.contact
    person = person_fields(c.name, c.company, settings.name_order)
    if all(_empty(current.get(key)) for key in NAME_KEYS):
        out.update({k: v for k, v in person.items() if k in NAME_KEYS})
    if person.get("COMPANY_TITLE") and _empty(current.get("COMPANY_TITLE")):
        out["COMPANY_TITLE"] = person["COMPANY_TITLE"]
    # Added up to MAX_PER_KIND, like the lead's own contact: someone posting with a new
    # address each time must not grow the CRM lead by one with every merge.
    have = {_phone_key(str(m["VALUE"]), region) for m in multifield(current.get("PHONE"))}
    phones = [p for p in dict.fromkeys(c.phones) if _phone_key(p, region) not in have]
    phones = phones[: max(0, MAX_PER_KIND - len(have))]
    if phones:
        out["PHONE"] = [{"VALUE": p, "VALUE_TYPE": settings.phone_type} for p in phones]
    known = {str(m["VALUE"]).strip().lower() for m in multifield(current.get("EMAIL"))}
    emails = [e for e in dict.fromkeys(c.emails) if e.strip().lower() not in known]
    emails = emails[: max(0, MAX_PER_KIND - len(known))]
    if emails:
        out["EMAIL"] = [{"VALUE": e, "VALUE_TYPE": settings.email_type} for e in emails]
    if channels.carries_interest(event.channel):
        interest = lead.interest
        category = interest.equipment_category
        field = settings.category_field
        if field and category is not None and _empty(current.get(field)):
            out[field] = settings.category_values.get(category, category.value)
        field = settings.equipment_field
        if field and interest.probable_equipment and _empty(current.get(field)):
            out[field] = interest.probable_equipment
    return out


def with_filled(current: Mapping[str, Any], filled: Mapping[str, Any]) -> dict[str, Any]:
    """The CRM lead's values after `filled` went through (multifields are added to)."""
    out = dict(current)
    for key, value in filled.items():
        if key in ("PHONE", "EMAIL"):
            out[key] = [*multifield(current.get(key)), *value]
        else:
            out[key] = value
    return out
