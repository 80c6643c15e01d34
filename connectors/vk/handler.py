"""What a verified Callback API event becomes: parse, name the customer, accept.

Handling is idempotent (the external ids are VK's object ids), so an event handled again
after a crash, or repeated by VK, replays instead of making a second lead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import orjson

from connectors.vk import parse
from connectors.vk.api import VkError
from connectors.vk.envelope import Envelope
from connectors.vk.metrics import VkMetrics
from connectors.vk.names import NameCache
from connectors.vk.settings import CommunitySettings
from gateway.models import LeadEvent, Outcome
from gateway.pipeline import Pipeline

log = logging.getLogger(__name__)

CHANNEL = "vk"


class Handled(StrEnum):
    ACCEPTED = "accepted"  # stored as an event (a lead, or on one)
    DUPLICATE = "duplicate"  # the same object came before (a VK retry, the catch-up)
    IGNORED = "ignored"  # a type we do not take, or switched off, or not a customer's
    INVALID = "invalid"  # authentic, unreadable: kept in quarantine


@dataclass(frozen=True, slots=True)
class Community:
    """A configured community as the handlers use it."""

    settings: CommunitySettings
    names: NameCache

    @property
    def key(self) -> str:
        return str(self.settings.group_id)


# user id fields of the objects whose author is looked up by name
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
        clock: Callable[[], datetime],
    ) -> None:
        self.pipeline = pipeline
        self.metrics = metrics
        self.region = region
        self.clock = clock

    async def name_of(
        self, community: Community, user_id: int | None, wait: float | None
    ) -> str | None:
        """The user's name, or None when VK cannot tell in time: an unnamed lead is better
        than a late one (the handle still identifies the person)."""
        if user_id is None or user_id <= 0:
            return None
        try:
            if wait is None:
                return await community.names.name(user_id)
            return await asyncio.wait_for(community.names.name(user_id), wait)
        except (VkError, TimeoutError) as exc:
            log.info("vk %s: no name for a user: %s", community.key, exc)
            return None

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
            case "lead_forms_new" if s.lead_forms:
                return parse.parse_lead_form(obj, region=self.region, name=name, **common)
            case "wall_reply_new" if s.wall_replies != "off":
                return parse.parse_wall_reply(
                    obj,
                    region=self.region,
                    creates_lead=s.wall_replies == "lead",
                    name=name,
                    **common,
                )
            case "market_order_new" if s.market_orders:
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

    async def handle(
        self,
        community: Community,
        envelope: Envelope,
        *,
        received_at: datetime | None = None,
        name_wait: float | None = None,
    ) -> Handled:
        received_at = received_at or self.clock()
        if envelope.type not in _AUTHOR:
            return self._count(community, envelope, Handled.IGNORED)
        author = envelope.object.get(_AUTHOR[envelope.type])
        user_id = author if isinstance(author, int) and not isinstance(author, bool) else None
        if envelope.type == "lead_forms_new" and _typed_name(envelope.object):
            user_id = None  # the form's own answers name the person
        try:
            # Parsed once before the lookup: an unreadable object costs no API call.
            if self.parse(community, envelope, received_at, None) is None:
                return self._count(community, envelope, Handled.IGNORED)
            name = await self.name_of(community, user_id, name_wait)
            event = self.parse(community, envelope, received_at, name)
        except parse.ObjectInvalid as exc:
            await self.quarantine(community, envelope, str(exc))
            return self._count(community, envelope, Handled.INVALID)
        assert event is not None
        receipt = await self.pipeline.accept(event)
        result = Handled.DUPLICATE if receipt.outcome is Outcome.REPLAYED else Handled.ACCEPTED
        return self._count(community, envelope, result)

    async def quarantine(self, community: Community, envelope: Envelope, reason: str) -> None:
        body = orjson.dumps(
            {
                "type": envelope.type,
                "group_id": envelope.group_id,
                "event_id": envelope.event_id,
                "v": envelope.version,
                "object": envelope.object,
            }
        )
        await self.pipeline.quarantine(CHANNEL, f"{envelope.type}: {reason}", body)
        log.warning(
            "vk %s: unreadable %s kept in quarantine: %s", community.key, envelope.type, reason
        )

    def _count(self, community: Community, envelope: Envelope, result: Handled) -> Handled:
        self.metrics.event(community.key, envelope.type, result.value)
        return result


def _typed_name(obj: Mapping[str, Any]) -> bool:
    answers = obj.get("answers")
    return isinstance(answers, list) and any(
        isinstance(a, Mapping) and a.get("key") in ("first_name", "last_name") and a.get("answer")
        for a in answers
    )
