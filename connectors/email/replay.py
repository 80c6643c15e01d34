"""Running a quarantined message through the email connector again (gateway.quarantine)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from connectors.email.event import Origin, mail_to_event
from connectors.email.message import parse_mail
from gateway.channels import ReplayRefused
from gateway.models import LeadEvent, Receipt
from gateway.pipeline import Pipeline
from gateway.store.base import QuarantineEntry


def _uid(raw: str | None) -> int:
    try:
        return int(raw or 0)
    except ValueError:
        return 0


async def replay(
    entry: QuarantineEntry, pipeline: Pipeline, own: frozenset[str], region: str
) -> Receipt:
    headers = entry.headers
    origin = Origin(
        mailbox=headers.get("mailbox", "?"),
        folder=headers.get("folder", "?"),
        uidvalidity=0,  # not kept with the entry; the event's key is its Message-ID
        uid=_uid(headers.get("uid")),
    )
    now = datetime.now(UTC)

    def parse() -> LeadEvent:
        # Whatever verdict the parser reaches (an auto-reply, our own address): a person
        # released it, so it is taken as a customer's mail.
        mail = parse_mail(entry.body, own)
        return mail_to_event(
            mail, origin, arrived_at=entry.received_at, received_at=now, region=region
        )

    try:
        event = await asyncio.to_thread(parse)
    except Exception as exc:
        raise ReplayRefused(f"still unreadable: {type(exc).__name__}: {exc}") from None
    event = event.model_copy(update={"meta": {**event.meta, "released_from_quarantine": entry.id}})
    return await pipeline.accept(event)
