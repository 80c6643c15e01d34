"""What a decision changes, as values: whom the identity keys found, the lead a merge makes,
the event as stored, the conversation as a chat message leaves it and its transcript lines.

Pure functions shared by every Store implementation: each reads the world its own way
(SQLite's overlay, Redis under WATCH) and writes the results its own way, but what the
results are is decided once, here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from enum import StrEnum

import orjson

from gateway.assign import Assignment
from gateway.conversations import CUSTOMER, ChatMessage, Conversation, Direction, MessageStatus
from gateway.models import EventRecord, Lead, LeadEvent, LeadStatus, Outcome, new_id
from gateway.store.base import PersonMatch, Plan

_RECORD_FIELDS: set[str] = set(EventRecord.model_fields) - {"outcome", "matched_on"}


# --- the match --------------------------------------------------------------------------------


def is_open(lead: Lead, since: datetime) -> bool:
    """A lead a new contact joins: still NEW, and its last event within the window."""
    return lead.status is LeadStatus.NEW and lead.last_event_at >= since


def conversation_match(
    lead: Lead | None, conversation: Conversation, since: datetime
) -> PersonMatch | None:
    """A chat message joins its conversation's lead while that lead is open."""
    if lead is None or not is_open(lead, since):
        return None
    return PersonMatch(
        lead_id=lead.id,
        matched_on="conversation",
        previous_owner=lead.assigned_to,
        conversation=conversation,
    )


def person_match(found: Mapping[str, str], leads: Sequence[Lead], since: datetime) -> PersonMatch:
    """Given the leads the identity keys found (lead id -> the first key that found it, in
    key order), the person's open lead (the most recent) and the seller of their most
    recent real lead, whatever its age."""
    ordered = sorted(leads, key=lambda lead: lead.last_event_at, reverse=True)
    owner = next(
        (lead.assigned_to for lead in ordered if lead.status is not LeadStatus.JUNK), None
    )
    for lead in ordered:
        if is_open(lead, since):
            kind = found[lead.id].split(":", 1)[0]
            return PersonMatch(lead_id=lead.id, matched_on=kind, previous_owner=owner)
    return PersonMatch(previous_owner=owner)


# --- leads and events -------------------------------------------------------------------------


def created_lead(lead: Lead, assignment: Assignment | None) -> Lead:
    """A create's lead with the seller the store resolved (None: as the planner made it)."""
    if assignment is None:
        return lead
    return lead.model_copy(
        update={"assigned_to": assignment.seller_id, "assignment_reason": assignment.reason}
    )


def merged_lead(base: Lead, event: LeadEvent, decision: Plan) -> Lead:
    """The lead `event` joins, as it becomes: the contact and interest learnt, the last
    event moved, and the reaction deadline renewed when the earlier one had passed."""
    return base.model_copy(
        update={
            "contact": base.contact.merged_with(event.contact),
            "interest": base.interest.merged_with(event.interest),
            "updated_at": event.received_at,
            "last_event_at": max(base.last_event_at, event.occurred_at),
            "sla_due_at": (
                decision.sla_due_at
                if decision.sla_due_at is not None and base.sla_due_at < event.occurred_at
                else base.sla_due_at
            ),
        }
    )


def event_doc(event: LeadEvent, outcome: Outcome, matched_on: str | None) -> bytes:
    """The event as stored: its EventRecord and the sender's payload, as JSON straight from
    the validated event (one dump, no re-validation)."""
    record = event.model_dump(mode="json", include=_RECORD_FIELDS)
    record["outcome"] = outcome.value
    record["matched_on"] = matched_on
    return orjson.dumps({"record": record, "raw": event.raw})


# --- conversations ----------------------------------------------------------------------------


def conversation_after(
    event: LeadEvent, decision: Plan, lead_id: str | None, before: Conversation | None
) -> Conversation:
    """The chat's conversation once `event` is stored: opened (with a new id) or moved on
    (its lead, handle, locale, last inbound moment and after-hours answer)."""
    thread = event.thread
    assert thread is not None
    at = event.occurred_at
    handle = event.contact.handles[0] if event.contact.handles else None
    if before is None:
        return Conversation(
            id=new_id(),
            channel=event.channel,
            account=thread.account,
            chat=thread.chat,
            lead_id=lead_id,
            handle=handle,
            locale=thread.locale,
            created_at=event.received_at,
            last_inbound_at=at,
            auto_answered_for=decision.answered_for,
        )
    last = before.last_inbound_at
    return before.model_copy(
        update={
            "lead_id": lead_id or before.lead_id,
            "handle": before.handle or handle,
            "locale": thread.locale or before.locale,
            "last_inbound_at": at if last is None else max(last, at),
            "auto_answered_for": decision.answered_for or before.auto_answered_for,
        }
    )


class LineChange(StrEnum):
    """What a customer's chat message does to its conversation's transcript."""

    EDIT = "edit"  # rewrites the line its edit names (text, attachments, edited_at)
    # The message whose early edit already made its line: no second line, the edited text
    # stays, only the line's `at` moves back to when the customer wrote it.
    ORIGINAL = "original"
    NEW = "new"  # a line of its own (inbound_line)


def line_change(event: LeadEvent, edited_found: bool, own_found: bool) -> LineChange:
    """`edited_found`: the conversation has a line with the external id `event` edits;
    `own_found`: one with `event`'s own external id (an edit that came first made it)."""
    if event.edits is not None:
        return LineChange.EDIT if edited_found else LineChange.NEW
    return LineChange.ORIGINAL if own_found else LineChange.NEW


def inbound_line(event: LeadEvent, conversation_id: str, lead_id: str | None) -> ChatMessage:
    """The customer's message as a transcript line. An edit of a line never seen stands for
    that line (its external id is the edited one's), so a later edit finds it."""
    edited = event.edits
    return ChatMessage(
        id=event.id,
        conversation_id=conversation_id,
        lead_id=lead_id,
        direction=Direction.IN,
        author=CUSTOMER,
        text=event.text,
        attachments=event.attachments,
        at=event.occurred_at,
        status=MessageStatus.RECEIVED,
        external_id=edited or event.external_id,
        edited_at=event.occurred_at if edited is not None else None,
    )


def answer_lines(
    event: LeadEvent, decision: Plan, conversation_id: str, lead_id: str | None
) -> list[ChatMessage]:
    """The plan's automatic answers as queued outbound lines."""
    return [
        ChatMessage(
            id=answer.message_id,
            conversation_id=conversation_id,
            lead_id=lead_id,
            direction=Direction.OUT,
            author=answer.author,
            text=answer.text,
            at=event.received_at,
            status=MessageStatus.QUEUED,
            ask_phone=answer.ask_phone,
        )
        for answer in decision.answers
    ]
