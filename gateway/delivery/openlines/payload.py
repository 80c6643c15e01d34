"""What imconnector.send.messages and imconnector.send.status.delivery are given.

send.messages, per message (docs: imconnector-send-messages):
    user{id, name, last_name, phone, email, skip_phone_validate}
        id: the customer's handle on their channel ("tg:123"), so one person is one
        Open Lines user; name/last_name cleaned to Bitrix24's rule (names.py); phone and
        email when leadgate knows them (E.164 already: skip_phone_validate=Y);
    message{id, date, text, files[{url, name}], disable_crm}
        id: leadgate's message id; files: attachments the vendor gave a public address
        for (Bitrix24 fetches them itself); the others are named in the text, never
        linked (a Telegram file address holds the bot's token); disable_crm=Y unless
        Open Lines' CRM tracker is wanted;
    chat{id, name, url}
        id: the conversation's id — what the seller's answers name, to find it again;
        url: the CRM lead leadgate made for this person, when it is in Bitrix24 already.
send.status.delivery (docs: imconnector-send-status-delivery):
    im{chat_id, message_id} as the answer's event gave them, message{id: [ids], date},
    chat{id}; "even for a single message, pass an array" — the id Bitrix24 accepts there
    is its own message id (b24-rest-docs#257).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from gateway.conversations import ChatMessage, Conversation
from gateway.delivery.openlines.bbcode import neutralize
from gateway.delivery.openlines.names import user_names
from gateway.models import Attachment, Contact

MAX_CHAT_NAME = 100


@dataclass(frozen=True, slots=True)
class ReplyRef:
    """Where a seller's answer came from in the line: what its delivery report names.
    Kept as the checkpoint `openlines:reply:<message id>` when the answer is queued."""

    im_chat_id: str
    im_message_id: str
    chat: str

    def dumps(self) -> str:
        return orjson.dumps(
            {"im_chat_id": self.im_chat_id, "im_message_id": self.im_message_id, "chat": self.chat}
        ).decode()

    @classmethod
    def loads(cls, text: str) -> ReplyRef | None:
        try:
            data = orjson.loads(text)
            return cls(str(data["im_chat_id"]), str(data["im_message_id"]), str(data["chat"]))
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return None


def reply_checkpoint(message_id: str) -> str:
    return f"openlines:reply:{message_id}"


def _size(size: int | None) -> str:
    if size is None:
        return ""
    if size < 1024:
        return f"{size} B"
    if size < 1024 * 1024:
        return f"{size // 1024} KB"
    return f"{size / (1024 * 1024):.1f} MB"


def _fetchable(a: Attachment) -> bool:
    return a.url is not None and a.url.startswith(("https://", "http://"))


def attachment_line(a: Attachment) -> str:
    """An attachment Bitrix24 cannot fetch, named for the seller (no words to translate)."""
    what = neutralize(a.name or a.kind or "file")
    details = ", ".join(x for x in (a.kind if a.name else None, a.content_type, _size(a.size)) if x)
    return f"📎 {what}" + (f" ({details})" if details else "")


def message_item(
    conversation: Conversation,
    message: ChatMessage,
    contact: Contact | None,
    *,
    channel_label: str,
    crm_url: str | None,
    disable_crm: bool,
) -> dict[str, Any]:
    contact = contact or Contact()
    # Whatever the customer wrote reaches the seller's chat inert (bbcode.neutralize): the
    # text, the name shown as the author and in the chat's title, file names.
    name, last_name = (neutralize(n) for n in user_names(contact.name, channel_label))
    user: dict[str, Any] = {"id": conversation.handle or f"chat:{conversation.id}", "name": name}
    if last_name:
        user["last_name"] = last_name
    if contact.phones:
        user["phone"] = contact.phones[0]
        user["skip_phone_validate"] = "Y"
    if contact.emails:
        user["email"] = contact.emails[0]
    files = [
        {"url": a.url, "name": neutralize(a.name or a.kind or "file")}
        for a in message.attachments
        if _fetchable(a)
    ]
    lines = [neutralize(message.text)] if message.text else []
    lines += [attachment_line(a) for a in message.attachments if not _fetchable(a)]
    text = "\n".join(lines)
    body: dict[str, Any] = {"id": message.id, "date": int(message.at.timestamp())}
    if text or not files:
        body["text"] = text or "…"  # "pass either text or files": never neither
    if files:
        body["files"] = files
    if disable_crm:
        body["disable_crm"] = "Y"
    who = " ".join(p for p in (name, last_name) if p)
    chat: dict[str, Any] = {
        "id": conversation.id,
        "name": f"{channel_label}: {who}"[:MAX_CHAT_NAME],
    }
    if crm_url:
        chat["url"] = crm_url
    return {"user": user, "message": body, "chat": chat}


def status_item(ref: ReplyRef, at: datetime) -> dict[str, Any]:
    return {
        "im": {"chat_id": ref.im_chat_id, "message_id": ref.im_message_id},
        "message": {"id": [ref.im_message_id], "date": int(at.timestamp())},
        "chat": {"id": ref.chat},
    }
