"""Messages to the community: the two shapes of message_new, and what of them is a customer's.

From API version 5.103 on, message_new's object is {message, client_info}; before, the
object is the message itself (dev.vk.com community events; both shapes are in the
fixtures). message_edit's object is the bare message in every version. A message has
ids only: `from_id` (the author), `peer_id` (the conversation: the user for a private
message, 2000000000 + n for a chat), `id` (0 in chats where the community is not the
owner) and `conversation_message_id` (unique within the peer, always present).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from connectors.vk.parse import MAX_TEXT_PHONES, attachments_of, vk_handle, vk_time
from gateway.identity import find_phones
from gateway.models import Channel, Contact, LeadEvent, ThreadRef

CHAT_PEER_START = 2_000_000_000
KIND_MESSAGE = "message"
KIND_MESSAGE_EDIT = "message_edit"
MAX_FORWARDED = 5

# client_info.lang_id (VK's language ids) -> the customer's language, where we have one.
_LANGUAGES = {0: "ru", 1: "uk", 2: "be", 3: "en", 4: "es", 5: "fi", 6: "de", 7: "it"}


@dataclass(frozen=True, slots=True)
class Message:
    """One message as VK sent it, whatever the shape of the event."""

    peer_id: int
    from_id: int
    cmid: int  # conversation_message_id
    message_id: int  # 0 in chats
    date: int | None
    text: str
    attachments: list[Any]
    forwarded: list[str]  # texts of forwarded and replied-to messages, for the transcript
    ref: str | None
    ref_source: str | None
    locale: str | None
    update_time: int | None
    raw: dict[str, Any]

    @property
    def in_chat(self) -> bool:
        return self.peer_id >= CHAT_PEER_START

    @property
    def from_customer(self) -> bool:
        """A person wrote it in a private conversation with the community. Not: the
        community itself or another community/bot (negative ids), and not group chats,
        where the community sees every member's talk, not requests to it."""
        return self.from_id > 0 and not self.in_chat and self.peer_id == self.from_id


def _int(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None


def _str(value: Any, limit: int) -> str | None:
    return value[:limit] if isinstance(value, str) and value else None


def _forwarded(msg: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    reply = msg.get("reply_message")
    items = ([reply] if isinstance(reply, Mapping) else []) + [
        f for f in (msg.get("fwd_messages") or []) if isinstance(f, Mapping)
    ]
    for item in items[:MAX_FORWARDED]:
        text = item.get("text")
        if isinstance(text, str) and text.strip():
            out.append(text.strip()[:1000])
    return out


def read_message(obj: Mapping[str, Any]) -> Message | None:
    """The message of a message_new / message_edit object (either shape); None when the
    object holds no readable message."""
    inner = obj.get("message")
    client = obj.get("client_info")
    msg: Mapping[str, Any] = inner if isinstance(inner, Mapping) else obj
    peer_id, from_id = _int(msg.get("peer_id")), _int(msg.get("from_id"))
    cmid = _int(msg.get("conversation_message_id"))
    if peer_id is None or from_id is None or cmid is None:
        return None
    locale = None
    if isinstance(client, Mapping):
        lang = _int(client.get("lang_id"))
        locale = _LANGUAGES.get(lang) if lang is not None else None
    text = msg.get("text")
    attachments = msg.get("attachments")
    return Message(
        peer_id=peer_id,
        from_id=from_id,
        cmid=cmid,
        message_id=_int(msg.get("id")) or 0,
        date=_int(msg.get("date")),
        text=text.strip()[:9000] if isinstance(text, str) else "",
        attachments=attachments if isinstance(attachments, list) else [],
        forwarded=_forwarded(msg),
        ref=_str(msg.get("ref"), 200),
        ref_source=_str(msg.get("ref_source"), 200),
        locale=locale,
        update_time=_int(msg.get("update_time")),
        raw=dict(msg),
    )


def message_event(
    msg: Message,
    *,
    group_id: int,
    community: str,
    received_at: datetime,
    region: str = "RU",
    name: str | None = None,
    edit_key: str | None = None,
) -> LeadEvent:
    """A customer's message (or, with `edit_key`, their edit of it) -> a conversation
    message: thread (community, peer_id), external id `<group>:msg:<peer>:<cmid>`."""
    original = f"{group_id}:msg:{msg.peer_id}:{msg.cmid}"
    # The customer's identity comes from their own words only: a number inside a forwarded
    # or quoted message is somebody else's (a friend's, another shop's), and taking it
    # would merge strangers who forwarded the same message into one lead.
    phones = find_phones(msg.text, region)[:MAX_TEXT_PHONES] if msg.text else ()
    text = msg.text
    if msg.forwarded:
        text = "\n".join([text, *(f"> {line}" for line in msg.forwarded)]).strip()
    meta: dict[str, Any] = {
        "kind": KIND_MESSAGE_EDIT if edit_key else KIND_MESSAGE,
        "group_id": group_id,
        "vk_user_id": msg.from_id,
        "message_id": msg.message_id or None,
        "conversation_message_id": msg.cmid,
    }
    if msg.ref:
        meta["ref"] = msg.ref  # the link or ad the customer came from (vk.me/...?ref=)
    if msg.ref_source:
        meta["ref_source"] = msg.ref_source
    return LeadEvent(
        channel=Channel.VK,
        external_id=f"{original}:edit:{edit_key}"[:512] if edit_key else original,
        occurred_at=vk_time(msg.update_time if edit_key else msg.date, received_at),
        received_at=received_at,
        contact=Contact(name=name, phones=phones, handles=(vk_handle(msg.from_id),)),
        text=text or None,
        attachments=attachments_of(msg.attachments),
        source_detail=f"{community}, сообщения"[:200],
        thread=ThreadRef(account=str(group_id), chat=str(msg.peer_id), locale=msg.locale),
        edits=original if edit_key else None,
        meta=meta,
        raw=msg.raw,
    )
