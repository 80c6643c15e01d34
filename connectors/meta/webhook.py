"""A Meta webhook body as typed items: pure functions, no I/O.

One POST carries `{"object": "page" | "instagram", "entry": [...]}` with any number of
entries, each with any number of `messaging[]` (and `standby[]`) items or `changes[]`.
Every one of them is returned: nothing in a batch is skipped because a neighbour was odd.
Ids are turned into strings: Meta's Lead Ads sample sends them as JSON numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import orjson

from gateway.http import MAX_JSON_DEPTH, too_deep
from gateway.textsafe import ascii_digits


class WebhookInvalid(ValueError):
    """An authentic body that is not a Meta webhook as documented."""


class MetaObject(StrEnum):
    PAGE = "page"  # Messenger and the Page's Lead Ads
    INSTAGRAM = "instagram"  # Instagram Direct


class ItemKind(StrEnum):
    MESSAGE = "message"  # the customer wrote (text, attachments, quick reply)
    POSTBACK = "postback"  # the customer pressed a button (Get Started, a menu item)
    REFERRAL = "referral"  # the customer came from an ad, an m.me link, ... into a thread
    EDIT = "edit"  # the customer changed the text of an earlier message
    ECHO = "echo"  # a message the page/account itself sent (by us or a person in Meta's inbox)
    DELIVERY = "delivery"  # our messages reached the customer's device
    READ = "read"  # the customer read our messages
    OTHER = "other"  # reactions, deletions, handover, optins...: acknowledged, not leads


@dataclass(frozen=True, slots=True)
class Referral:
    source: str | None = None  # ADS, SHORTLINK, ...
    type: str | None = None  # OPEN_THREAD
    ref: str | None = None
    ad_id: str | None = None
    ad_title: str | None = None


@dataclass(frozen=True, slots=True)
class MediaItem:
    type: str  # image, video, audio, file, sticker, reel, fallback, ...
    url: str | None = None
    title: str | None = None
    sticker_id: str | None = None


@dataclass(frozen=True, slots=True)
class Messaging:
    """One `messaging[]` (or `standby[]`) item of an entry."""

    object: MetaObject
    account: str  # the entry's id: the Page id or the Instagram account id
    kind: ItemKind
    customer: str  # PSID / IGSID: whichever side of the exchange is not the account
    at: datetime | None  # the item's timestamp
    mid: str | None = None  # the message's id (an edit: the id of the message edited)
    text: str | None = None
    attachments: tuple[MediaItem, ...] = ()
    quick_reply: str | None = None  # the payload of a quick-reply button
    postback_title: str | None = None
    postback_payload: str | None = None
    referral: Referral | None = None
    reply_to: str | None = None  # mid of the message this one answers
    delivered: tuple[str, ...] = ()  # delivery: mids that arrived
    watermark: datetime | None = None  # delivery/read: everything before this moment
    standby: bool = False  # came in `standby`: another app owns the thread
    app_id: str | None = None  # echo: the app that sent it
    edits: int = 0  # an edit: how many times the message was edited so far
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """What identifies this item across Meta's retries: the message id where there is
        one (Meta: "to de-duplicate messages use the mid parameter"), else who and when."""
        if self.kind is ItemKind.EDIT:
            return f"edit:{self.mid}:{self.edits}"
        if self.mid:
            return self.mid
        stamp = int(self.at.timestamp() * 1000) if self.at else 0
        return f"{self.kind}:{self.account}:{self.customer}:{stamp}"


@dataclass(frozen=True, slots=True)
class Leadgen:
    """One `leadgen` change: only ids; the answers are fetched from the Graph API."""

    account: str  # the entry's id (the Page)
    leadgen_id: str
    page_id: str | None
    form_id: str | None
    ad_id: str | None
    adgroup_id: str | None
    created_at: datetime | None
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Delivery:
    object: str
    messaging: tuple[Messaging, ...] = ()
    leadgen: tuple[Leadgen, ...] = ()
    # Change fields this gateway does not read (feed, comments, mentions ...), by name.
    ignored: tuple[str, ...] = ()
    # Pieces that are not as Meta documents them; the rest of the batch is still read.
    problems: tuple[str, ...] = ()

    @property
    def known(self) -> bool:
        return self.object in MetaObject.__members__.values()


def load_body(body: bytes) -> dict[str, Any]:
    """The JSON object of a body. Integers up to 64 bits stay exact (Meta's ids exceed 2^53;
    a parser that reads them as doubles would change their last digits)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise WebhookInvalid("body is not JSON") from None
    if not isinstance(data, dict):
        raise WebhookInvalid("body is not a JSON object")
    if too_deep(data):
        raise WebhookInvalid(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    return data


def parse(body: bytes) -> Delivery:
    """Every item of a webhook body; WebhookInvalid when it is no webhook body at all."""
    data = load_body(body)
    obj = data.get("object")
    entries = data.get("entry")
    if not isinstance(obj, str) or not obj:
        raise WebhookInvalid("no 'object'")
    if not isinstance(entries, list):
        raise WebhookInvalid("no 'entry' list")
    if obj not in MetaObject.__members__.values():
        return Delivery(object=obj)  # a subscription we do not read (user, permissions...)
    meta_object = MetaObject(obj)
    messaging: list[Messaging] = []
    leadgen: list[Leadgen] = []
    ignored: list[str] = []
    problems: list[str] = []
    for index, entry in enumerate(entries):
        where = f"entry[{index}]"
        account = _id(entry.get("id")) if isinstance(entry, dict) else None
        if not isinstance(entry, dict) or account is None:
            problems.append(f"{where} is not an object with an id")
            continue
        for name, standby in (("messaging", False), ("standby", True)):
            for pos, item in _items(entry, name, where, problems):
                found = _messaging(meta_object, account, item, standby)
                if found is None:
                    problems.append(f"{where}.{name}[{pos}] is not an object with a sender")
                else:
                    messaging.append(found)
        for pos, change in _items(entry, "changes", where, problems):
            field_name = change.get("field") if isinstance(change, dict) else None
            if not isinstance(change, dict) or not isinstance(field_name, str):
                problems.append(f"{where}.changes[{pos}] is not an object with a field")
            elif field_name != "leadgen":
                ignored.append(field_name)
            elif (lead := leadgen_change(account, change.get("value"))) is None:
                problems.append(f"{where}.changes[{pos}]: leadgen without a leadgen_id")
            else:
                leadgen.append(lead)
    return Delivery(obj, tuple(messaging), tuple(leadgen), tuple(ignored), tuple(problems))


def _items(
    entry: dict[str, Any], name: str, where: str, problems: list[str]
) -> list[tuple[int, Any]]:
    items = entry.get(name, [])
    if isinstance(items, list):
        return list(enumerate(items))
    problems.append(f"{where}.{name} is not a list")
    return []


# --- pieces ---------------------------------------------------------------------------------


def _id(value: Any) -> str | None:
    """Meta ids arrive as strings or JSON numbers; both become the same string."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def moment(value: Any) -> datetime | None:
    """A Unix time in seconds or milliseconds (Meta uses both: messaging timestamps are
    milliseconds, leadgen created_time is seconds; some examples write it as a string)."""
    if isinstance(value, str) and ascii_digits(value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    seconds = value / 1000 if value > 100_000_000_000 else value
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _party(item: dict[str, Any], side: str) -> str | None:
    who = item.get(side)
    if not isinstance(who, dict):
        return None
    # A person who came through the chat plugin before having a PSID has a user_ref.
    return _id(who.get("id")) or _id(who.get("user_ref"))


def _referral(value: Any) -> Referral | None:
    if not isinstance(value, dict):
        return None
    context = value.get("ads_context_data")
    title = context.get("ad_title") if isinstance(context, dict) else None
    return Referral(
        source=_text(value.get("source")),
        type=_text(value.get("type")),
        ref=_text(value.get("ref")),
        ad_id=_id(value.get("ad_id")),
        ad_title=_text(title),
    )


def _media(value: Any) -> tuple[MediaItem, ...]:
    if not isinstance(value, list):
        return ()
    out = []
    for item in value:
        if not isinstance(item, dict):
            continue
        payload = item.get("payload")
        payload = payload if isinstance(payload, dict) else {}
        out.append(
            MediaItem(
                type=_text(item.get("type")) or "unknown",
                url=_text(payload.get("url")) or _text(item.get("url")),
                title=_text(payload.get("title")) or _text(item.get("title")),
                sticker_id=_id(payload.get("sticker_id")),
            )
        )
    return tuple(out)


def _messaging(obj: MetaObject, account: str, item: Any, standby: bool) -> Messaging | None:
    if not isinstance(item, dict):
        return None
    sender = _party(item, "sender")
    recipient = _party(item, "recipient")
    # The customer is whoever is not the account: in an echo the account is the sender
    # (Meta's current format) or, in older deliveries, the recipient.
    customer = next((p for p in (sender, recipient) if p and p != account), None)
    customer = customer or sender
    if customer is None:
        return None
    at = moment(item.get("timestamp"))
    referral = _referral(item.get("referral"))
    message = item.get("message")
    postback = item.get("postback")
    edit = item.get("message_edit")
    common: dict[str, Any] = {
        "object": obj,
        "account": account,
        "customer": customer,
        "at": at,
        "standby": standby,
        "raw": item,
    }
    if isinstance(message, dict):
        reply = message.get("reply_to")
        quick = message.get("quick_reply")
        if message.get("is_echo") is True:
            kind = ItemKind.ECHO
        elif message.get("is_deleted") is True:
            kind = ItemKind.OTHER
        else:
            kind = ItemKind.MESSAGE
        return Messaging(
            kind=kind,
            mid=_text(message.get("mid")),
            text=_text(message.get("text")),
            attachments=_media(message.get("attachments")),
            quick_reply=_text(quick.get("payload")) if isinstance(quick, dict) else None,
            reply_to=_text(reply.get("mid")) if isinstance(reply, dict) else None,
            referral=referral or _referral(message.get("referral")),
            app_id=_id(message.get("app_id")),
            **common,
        )
    if isinstance(postback, dict):
        return Messaging(
            kind=ItemKind.POSTBACK,
            mid=_text(postback.get("mid")),
            postback_title=_text(postback.get("title")),
            postback_payload=_text(postback.get("payload")),
            referral=referral or _referral(postback.get("referral")),
            **common,
        )
    if isinstance(edit, dict):
        count = edit.get("num_edit")
        return Messaging(
            kind=ItemKind.EDIT,
            mid=_text(edit.get("mid")),
            text=_text(edit.get("text")),
            edits=int(count) if isinstance(count, int | str) and ascii_digits(str(count)) else 0,
            **common,
        )
    if referral is not None:
        return Messaging(kind=ItemKind.REFERRAL, referral=referral, **common)
    delivery = item.get("delivery")
    if isinstance(delivery, dict):
        mids = delivery.get("mids")
        mids = mids if isinstance(mids, list) else []
        return Messaging(
            kind=ItemKind.DELIVERY,
            delivered=tuple(m for m in mids if isinstance(m, str)),
            watermark=moment(delivery.get("watermark")),
            **common,
        )
    read = item.get("read")
    if isinstance(read, dict):
        return Messaging(kind=ItemKind.READ, watermark=moment(read.get("watermark")), **common)
    return Messaging(kind=ItemKind.OTHER, **common)


def leadgen_change(account: str, value: Any) -> Leadgen | None:
    """A `leadgen` change value of the entry `account`; None without a leadgen_id."""
    leadgen_id = _id(value.get("leadgen_id")) if isinstance(value, dict) else None
    if leadgen_id is None or not isinstance(value, dict):
        return None
    return Leadgen(
        account=account,
        leadgen_id=leadgen_id,
        page_id=_id(value.get("page_id")),
        form_id=_id(value.get("form_id")),
        ad_id=_id(value.get("ad_id")),
        adgroup_id=_id(value.get("adgroup_id")),
        created_at=moment(value.get("created_time")),
        raw=value,
    )
