"""Conversations: the threads of chat channels, their messages in and out, and the contract
of a channel's message sender.

A conversation is one customer on one account of one channel (a Telegram chat with one
bot, a VK dialog with one community). Every inbound message is a LeadEvent carrying a
`ThreadRef`; the store finds or opens the conversation in the same transaction as the
event and keeps the message as a transcript line. Outbound messages (the after-hours
answer, a greeting, a seller's reply) are transcript lines too, each with an outbox row of
kind `message.out` that the message worker hands to the channel's `MessageSender`.

Plain data and protocols only: the store, the pipeline and the workers import this.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from pydantic import BaseModel, ConfigDict

from gateway.models import Attachment, Channel

# Who wrote a line: the customer, the gateway itself, or a person ("seller:<id>",
# "crm:<user>", "admin:<token name>").
CUSTOMER = "customer"
AUTO = "auto"


class Direction(StrEnum):
    IN = "in"  # from the customer
    OUT = "out"  # to the customer


class MessageStatus(StrEnum):
    RECEIVED = "received"  # an inbound message
    QUEUED = "queued"  # outbound, waiting for its sender
    SENT = "sent"  # the vendor took it (external_id is its id there)
    RETRYING = "retrying"  # a try failed for a passing reason; it is tried again
    # Final: the vendor will not take it (the customer blocked the bot, the reply window
    # closed, the chat is gone) or we gave up; status_reason says why in the vendor's words.
    UNDELIVERABLE = "undeliverable"
    # Final: a send may have reached the vendor but no answer said so (the request went
    # out and timed out or lost its connection, or a crash came mid-send), on a channel
    # without an idempotency key: repeating it could reach the customer twice, so it is
    # not repeated; status_reason says what happened. A person may send it again.
    UNCONFIRMED = "unconfirmed"


FINAL = (MessageStatus.SENT, MessageStatus.UNDELIVERABLE, MessageStatus.UNCONFIRMED)


class _Own(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Conversation(_Own):
    """One thread: (channel, account, chat) is unique."""

    id: str
    channel: Channel
    account: str
    chat: str
    # The lead the latest inbound message joined (None: its events made no lead).
    lead_id: str | None = None
    handle: str | None = None  # the customer's handle on the channel ("tg:123")
    locale: str | None = None  # the customer's language, as the vendor last told it
    created_at: datetime
    last_inbound_at: datetime | None = None
    last_outbound_at: datetime | None = None
    # The opening moment (next_open_at) of the closed period whose automatic answer this
    # conversation already got: one answer per conversation per closed period.
    auto_answered_for: datetime | None = None


class ChatMessage(_Own):
    """One transcript line."""

    id: str  # an inbound line has its event's id
    conversation_id: str
    lead_id: str | None
    direction: Direction
    author: str  # CUSTOMER, AUTO, "seller:<id>", "crm:<user>", "admin:<token>"
    text: str | None = None
    attachments: tuple[Attachment, ...] = ()
    at: datetime  # inbound: when the customer sent it; outbound: when it was queued
    status: MessageStatus
    status_reason: str | None = None  # the vendor's words for a failure
    external_id: str | None = None  # the vendor's message id (outbound: once sent)
    edited_at: datetime | None = None
    ask_phone: bool = False  # outbound: offers a button to share the phone


@dataclass(frozen=True, slots=True)
class Transcript:
    """A lead's conversations and their lines on this lead, in the order stored."""

    conversations: tuple[Conversation, ...] = ()
    messages: tuple[ChatMessage, ...] = ()


@dataclass(frozen=True, slots=True)
class MessageView:
    message: ChatMessage
    conversation: Conversation


class NoSuchLead(LookupError):
    """queue_message: there is no lead with that id."""


class NoConversation(LookupError):
    """queue_message: the lead has no conversation to answer in (it came by phone or a
    form), or the conversation named is not one of the lead's."""


# --- sending ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    """What a sender gets for one queued message."""

    message_id: str  # our ULID: a vendor with idempotency keys derives its key from it
    channel: Channel
    account: str
    chat: str
    text: str
    author: str
    ask_phone: bool = False
    locale: str | None = None  # the customer's language (for button labels)
    # When the customer last wrote: platforms with a reply window (Meta: 24 h) need it.
    last_inbound_at: datetime | None = None
    # An earlier try may have reached the vendor (a crash came before its outcome was kept).
    attempted: bool = False


class SendStatus(StrEnum):
    SENT = "sent"
    RETRY = "retry"  # a passing failure (rate limit, the vendor is down): try again later
    UNDELIVERABLE = "undeliverable"  # the vendor will never take it: final, with its reason
    HALT = "halt"  # our credentials were refused: stop sending for this account, alert
    # The request went out and no answer came (a timeout, the connection dropped): the
    # vendor may have taken it. Repeated only by an idempotent sender; else `unconfirmed`.
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class SendResult:
    status: SendStatus
    external_id: str | None = None  # the vendor's message id, when sent
    reason: str | None = None  # the vendor's words, for anything but sent
    retry_after: float | None = None  # seconds the vendor asked us to wait


class MessageSender(Protocol):
    """A channel's way of sending messages; the connector registers one per channel.

    `send` never raises for a vendor's answer: it maps it to a SendResult. A failure that
    proves nothing left (no connection could be made) is RETRY; one after the request went
    out is UNKNOWN (gateway.delivery.http_session.request_may_have_arrived tells them
    apart). An exception is taken as UNKNOWN: nobody can say what it left undone."""

    # The longest text the channel takes in one message (Telegram: 4096): longer replies
    # are refused with 422 before they are queued.
    max_text: int
    # True when the vendor deduplicates a repeated send itself (VK's random_id): then a
    # send whose outcome is unknown (no answer, a crash mid-send) is simply repeated.
    # False (Telegram, Meta): a repeat could reach the customer twice, so such a send is
    # not repeated; it ends `unconfirmed`, whoever wrote it.
    idempotent: bool

    async def send(self, message: OutboundMessage) -> SendResult: ...
