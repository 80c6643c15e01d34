"""The connector events, read from their nested form data (gateway.delivery.openlines.form).

OnImConnectorMessageAdd (docs: imconnector/events/on-im-connector-message-add):
    data[CONNECTOR], data[LINE], data[MESSAGES][n][im][chat_id|message_id],
    data[MESSAGES][n][message][user_id|text], data[MESSAGES][n][chat][id]
`chat.id` is the id leadgate gave the chat when it mirrored the customer's message (its
conversation id); `im.chat_id` / `im.message_id` are Bitrix24's own, needed to report the
delivery back. Files of an operator's message are not described by the docs: when a
`message[files]` list comes, its entries' `link`/`url` and `name` are kept (unverified).

OnImConnectorDialogFinish: data[DATA][n][connector][chat_id] (the connector's chat id:
ours) — the docs' example shows chat[id] with the same value, read when it is missing —
and data[DATA][n][session][id|closed].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.delivery.openlines.form import text

MESSAGE_ADD = "ONIMCONNECTORMESSAGEADD"
DIALOG_FINISH = "ONIMCONNECTORDIALOGFINISH"
STATUS_DELETE = "ONIMCONNECTORSTATUSDELETE"


class EventInvalid(ValueError):
    """An authentic event whose content is not what the docs describe."""


@dataclass(frozen=True, slots=True)
class SellerFile:
    name: str
    url: str


@dataclass(frozen=True, slots=True)
class SellerAnswer:
    """One operator message from the line, for one of our chats."""

    connector: str
    line: str
    chat: str  # our chat id (the conversation's)
    im_chat_id: str
    im_message_id: str
    user_id: str | None  # the Bitrix24 user who wrote it
    text: str  # BB-code, as Bitrix24 sends it
    files: tuple[SellerFile, ...] = ()

    @property
    def key(self) -> str:
        """Bitrix24's identity of the message: what a repeated event repeats."""
        return f"{self.im_chat_id}:{self.im_message_id}"


@dataclass(frozen=True, slots=True)
class DialogFinish:
    chat: str  # our chat id
    session: str | None


def _list(node: Any) -> list[Any]:
    if isinstance(node, list):
        return node
    if isinstance(node, dict):  # a table whose keys were not 0..n-1
        return list(node.values())
    return []


def seller_answers(fields: dict[str, Any]) -> list[SellerAnswer]:
    data = fields.get("data")
    if not isinstance(data, dict):
        raise EventInvalid("the event has no data")
    connector = text(data, "CONNECTOR") or ""
    line = text(data, "LINE") or ""
    out: list[SellerAnswer] = []
    for i, item in enumerate(_list(data.get("MESSAGES"))):
        chat = text(item, "chat", "id")
        im_chat = text(item, "im", "chat_id")
        im_message = text(item, "im", "message_id")
        if not (chat and im_chat and im_message):
            raise EventInvalid(f"MESSAGES[{i}] lacks chat.id, im.chat_id or im.message_id")
        files = []
        message = item.get("message") if isinstance(item, dict) else None
        for f in _list(message.get("files") if isinstance(message, dict) else None):
            url = text(f, "link") or text(f, "url")
            if url and url.startswith(("https://", "http://")):
                files.append(SellerFile(text(f, "name") or url.rsplit("/", 1)[-1], url))
        out.append(
            SellerAnswer(
                connector=connector,
                line=line,
                chat=chat,
                im_chat_id=im_chat,
                im_message_id=im_message,
                user_id=text(item, "message", "user_id"),
                text=text(item, "message", "text") or "",
                files=tuple(files),
            )
        )
    if not out:
        raise EventInvalid("the event carries no MESSAGES")
    return out


def dialog_finishes(fields: dict[str, Any]) -> list[DialogFinish]:
    data = fields.get("data")
    if not isinstance(data, dict):
        raise EventInvalid("the event has no data")
    out = []
    for item in _list(data.get("DATA")):
        chat = text(item, "connector", "chat_id") or text(item, "chat", "id")
        if chat:
            out.append(DialogFinish(chat, text(item, "session", "id")))
    return out
