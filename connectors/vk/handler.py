"""What a stored Callback API event becomes: parse, name the customer, accept.

The route keeps the event in the inbox and answers VK `ok`; the inbox worker then calls
`handle_item`, after the answer, so neither VK's API (names) nor the store's speed holds
up the answer VK waits for. Handling is idempotent (the external ids are VK's object
ids): an event handled again after a crash, or repeated by VK, replays and makes nothing
new.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import orjson

from connectors.vk import parse
from connectors.vk.api import VkError
from connectors.vk.envelope import Envelope, EnvelopeInvalid, read_envelope
from connectors.vk.messages import message_event, read_message
from connectors.vk.metrics import VkMetrics
from connectors.vk.names import NameCache
from connectors.vk.settings import CommunitySettings
from gateway.inbox import InboxItem, Unprocessable
from gateway.models import LeadEvent, Outcome
from gateway.pipeline import Pipeline

log = logging.getLogger(__name__)

CHANNEL = "vk"


class Handled(StrEnum):
    ACCEPTED = "accepted"  # stored as an event (a lead, a message, or on one)
    REPLAYED = "replayed"  # the same object came before (through the catch-up, say)
    IGNORED = "ignored"  # switched off, or not a customer's (a group chat, a community)
    INVALID = "invalid"  # authentic, unreadable: dead in the inbox, for a person


@dataclass(frozen=True, slots=True)
class Community:
    """A configured community as the handlers use it."""

    settings: CommunitySettings
    names: NameCache

    @property
    def key(self) -> str:
        return str(self.settings.group_id)


def taken(settings: CommunitySettings, kind: str) -> bool:
    """Does this community turn events of `kind` into anything? Others are answered `ok`
    and not stored at all."""
    match kind:
        case "message_new" | "message_edit":
            return settings.messages
        case "lead_forms_new":
            return settings.lead_forms
        case "wall_reply_new":
            return settings.wall_replies != "off"
        case "market_order_new":
            return settings.market_orders
        case "message_allow" | "message_deny":
            return True
    return False


# The field of each object that names its author (looked up with users.get).
_AUTHOR = {
    "wall_reply_new": "from_id",
    "market_order_new": "user_id",
    "message_allow": "user_id",
    "message_deny": "user_id",
    "lead_forms_new": "user_id",
}


class EventHandler:
    def __init__(
        self,
        *,
        pipeline: Pipeline,
        metrics: VkMetrics,
        region: str,
        communities: Mapping[int, Community],
        clock: Callable[[], datetime],
    ) -> None:
        self.pipeline = pipeline
        self.metrics = metrics
        self.region = region
        self.communities = communities
        self.clock = clock

    async def name_of(self, community: Community, user_id: int | None) -> str | None:
        """The user's name, or None when VK cannot tell: an unnamed lead is better than a
        lost or late one (the handle still identifies the person)."""
        if user_id is None or user_id <= 0:
            return None
        try:
            return await community.names.name(user_id)
        except VkError as exc:
            log.info("vk %s: no name for a user: %s", community.key, exc)
            return None

    async def handle_item(self, item: InboxItem) -> None:
        """The inbox worker's entry point (registered for channel "vk")."""
        community = self.communities.get(int(item.account)) if item.account.isdigit() else None
        if community is None:
            raise Unprocessable(f"VK community {item.account} is not configured (any more)")
        try:
            data = orjson.loads(item.body)
            envelope = read_envelope(data if isinstance(data, dict) else {})
        except (orjson.JSONDecodeError, EnvelopeInvalid) as exc:
            raise Unprocessable(f"not a VK event: {exc}") from None
        try:
            await self.handle(community, envelope, received_at=item.received_at)
        except parse.ObjectInvalid as exc:
            raise Unprocessable(f"{envelope.type}: {exc}") from None

    async def handle(
        self, community: Community, envelope: Envelope, *, received_at: datetime | None = None
    ) -> Handled:
        """Accept what the event says; parse.ObjectInvalid when its object is unreadable."""
        received_at = received_at or self.clock()
        try:
            event = await self._event(community, envelope, received_at)
        except parse.ObjectInvalid as exc:
            log.warning("vk %s: unreadable %s: %s", community.key, envelope.type, exc)
            self._count(community, envelope, Handled.INVALID)
            raise
        if event is None:
            return self._count(community, envelope, Handled.IGNORED)
        receipt = await self.pipeline.accept(event)
        result = Handled.REPLAYED if receipt.outcome is Outcome.REPLAYED else Handled.ACCEPTED
        return self._count(community, envelope, result)

    async def _event(
        self, community: Community, envelope: Envelope, received_at: datetime
    ) -> LeadEvent | None:
        if not taken(community.settings, envelope.type):
            return None
        if envelope.type in ("message_new", "message_edit"):
            return await self._message(community, envelope, received_at)
        # Parsed once before the lookup: an unreadable object costs no API call.
        if self.parse(community, envelope, received_at, None) is None:
            return None
        author = envelope.object.get(_AUTHOR[envelope.type])
        user_id = author if isinstance(author, int) and not isinstance(author, bool) else None
        if envelope.type == "lead_forms_new" and _typed_name(envelope.object):
            user_id = None  # the form's own answers name the person
        return self.parse(community, envelope, received_at, await self.name_of(community, user_id))

    async def _message(
        self, community: Community, envelope: Envelope, received_at: datetime
    ) -> LeadEvent | None:
        msg = read_message(envelope.object)
        if msg is None:
            raise parse.ObjectInvalid("no message with peer_id, from_id, conversation_message_id")
        if not msg.from_customer:
            return None  # the community's own, another bot's, or a group chat's talk
        edit = None
        if envelope.type == "message_edit":
            edit = str(msg.update_time) if msg.update_time else envelope.key
        return message_event(
            msg,
            group_id=community.settings.group_id,
            community=community.settings.label,
            received_at=received_at,
            region=self.region,
            name=await self.name_of(community, msg.from_id),
            edit_key=edit,
        )

    def parse(
        self, community: Community, envelope: Envelope, received_at: datetime, name: str | None
    ) -> LeadEvent | None:
        """The event's LeadEvent, None when it is not taken; ObjectInvalid when unreadable."""
        s = community.settings
        obj = envelope.object
        common: dict[str, Any] = {
            "group_id": s.group_id,
            "community": s.label,
            "received_at": received_at,
        }
        match envelope.type:
            case "lead_forms_new":
                return parse.parse_lead_form(obj, region=self.region, name=name, **common)
            case "wall_reply_new":
                return parse.parse_wall_reply(
                    obj,
                    region=self.region,
                    creates_lead=s.wall_replies == "lead",
                    name=name,
                    **common,
                )
            case "market_order_new":
                return parse.parse_market_order(obj, name=name, **common)
            case "message_allow" | "message_deny":
                return parse.parse_messages_permission(
                    obj,
                    allowed=envelope.type == "message_allow",
                    event_key=envelope.key,
                    name=name,
                    **common,
                )
        return None

    def _count(self, community: Community, envelope: Envelope, result: Handled) -> Handled:
        self.metrics.event(community.key, envelope.type, result.value)
        return result


def _typed_name(obj: Mapping[str, Any]) -> bool:
    answers = obj.get("answers")
    return isinstance(answers, list) and any(
        isinstance(a, Mapping) and a.get("key") in ("first_name", "last_name") and a.get("answer")
        for a in answers
    )
