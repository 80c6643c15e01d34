"""The one normalized shape every channel is turned into, and what the core makes of it.

Our own models forbid extra fields (a typo is an error, not silently ignored);
vendor payload models in connectors/ allow them.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from gateway.ids import new_id as new_id  # re-exported: where models' ids come from


class Channel(StrEnum):
    WEBFORM = "webform"
    ORDERS = "orders"
    CHAT = "chat"
    CALLBACK = "callback"
    PHONE = "phone"
    EMAIL = "email"
    VK = "vk"
    FACEBOOK = "facebook"
    INSTAGRAM = "instagram"
    TELEGRAM = "telegram"


class EquipmentCategory(StrEnum):
    """The spec's list field «Какой категорией оборудования интересовался»."""

    LARGE = "Крупное"
    SMALL = "Мелкое"


class LeadStatus(StrEnum):
    """The gateway only ever sets NEW or JUNK; the CRM moves leads on from there."""

    NEW = "NEW"
    JUNK = "JUNK"


class Outcome(StrEnum):
    CREATED = "created"
    MERGED = "merged"
    REPLAYED = "replayed"
    KEPT = "kept"  # stored on no lead: e.g. an outgoing call from someone with no open lead


class _Own(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# Phones, emails and handles a lead's contact gathers from merged events, each at most.
MAX_PER_KIND = 20


class Contact(_Own):
    """Who reached out. Phones are E.164, emails normalized (see gateway.identity)."""

    name: str | None = None
    phones: tuple[str, ...] = ()
    emails: tuple[str, ...] = ()
    company: str | None = None
    handles: tuple[str, ...] = ()  # "vk:123", "tg:456", "fb:PSID"

    def merged_with(self, other: Contact) -> Contact:
        """This contact enriched by a later one: first known name/company wins, lists union,
        each list at most MAX_PER_KIND (the first ones: a lead must not grow with every post
        of someone typing a new address each time)."""

        def union(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, ...]:
            if len(a) >= MAX_PER_KIND:
                return a
            return (a + tuple(x for x in b if x not in a))[:MAX_PER_KIND]

        return Contact(
            name=self.name or other.name,
            phones=union(self.phones, other.phones),
            emails=union(self.emails, other.emails),
            company=self.company or other.company,
            handles=union(self.handles, other.handles),
        )


class Interest(_Own):
    equipment_category: EquipmentCategory | None = None
    probable_equipment: str | None = None  # «Вероятное оборудование к покупке и его цена»

    def merged_with(self, other: Interest) -> Interest:
        """What a later contact adds: it fills what is unknown, never overwrites a seller's
        earlier picture (an order's cart joins a form lead that named no equipment)."""
        return Interest(
            equipment_category=self.equipment_category or other.equipment_category,
            probable_equipment=self.probable_equipment or other.probable_equipment,
        )


class Attachment(_Own):
    name: str | None = None
    content_type: str | None = None
    size: int | None = None
    url: str | None = None
    # The channel's own handle on the file, to fetch it later (a Telegram file_id); the
    # bytes stay with the vendor until someone asks for them.
    ref: str | None = None
    kind: str | None = None  # what the channel calls it: "photo", "document", "voice", ...


class ThreadRef(_Own):
    """Which conversation a chat message belongs to, with its channel: one thread per
    (channel, account, chat). `account` is ours (a bot's name, a VK community, a page),
    `chat` the vendor's id of the customer's chat (Telegram chat id, VK peer_id, PSID)."""

    account: str = Field(min_length=1, max_length=200)
    chat: str = Field(min_length=1, max_length=200)
    # The customer's language as the vendor tells it ("ru", "en-US"): automatic answers
    # are written in it when a catalog exists.
    locale: str | None = Field(None, max_length=35)


class AutoAnswer(_Own):
    """An answer the connector wants sent back in the thread with its event (a /start
    greeting). It is stored with the event, so it goes out once, replays included."""

    text: str = Field(min_length=1, max_length=4096)
    # Offer the customer a button to share their phone, where the channel has one.
    ask_phone: bool = False


class LeadEvent(_Own):
    """One inbound contact attempt, whatever channel it came by.

    (channel, external_id) is the idempotency key: the same sender id twice is one event.
    """

    id: str = Field(default_factory=new_id)
    channel: Channel
    external_id: str = Field(min_length=1, max_length=512)
    # A client-chosen retry key (Idempotency-Key header), replay-checked beside external_id.
    idempotency_key: str | None = Field(None, min_length=1, max_length=255)
    occurred_at: datetime
    received_at: datetime
    contact: Contact = Contact()
    text: str | None = None
    interest: Interest = Interest()
    utm: dict[str, str] = Field(default_factory=dict)
    attachments: tuple[Attachment, ...] = ()
    # Where inside the channel it came from: form id, mailbox, token name, phone line.
    source_detail: str | None = None
    # Channel facts the core passes through without knowing them (call duration, answered_by,
    # missed, recording links). Names are the connector's, never a vendor's raw field names.
    meta: dict[str, Any] = Field(default_factory=dict)
    # False for contacts that may only be attached to an existing lead (outgoing calls).
    creates_lead: bool = True
    # Set by a connector that already knows this is spam (honeypot, rate limit).
    junk_reason: str | None = None
    # Sender ids of earlier events this one answers (email In-Reply-To/References): a reply
    # joins the lead of the message it answers, whatever the dedup window.
    replies_to: tuple[str, ...] = ()
    # Chat channels: the conversation this message belongs to (None: not a chat message).
    thread: ThreadRef | None = None
    # The sender id (external_id) of the chat message this event edits: the transcript
    # shows the edited text on that message's line.
    edits: str | None = None
    answer: AutoAnswer | None = None
    raw: dict[str, Any] | None = None  # the vendor payload, kept for audit


class Receipt(_Own):
    event_id: str
    lead_id: str | None  # None when the event was kept but made no lead (outgoing call, no match)
    outcome: Outcome


class EventRecord(_Own):
    """An event as stored on its lead, with the decisions taken about it."""

    id: str
    channel: Channel
    external_id: str
    occurred_at: datetime
    received_at: datetime
    outcome: Outcome
    matched_on: str | None = None
    text: str | None = None
    contact: Contact = Contact()
    source_detail: str | None = None
    meta: dict[str, Any] = Field(default_factory=dict)
    attachments: tuple[Attachment, ...] = ()
    utm: dict[str, str] = Field(default_factory=dict)
    thread: ThreadRef | None = None


class Lead(_Own):
    id: str
    status: LeadStatus
    channel: Channel
    source_id: str
    contact: Contact
    interest: Interest = Interest()
    assigned_to: str | None = None
    assignment_reason: str | None = None
    after_hours: bool
    after_hours_reason: str | None = None
    next_open_at: datetime | None = None
    sla_due_at: datetime
    junk_reason: str | None = None
    created_at: datetime
    updated_at: datetime
    last_event_at: datetime
    events: tuple[EventRecord, ...] = ()
