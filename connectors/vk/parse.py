"""Pure parse functions: one VK event object -> one LeadEvent (or None: not a customer's).

Shapes (vk-api-schema 5.199 and dev.vk.com "community events"): lead_forms_new {lead_id,
group_id, user_id, form_id, form_name, ad_id?, answers[{key, question, answer}]} and the
leads of leadForms.getLeads {lead_id, user_id, date, ad_id?, answers[{key, answer}]}, where
`answer` is a string, an object {key?, value} or, for a checkbox question, an array of them;
wall_reply_new is a wall comment plus post_id and post_owner_id; market_order_new a
market_order; message_allow {user_id, key}; message_deny {user_id}.

External ids are the objects' own ids scoped by the community, never the envelope's
event_id: a lead form that arrives both as an event and through the catch-up, or an event
VK repeats, is one event. Names are not in these objects (except the typed-in answers of a
lead form): the caller looks them up (users.get) and passes `name`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from gateway.identity import find_phones, normalize_email, normalize_phone
from gateway.models import Attachment, Channel, Contact, Interest, LeadEvent
from gateway.textsafe import ascii_digits

# A VK date is believed within this much before receipt (a catch-up after an outage, a
# retried event); outside it, or ahead of our clock, the receipt time stands.
CLOCK_TRUST = timedelta(days=7)
CLOCK_AHEAD = timedelta(minutes=5)
MAX_ANSWER = 2000  # characters of one answer kept in the text
MAX_TEXT_PHONES = 3
KIND_LEAD_FORM = "vk_lead_form"
KIND_WALL_REPLY = "vk_wall_reply"
KIND_MARKET_ORDER = "vk_market_order"
KIND_MESSAGES_ALLOWED = "vk_messages_allowed"
KIND_MESSAGES_DENIED = "vk_messages_denied"

# The standard questions of a lead form (leadForms.create: first_name, patronymic_name,
# last_name, email, phone_number, age, birthday, location) as a seller reads them.
_STANDARD_LABELS = {
    "first_name": "Имя",
    "patronymic_name": "Отчество",
    "last_name": "Фамилия",
    "phone_number": "Телефон",
    "email": "Email",
    "age": "Возраст",
    "birthday": "Дата рождения",
    "location": "Город",
}
_NAME_KEYS = ("first_name", "patronymic_name", "last_name")


class ObjectInvalid(ValueError):
    """An authentic event whose object cannot be read (kept in quarantine)."""


def vk_handle(user_id: int) -> str:
    return f"vk:{user_id}"


def _opt(obj: Mapping[str, Any], key: str) -> int | None:
    value = obj.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and ascii_digits(value.removeprefix("-")) and len(value) < 20:
        return int(value)
    return None


def _req(obj: Mapping[str, Any], key: str) -> int:
    value = _opt(obj, key)
    if value is None:
        raise ObjectInvalid(f"{key} is missing or not a number")
    return value


def _text(value: Any, limit: int = MAX_ANSWER) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def vk_time(value: Any, received_at: datetime) -> datetime:
    """A VK Unix time, when it is believable; else the receipt time."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        try:
            at = datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            return received_at
        if received_at - CLOCK_TRUST <= at <= received_at + CLOCK_AHEAD:
            return at
    return received_at


# --- lead forms --------------------------------------------------------------------------


def answer_text(answer: Any) -> str:
    """An answer as text: a string; {key, value}; a checkbox's [{key, value}, ...]."""
    if isinstance(answer, list):
        return ", ".join(t for item in answer if (t := answer_text(item)))
    if isinstance(answer, Mapping):
        return _text(answer.get("value"))
    if isinstance(answer, str | int | float) and not isinstance(answer, bool):
        return _text(answer)
    return ""


def parse_lead_form(
    obj: Mapping[str, Any],
    *,
    group_id: int,
    community: str,
    received_at: datetime,
    region: str = "RU",
    questions: Mapping[str, str] | None = None,
    form_id: int | None = None,
    form_name: str | None = None,
    name: str | None = None,
    via: str = "callback",
) -> LeadEvent:
    """A lead-form application (the event's object, or a lead of leadForms.getLeads with its
    form's question labels in `questions`) -> a LeadEvent."""
    lead_id = _req(obj, "lead_id")
    user_id = _opt(obj, "user_id")
    form_id = _opt(obj, "form_id") or form_id
    ad_id = _opt(obj, "ad_id")
    form_name = _text(obj.get("form_name"), 200) or form_name or None
    answers = obj.get("answers")
    if not isinstance(answers, list):
        raise ObjectInvalid("answers is missing or not a list")
    labels = questions or {}
    typed: dict[str, str] = {}
    lines: list[str] = []
    phones: list[str] = []
    emails: list[str] = []
    for item in answers:
        if not isinstance(item, Mapping):
            continue
        key = _text(item.get("key"), 100)
        value = answer_text(item.get("answer"))
        if not value:
            continue
        question = (
            _text(item.get("question"), 300) or labels.get(key) or _STANDARD_LABELS.get(key) or key
        )
        if key in _NAME_KEYS:
            typed[key] = value
            continue
        if key == "phone_number" and (phone := normalize_phone(value, region)):
            phones.append(phone)
            continue
        if key == "email" and (email := normalize_email(value)):
            emails.append(email)
            continue
        # Custom questions, the other standard ones, and a phone or email that does not
        # read as one: the seller sees them as they were answered.
        lines.append(f"{question}: {value}")
    typed_name = " ".join(typed[k] for k in _NAME_KEYS if k in typed) or None
    title = f"Заявка из лид-формы «{form_name}»" if form_name else "Заявка из лид-формы"
    detail = f"{community}, лид-форма «{form_name}»" if form_name else f"{community}, лид-форма"
    if ad_id:
        lines.append(f"Объявление: {ad_id}")
    return LeadEvent(
        channel=Channel.VK,
        external_id=f"{group_id}:lead:{lead_id}",
        occurred_at=vk_time(obj.get("date"), received_at),
        received_at=received_at,
        contact=Contact(
            name=typed_name or name,
            phones=tuple(dict.fromkeys(phones)),
            emails=tuple(dict.fromkeys(emails)),
            handles=(vk_handle(user_id),) if user_id and user_id > 0 else (),
        ),
        text="\n".join([title, *lines]),
        source_detail=detail[:200],
        meta={
            "kind": KIND_LEAD_FORM,
            "group_id": group_id,
            "lead_id": lead_id,
            "form_id": form_id,
            "form_name": form_name,
            "ad_id": ad_id,
            "vk_user_id": user_id,
            "via": via,
        },
        raw=dict(obj),
    )


# --- wall comments -----------------------------------------------------------------------


def attachments_of(items: Any) -> tuple[Attachment, ...]:
    """Attachment metadata (type and, for a document, its name and size); never the file."""
    out: list[Attachment] = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, Mapping) or not isinstance(item.get("type"), str):
            continue
        kind = item["type"][:40]
        inner = item.get(kind)
        name = None
        size = None
        url = None
        if isinstance(inner, Mapping):
            name = _text(inner.get("title") or inner.get("name"), 200) or None
            raw_size = inner.get("size")
            if isinstance(raw_size, int) and not isinstance(raw_size, bool):
                size = raw_size
            owner, ident = inner.get("owner_id"), inner.get("id")
            if isinstance(owner, int) and isinstance(ident, int) and kind in _LINKABLE:
                url = f"https://vk.com/{kind}{owner}_{ident}"
        out.append(Attachment(name=name or kind, content_type=f"vk/{kind}", size=size, url=url))
        if len(out) >= 20:
            break
    return tuple(out)


_LINKABLE = ("photo", "video", "doc", "audio")


def post_link(owner_id: int, post_id: int, comment_id: int | None = None) -> str:
    link = f"https://vk.com/wall{owner_id}_{post_id}"
    return f"{link}?reply={comment_id}" if comment_id else link


def parse_wall_reply(
    obj: Mapping[str, Any],
    *,
    group_id: int,
    community: str,
    received_at: datetime,
    region: str = "RU",
    creates_lead: bool = True,
    name: str | None = None,
) -> LeadEvent | None:
    """A comment under a post -> a LeadEvent; None for a community's own comment."""
    comment_id = _req(obj, "id")
    from_id = _req(obj, "from_id")
    post_id = _req(obj, "post_id")
    owner_id = _opt(obj, "post_owner_id") or _req(obj, "owner_id")
    if from_id <= 0:
        return None  # the community (ours or another) commenting: not a customer
    body = _text(obj.get("text"), 9000)
    link = post_link(owner_id, post_id, comment_id)
    phones = find_phones(body, region)[:MAX_TEXT_PHONES] if body else ()
    return LeadEvent(
        channel=Channel.VK,
        external_id=f"{group_id}:wall_reply:{owner_id}_{comment_id}",
        occurred_at=vk_time(obj.get("date"), received_at),
        received_at=received_at,
        contact=Contact(name=name, phones=phones, handles=(vk_handle(from_id),)),
        text=f"Комментарий к записи {link}" + (f"\n{body}" if body else ""),
        attachments=attachments_of(obj.get("attachments")),
        source_detail=f"{community}, комментарий на стене"[:200],
        creates_lead=creates_lead,
        meta={
            "kind": KIND_WALL_REPLY,
            "group_id": group_id,
            "post_link": link,
            "post_id": post_id,
            "comment_id": comment_id,
            "vk_user_id": from_id,
        },
        raw=dict(obj),
    )


# --- shop orders -------------------------------------------------------------------------


def _price(price: Any) -> tuple[str, Decimal | None, str | None]:
    """(as a person reads it, the amount in currency units, currency code) of a market_price:
    `amount` is a string, "the price in hundredths of a unit of currency" (dev.vk.com, market
    item object); `text` is VK's own rendering («1 500 ₽»)."""
    if not isinstance(price, Mapping):
        return "", None, None
    currency = price.get("currency")
    code = None
    if isinstance(currency, Mapping):
        code = _text(currency.get("name"), 8) or None
    amount: Decimal | None = None
    raw = price.get("amount")
    if isinstance(raw, str | int) and not isinstance(raw, bool) and len(str(raw)) <= 24:
        try:
            amount = Decimal(str(raw)) / 100
        except InvalidOperation:
            amount = None
    text = _text(price.get("text"), 100)
    if not text and amount is not None:
        text = f"{amount:,.2f}".replace(",", " ") + (f" {code}" if code else "")
    return text, amount, code


def parse_market_order(
    obj: Mapping[str, Any],
    *,
    group_id: int,
    community: str,
    received_at: datetime,
    name: str | None = None,
) -> LeadEvent:
    """A VK shop order -> an order lead, its items and total as the store's orders have."""
    order_id = _req(obj, "id")
    user_id = _req(obj, "user_id")
    number = _text(obj.get("display_order_id"), 50) or str(order_id)
    lines = []
    items = obj.get("preview_order_items")
    shown = 0
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, Mapping):
            continue
        inner = item.get("item")
        title = _text(item.get("title"), 300) or (
            _text(inner.get("title"), 300) if isinstance(inner, Mapping) else ""
        )
        quantity = item.get("quantity")
        qty = quantity if isinstance(quantity, int) and not isinstance(quantity, bool) else 1
        price, _, _ = _price(item.get("price"))
        lines.append(f"{title or 'товар'} × {qty}" + (f" — {price}" if price else ""))
        shown += 1
    count = obj.get("items_count")
    if isinstance(count, int) and not isinstance(count, bool) and count > shown:
        lines.append(f"… и ещё позиций: {count - shown}")
    total_text, total, currency = _price(obj.get("total_price"))
    if total_text:
        lines.append(f"Итого: {total_text}")
    text = f"Заказ №{number} в магазине ВКонтакте\n" + "\n".join(lines)
    for label, key in (("Адрес", "address"), ("Комментарий", "comment")):
        if value := _text(obj.get(key)):
            text += f"\n{label}: {value}"
    equipment = "\n".join(line for line in lines if not line.startswith("Итого"))
    return LeadEvent(
        channel=Channel.VK,
        external_id=f"{group_id}:order:{order_id}",
        occurred_at=vk_time(obj.get("date"), received_at),
        received_at=received_at,
        contact=Contact(name=name, handles=(vk_handle(user_id),) if user_id > 0 else ()),
        text=text,
        interest=Interest(probable_equipment=equipment or None),
        source_detail=f"{community}, магазин"[:200],
        meta={
            "kind": KIND_MARKET_ORDER,
            "group_id": group_id,
            "order_id": order_id,
            "display_order_id": number,
            "total": str(total) if total is not None else None,
            "currency": currency,
            "items": count if isinstance(count, int) else shown,
            "vk_user_id": user_id,
        },
        raw=dict(obj),
    )


# --- permission to write -----------------------------------------------------------------


def parse_messages_permission(
    obj: Mapping[str, Any],
    *,
    allowed: bool,
    group_id: int,
    community: str,
    received_at: datetime,
    event_key: str,
    name: str | None = None,
) -> LeadEvent | None:
    """message_allow / message_deny -> a fact on the person's open lead (never a new one):
    whether the community may write to them now."""
    user_id = _req(obj, "user_id")
    if user_id <= 0:
        return None
    word = "allow" if allowed else "deny"
    text = "Разрешил сообщения от сообщества" if allowed else "Запретил сообщения от сообщества"
    meta: dict[str, Any] = {
        "kind": KIND_MESSAGES_ALLOWED if allowed else KIND_MESSAGES_DENIED,
        "group_id": group_id,
        "vk_user_id": user_id,
    }
    if allowed and (key := _text(obj.get("key"), 200)):
        meta["key"] = key  # what messages.allowMessagesFromGroup was given (a widget, a campaign)
    return LeadEvent(
        channel=Channel.VK,
        external_id=f"{group_id}:{word}:{user_id}:{event_key}"[:512],
        occurred_at=received_at,
        received_at=received_at,
        contact=Contact(name=name, handles=(vk_handle(user_id),)),
        text=text,
        source_detail=community[:200],
        creates_lead=False,
        meta=meta,
        raw=dict(obj),
    )
