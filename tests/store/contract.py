"""Helpers for the store contract tests: events, planners shaped like the pipeline's, and
assignment requests. Nothing here knows which store it talks to."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway.assign import AssignmentRequest
from gateway.identity import identity_keys
from gateway.models import Channel, Contact, Lead, LeadEvent, LeadStatus, new_id
from gateway.store.base import PersonMatch, Plan, PlanAction, Planner, Recorded, Store

T0 = datetime(2026, 1, 13, 9, 0, tzinfo=UTC)  # a Tuesday
SINCE = T0 - timedelta(days=30)  # the dedup window's start for events at T0


def make_event(
    external_id: str,
    *,
    phone: str | None = None,
    email: str | None = None,
    handle: str | None = None,
    channel: Channel = Channel.WEBFORM,
    at: datetime = T0,
    received_at: datetime | None = None,
    idempotency_key: str | None = None,
    replies_to: tuple[str, ...] = (),
    creates_lead: bool = True,
) -> LeadEvent:
    return LeadEvent(
        channel=channel,
        external_id=external_id,
        idempotency_key=idempotency_key,
        occurred_at=at,
        received_at=received_at or at,
        contact=Contact(
            name=f"Клиент {external_id}",
            phones=(phone,) if phone else (),
            emails=(email,) if email else (),
            handles=(handle,) if handle else (),
        ),
        text=f"обращение {external_id}",
        replies_to=replies_to,
        creates_lead=creates_lead,
    )


def rr(*candidates: str, at: datetime = T0, sticky_owner: str | None = None) -> AssignmentRequest:
    """A round-robin request among `candidates` for the local (UTC) day of `at`."""
    return AssignmentRequest(
        day=at.astimezone(UTC).date(),
        tz=UTC,
        candidates=candidates,
        strategy="round_robin",
        reason="round_robin" if candidates else "no active sellers configured",
        sticky_owner=sticky_owner,
    )


def planner(
    event: LeadEvent,
    *,
    assignment: AssignmentRequest | None = None,
    junk: bool = False,
    seen: list[PersonMatch] | None = None,
) -> Planner:
    """The pipeline's rules in small: junk always makes its own JUNK lead; a match is joined;
    a contact that may not create a lead is kept; else a new lead with `assignment`. The new
    lead is made once, outside the planner, as the pipeline does."""
    lead = Lead(
        id=new_id(),
        status=LeadStatus.JUNK if junk else LeadStatus.NEW,
        channel=event.channel,
        source_id="WEBFORM",
        contact=event.contact,
        after_hours=False,
        sla_due_at=event.occurred_at + timedelta(minutes=15),
        junk_reason="honeypot" if junk else None,
        created_at=event.received_at,
        updated_at=event.received_at,
        last_event_at=event.occurred_at,
    )

    def plan(match: PersonMatch) -> Plan:
        if seen is not None:
            seen.append(match)
        if match.lead_id is not None and not junk:
            return Plan(PlanAction.MERGE, lead_id=match.lead_id, matched_on=match.matched_on)
        if not event.creates_lead and not junk:
            return Plan(PlanAction.KEEP)
        return Plan(PlanAction.CREATE, lead=lead, assignment=None if junk else assignment)

    return plan


async def record(
    store: Store,
    event: LeadEvent,
    *,
    since: datetime = SINCE,
    checkpoint: tuple[str, str] | None = None,
    **kw: object,
) -> Recorded:
    plan = planner(event, **kw)  # type: ignore[arg-type]
    return await store.record(event, identity_keys(event.contact), since, plan, checkpoint)
