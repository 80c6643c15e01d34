"""A customer's Messenger or Instagram item -> the LeadEvent the pipeline accepts. Pure.

Messages (text, attachments, quick replies), postbacks (buttons, Get Started), referrals
(the customer came from an ad or an m.me link) and edits are the customer's own; each is a
chat message of the thread (Page or Instagram account, PSID or IGSID). Echoes (what the
page sent), delivery and read receipts and the rest are not.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from connectors.meta.webhook import ItemKind, MediaItem, Messaging, MetaObject, Referral
from gateway.identity import find_phones
from gateway.models import Attachment, Channel, Contact, LeadEvent, ThreadRef

CUSTOMER_KINDS = (ItemKind.MESSAGE, ItemKind.POSTBACK, ItemKind.REFERRAL, ItemKind.EDIT)
# The referral source of a Click-to-Messenger / Click-to-Direct ad.
AD_SOURCE = "ADS"
MAX_PHONES = 5
MAX_TEXT = 20_000

# Attachment types as a coarse media type (Meta gives none): enough to show what it is.
_MEDIA_TYPES = {
    "image": "image/*",
    "video": "video/*",
    "audio": "audio/*",
    "file": "application/octet-stream",
}


def channel_of(obj: MetaObject) -> Channel:
    return Channel.INSTAGRAM if obj is MetaObject.INSTAGRAM else Channel.FACEBOOK


def handle_of(item: Messaging) -> str:
    """The customer's handle: PSIDs and IGSIDs are scoped to the Page/account, and unique."""
    prefix = "ig" if item.object is MetaObject.INSTAGRAM else "fb"
    return f"{prefix}:{item.customer}"


def _attachment(media: MediaItem) -> Attachment:
    return Attachment(
        name=media.title or media.type,
        content_type=_MEDIA_TYPES.get(media.type),
        url=media.url,  # Meta's CDN link: it expires; the file is not downloaded
        ref=media.sticker_id,
        kind=media.type,
    )


def came_from_ad(item: Messaging) -> bool:
    return item.referral is not None and item.referral.source == AD_SOURCE


def _referral_meta(ref: Referral) -> dict[str, str]:
    fields = {
        "source": ref.source,
        "type": ref.type,
        "ref": ref.ref,
        "ad_id": ref.ad_id,
        "ad_title": ref.ad_title,
    }
    return {k: v for k, v in fields.items() if v}


def _text(item: Messaging) -> str | None:
    if item.kind is ItemKind.POSTBACK:
        pressed = item.postback_title or item.postback_payload
        return f"Нажата кнопка: {pressed}" if pressed else None
    if item.kind is ItemKind.REFERRAL and item.referral is not None:
        ref = item.referral
        if ref.source == AD_SOURCE:
            return f"Перешёл из рекламы: {ref.ad_title or ref.ad_id or 'без названия'}"
        where = ", ".join(part for part in (ref.source, ref.ref) if part)
        return f"Перешёл по ссылке ({where})" if where else "Перешёл по ссылке"
    return item.text[:MAX_TEXT] if item.text else None


def message_event(
    item: Messaging,
    *,
    received_at: datetime,
    name: str | None = None,
    region: str = "RU",
) -> LeadEvent | None:
    """The event of a customer's item, or None for items that are not the customer's own
    contact (echoes, receipts, reactions)."""
    if item.kind not in CUSTOMER_KINDS:
        return None
    text = _text(item)
    meta: dict[str, Any] = {
        "kind": item.kind.value,
        "account": item.account,
        "customer": item.customer,
    }
    if item.quick_reply:
        meta["quick_reply"] = item.quick_reply
    if item.postback_payload:
        meta["postback"] = item.postback_payload
    if item.reply_to:
        meta["reply_to"] = item.reply_to
    if item.standby:
        meta["standby"] = True
    detail = None
    if item.referral is not None:
        meta["referral"] = _referral_meta(item.referral)
        if item.referral.ad_id:
            detail = f"ad {item.referral.ad_id}"
    stickers = [m.sticker_id for m in item.attachments if m.sticker_id]
    if stickers:
        meta["stickers"] = stickers
    return LeadEvent(
        channel=channel_of(item.object),
        external_id=item.key,
        thread=ThreadRef(account=item.account, chat=item.customer),
        # An edit rewrites the line of the message it names (whose external id is its mid).
        edits=item.mid if item.kind is ItemKind.EDIT else None,
        occurred_at=item.at or received_at,
        received_at=received_at,
        contact=Contact(
            name=name,
            phones=find_phones(text, region)[:MAX_PHONES] if text else (),
            handles=(handle_of(item),),
        ),
        text=text,
        attachments=tuple(_attachment(m) for m in item.attachments),
        source_detail=detail,
        meta=meta,
        raw=item.raw,
    )
