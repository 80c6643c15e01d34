"""A Lead Ads lead: the Graph API's answer read, and made into the LeadEvent. Pure.

The webhook says only that lead N was submitted on form F from ad A; the answers come from
`GET /{version}/{leadgen_id}`: `{id, created_time: "2015-02-28T08:49:14+0000", ad_id,
form_id, field_data: [{name, values: [...]}]}`. Standard questions have fixed names
(full_name, first_name, last_name, phone_number, email, company_name, ...); a custom question
is named by the form's author. Every answer is kept: the contact fields fill the contact,
the rest become «Вопрос: ответ» lines of the text.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from connectors.meta.webhook import Leadgen
from gateway.identity import normalize_email, normalize_phone
from gateway.models import Channel, Contact, LeadEvent

MAX_FIELDS = 100
MAX_VALUES = 20
MAX_ANSWER = 2000


class LeadUnreadable(ValueError):
    """The Graph API answered, but not with a lead as documented."""


@dataclass(frozen=True, slots=True)
class GraphLead:
    id: str
    created_at: datetime | None
    ad_id: str | None
    form_id: str | None
    platform: str | None  # "fb" / "ig" when the answer names it
    answers: tuple[tuple[str, tuple[str, ...]], ...]  # (question name, values) in form order


def _graph_time(value: Any) -> datetime | None:
    """Graph time: "2015-02-28T08:49:14+0000" (the offset without a colon)."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S%z")
    except ValueError:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
        return parsed if parsed.tzinfo is not None else None


def _value(value: Any) -> str | None:
    if isinstance(value, bool):
        return "да" if value else "нет"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()[:MAX_ANSWER]
    return None


def read_lead(data: dict[str, Any]) -> GraphLead:
    """The Graph answer as a GraphLead; LeadUnreadable when it has no id or field_data."""
    lead_id = data.get("id")
    if isinstance(lead_id, int) and not isinstance(lead_id, bool):
        lead_id = str(lead_id)
    if not isinstance(lead_id, str) or not lead_id:
        raise LeadUnreadable("the answer has no lead id")
    fields = data.get("field_data")
    if not isinstance(fields, list):
        raise LeadUnreadable("the answer has no field_data list")
    answers: list[tuple[str, tuple[str, ...]]] = []
    for item in fields[:MAX_FIELDS]:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            continue
        raw_values = item.get("values")
        # Meta documents values as always a list; a bare value is taken as one anyway.
        listed = raw_values if isinstance(raw_values, list) else [raw_values]
        values = tuple(v for x in listed[:MAX_VALUES] if (v := _value(x)) is not None)
        answers.append((item["name"], values))

    def text(key: str) -> str | None:
        value = data.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return value if isinstance(value, str) and value else None

    return GraphLead(
        id=lead_id,
        created_at=_graph_time(data.get("created_time")),
        ad_id=text("ad_id"),
        form_id=text("form_id"),
        platform=text("platform"),
        answers=tuple(answers),
    )


# Standard questions that fill the contact; the rest of Meta's standard ones are shown with
# a Russian label (Lead Ads question names are English whatever the form's language).
_NAMES = ("full_name", "first_name", "last_name")
_PHONES = ("phone_number", "work_phone_number", "phone")
_EMAILS = ("email", "work_email")
_COMPANY = ("company_name",)
LABELS = {
    "phone_number": "Телефон",
    "phone": "Телефон",
    "work_phone_number": "Рабочий телефон",
    "email": "Email",
    "work_email": "Рабочий email",
    "job_title": "Должность",
    "city": "Город",
    "state": "Регион",
    "province": "Область",
    "country": "Страна",
    "street_address": "Адрес",
    "zip_code": "Индекс",
    "post_code": "Индекс",
    "date_of_birth": "Дата рождения",
    "gender": "Пол",
    "marital_status": "Семейное положение",
    "relationship_status": "Семейное положение",
    "military_status": "Военная служба",
    "national_id_number": "Номер документа",
}


def _question(name: str) -> str:
    """A question as a person reads it: «car_make» -> «Car make»."""
    if name.lower() in LABELS:
        return LABELS[name.lower()]
    words = name.replace("_", " ").strip()
    return words[:1].upper() + words[1:] if words else name


def lead_event(
    change: Leadgen,
    lead: GraphLead,
    *,
    received_at: datetime,
    region: str = "RU",
) -> LeadEvent:
    """The LeadEvent of one Lead Ads lead. Its external id is the leadgen id: a second
    delivery of the same webhook (or a re-fetch) is a replay, never a second lead."""
    found: dict[str, str] = {}
    phones: list[str] = []
    emails: list[str] = []
    lines: list[str] = []
    for name, values in lead.answers:
        key = name.lower()
        joined = ", ".join(values)
        if not joined:
            continue
        if key in _PHONES and (phone := normalize_phone(values[0], region)):
            phones.append(phone)
        elif key in _EMAILS and (email := normalize_email(values[0])):
            emails.append(email)
        elif key in _NAMES or key in _COMPANY:
            found.setdefault(key, joined)
        else:
            # Custom questions, and a phone or address that did not read as one (kept
            # verbatim: a typo'd phone is still a lead a seller can call back).
            lines.append(f"{_question(name)}: {joined}")
    name = found.get("full_name") or " ".join(
        p for p in (found.get("first_name"), found.get("last_name")) if p
    )
    form_id = lead.form_id or change.form_id
    ad_id = lead.ad_id or change.ad_id
    detail = ", ".join(
        part for part in (form_id and f"form {form_id}", ad_id and f"ad {ad_id}") if part
    )
    meta: dict[str, Any] = {
        "kind": "leadgen",
        "leadgen_id": lead.id,
        "page_id": change.page_id or change.account,
        "form_id": form_id,
        "ad_id": ad_id,
        "adgroup_id": change.adgroup_id,
    }
    if lead.platform:
        meta["platform"] = lead.platform
    return LeadEvent(
        channel=Channel.INSTAGRAM if lead.platform == "ig" else Channel.FACEBOOK,
        external_id=f"leadgen:{lead.id}",
        occurred_at=lead.created_at or change.created_at or received_at,
        received_at=received_at,
        contact=Contact(
            name=name or None,
            phones=tuple(dict.fromkeys(phones)),
            emails=tuple(dict.fromkeys(emails)),
            company=found.get("company_name"),
        ),
        text="\n".join(["Заявка из формы Lead Ads", *lines]),
        source_detail=detail or None,
        meta={k: v for k, v in meta.items() if v is not None},
        raw={"webhook": change.raw, "lead": {"id": lead.id, "field_data": _raw(lead)}},
    )


def _raw(lead: GraphLead) -> list[dict[str, Any]]:
    return [{"name": name, "values": list(values)} for name, values in lead.answers]
