"""A Telegram update as leadgate reads it: pure functions from the stored JSON to an event.

What becomes an event: messages and edited messages in private chats with a person.
What does not, and is only counted: anything from a group, supergroup or channel (a bot
added to a group is not a sales line; those chats are ignored), messages from bots, the
"user blocked / unblocked the bot" notices, and every other update kind.

Telegram's payload is parsed with aiogram's types (`Update.model_validate`), after
`lenient()` has mended what real servers sent against their own docs (a null
first_name, seen in 2025: tdlib/telegram-bot-api#778).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiogram.types import Message, Update

from gateway.identity import normalize_phone
from gateway.models import Attachment, AutoAnswer, Channel, Contact, LeadEvent, ThreadRef

_START = re.compile(r"^/start(?:@\w+)?(?:\s+(\S.*))?$", re.DOTALL)
# Media a message may carry, with the content type Telegram implies when it gives none.
_MEDIA = (
    ("document", None),
    ("video", "video/mp4"),
    ("audio", None),
    ("voice", "audio/ogg"),
    ("video_note", "video/mp4"),
    ("animation", "video/mp4"),
    ("sticker", "image/webp"),
)


_READ = ("message", "edited_message", "my_chat_member")


@dataclass(frozen=True, slots=True)
class Parsed:
    """What one update is: its kind (a metric label) and the event it makes, if any."""

    kind: str
    event: LeadEvent | None = None


Greeting = Callable[[str | None], AutoAnswer]  # the customer's language -> the /start answer


def lenient(data: dict[str, Any]) -> dict[str, Any]:
    """The update with what real servers send against the docs mended, so the typed parse
    accepts it: a `first_name` of null (in from, chat, contact) becomes empty, and a
    sender without `is_bot` (updates from before Bot API 3.0 and Telegram's own examples)
    is a person, a file without `file_unique_id` (before 4.5) gets an empty one."""

    def mend(value: Any, key: str | None = None) -> Any:
        if isinstance(value, dict):
            out = {
                k: ("" if k == "first_name" and v is None else mend(v, k)) for k, v in value.items()
            }
            if key == "from" and "is_bot" not in out:
                out["is_bot"] = False
            if "file_id" in out and "file_unique_id" not in out:  # before Bot API 4.5
                out["file_unique_id"] = ""
            return out
        if isinstance(value, list):
            return [mend(v) for v in value]
        return value

    mended: dict[str, Any] = mend(data)
    return mended


def chat_of(data: Any) -> str | None:
    """The chat an update is about (message, edited_message, my_chat_member, a callback's
    message, ...): the inbox handles one chat's updates in order. None when it names none."""
    if not isinstance(data, dict):
        return None
    for key, value in data.items():
        if key == "update_id" or not isinstance(value, dict):
            continue
        holder = value.get("message") if isinstance(value.get("message"), dict) else value
        chat = holder.get("chat")
        if isinstance(chat, dict) and isinstance(chat.get("id"), int):
            return str(chat["id"])
    return None


def read_update(data: dict[str, Any]) -> Update:
    """aiogram's typed Update; raises pydantic.ValidationError for what is not one."""
    return Update.model_validate(lenient(data))


def phone_of(raw: str, region: str) -> str | None:
    """A shared contact's number in E.164: Telegram sends it with or without the +."""
    digits = raw.strip()
    if digits and digits[0].isdigit():
        digits = "+" + digits
    return normalize_phone(digits, region)


def _name(first: str | None, last: str | None) -> str | None:
    return " ".join(p for p in (first, last) if p) or None


def _attachments(message: Message) -> tuple[Attachment, ...]:
    found: list[Attachment] = []
    if message.photo:
        biggest = message.photo[-1]  # sizes come smallest first
        found.append(
            Attachment(
                kind="photo",
                ref=biggest.file_id,
                size=biggest.file_size,
                content_type="image/jpeg",
            )
        )
    for kind, implied in _MEDIA:
        media = getattr(message, kind, None)
        if media is None:
            continue
        found.append(
            Attachment(
                kind=kind,
                ref=media.file_id,
                name=getattr(media, "file_name", None),
                size=getattr(media, "file_size", None),
                content_type=getattr(media, "mime_type", None) or implied,
            )
        )
    return tuple(found)


def parse_update(
    bot: str,
    data: dict[str, Any],
    *,
    received_at: datetime,
    region: str,
    greeting: Greeting,
) -> Parsed:
    # Only the kinds we read are parsed: an update of another kind is counted and left
    # alone, whatever shape it has.
    key = next((k for k in _READ if k in data), None)
    if key is None:
        return Parsed("other")
    update = read_update({"update_id": data.get("update_id"), key: data[key]})
    edited = update.edited_message is not None
    message = update.edited_message if edited else update.message
    if message is None:
        member = update.my_chat_member
        if member is not None and member.chat.type == "private":
            status = member.new_chat_member.status
            return Parsed("blocked" if status == "kicked" else "unblocked")
        return Parsed("other")
    if message.chat.type != "private":
        return Parsed("group")  # a bot added to a group is not a sales line
    person = message.from_user
    if person is None or person.is_bot:
        return Parsed("bot")
    return _message_event(bot, update, message, edited, data, received_at, region, greeting)


def _message_event(
    bot: str,
    update: Update,
    message: Message,
    edited: bool,
    raw: dict[str, Any],
    received_at: datetime,
    region: str,
    greeting: Greeting,
) -> Parsed:
    person = message.from_user
    assert person is not None
    chat = str(message.chat.id)
    kind = "edit" if edited else "message"
    text = message.text if message.text is not None else message.caption
    phones: tuple[str, ...] = ()
    meta: dict[str, Any] = {"update_id": update.update_id, "message_id": message.message_id}
    if person.username:
        meta["username"] = person.username
    answer = None
    if message.contact is not None:
        contact = message.contact
        number = phone_of(contact.phone_number, region)
        # Only the customer's own number is theirs: a contact can be anyone's card.
        own = contact.user_id is not None and contact.user_id == person.id
        shown = number or contact.phone_number
        if own:
            kind, text = "contact", shown
            phones = (number,) if number is not None else ()
        else:
            kind = "foreign_contact"
            text = " ".join(p for p in (_name(contact.first_name, contact.last_name), shown) if p)
            meta["shared_contact"] = True
    elif text is not None and not edited and (start := _START.match(text.strip())):
        kind = "start"
        answer = greeting(person.language_code)
        if start.group(1):
            meta["start"] = start.group(1).strip()[:64]
    attachments = _attachments(message)
    if text is None and not attachments and message.contact is None:
        text = f"[{message.content_type}]"  # a location, a poll, ...: shown for what it is
    base = f"{bot}:{chat}:{message.message_id}"
    if message.message_id == 0:  # ephemeral (Bot API 10): no id of its own to key on
        base = f"{bot}:{chat}:u{update.update_id}"
    occurred = message.edit_date if edited and message.edit_date else message.date
    external = f"{base}:edit:{update.update_id}" if edited else base
    event = LeadEvent(
        channel=Channel.TELEGRAM,
        external_id=external,
        occurred_at=occurred,
        received_at=received_at,
        contact=Contact(
            name=_name(person.first_name, person.last_name),
            phones=phones,
            handles=(f"tg:{person.id}",),
        ),
        text=text,
        attachments=attachments,
        source_detail=bot,
        meta=meta,
        thread=ThreadRef(account=bot, chat=chat, locale=person.language_code),
        edits=base if edited else None,
        answer=answer,
        raw=raw,
    )
    return Parsed(kind, event)
