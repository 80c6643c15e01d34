"""The reads a SQLite store decision takes: has this event been seen, who is the person, and
which seller the plan's request resolves to. Committed rows come from the read connection,
uncommitted ones from the store's overlay; nothing here writes or awaits, so a decision and
the overlay update that follows it are one atomic step on the event loop.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from datetime import date, datetime
from typing import Any

from gateway.assign import Assignment
from gateway.conversations import Conversation
from gateway.models import Lead, LeadEvent
from gateway.store.base import PersonMatch, Plan, PlanAction, Planner
from gateway.store.changes import conversation_match, person_match
from gateway.store.day_counts import DayCounts
from gateway.store.sqlite_queries import (
    assigned_since,
    latest_count_day,
    replay_key,
    to_epoch,
)


class MatchMethods:
    """Mixed into SQLiteStore, which provides `_db()` and the overlay."""

    _pending_leads: dict[str, tuple[Lead, Any]]  # lead id -> (lead, its pending write)
    _pending_identities: dict[str, list[str]]
    _pending_events: dict[str, str | None]
    _counts: DayCounts
    # gateway.store.sqlite_chat.ChatMethods provides it.
    _conversation_of: Callable[[LeadEvent], Conversation | None]

    def _db(self) -> sqlite3.Connection:
        raise NotImplementedError

    def _decide(
        self, event: LeadEvent, keys: Sequence[str], since: datetime, plan: Planner
    ) -> tuple[Plan, Assignment | None, date | None]:
        """The plan and, for a create, its seller and the day it counts in. Reads only (the
        first request after opening seeds the counts, which a second call finds as it left
        them): deciding twice, as an optimistic retry would, decides the same."""
        decision = plan(self._match(event, keys, since))
        request = decision.assignment
        if decision.action is not PlanAction.CREATE or request is None:
            return decision, None, None
        assignment, day = self._counts.resolve(
            request, self._stored_assignments, event.received_at, self._latest_count_day
        )
        return decision, assignment, day

    def _stored_assignments(self, since: datetime) -> tuple[dict[str, int], int]:
        """Leads per seller counted in the day that starts at `since` (its local midnight),
        and assigned leads counted before it, committed or in the overlay: what the day in
        progress starts from after opening. Each lead's day is the one stored with it."""
        db = self._db()
        day = since.date()
        counts, earlier = assigned_since(db, day, to_epoch(since))
        for lead, item in self._pending_leads.values():
            if (
                lead.assigned_to is not None
                and db.execute("SELECT 1 FROM leads WHERE id = ?", (lead.id,)).fetchone() is None
            ):
                counted = item.counted[0] if item.counted is not None else None
                if counted == day or (counted is None and lead.created_at >= since):
                    counts[lead.assigned_to] = counts.get(lead.assigned_to, 0) + 1
                elif counted is None or counted < day:
                    earlier += 1
        return counts, earlier

    def _latest_count_day(self) -> date | None:
        stored = latest_count_day(self._db())
        pending = [
            item.counted[0] for _, item in self._pending_leads.values() if item.counted is not None
        ]
        return max([d for d in (stored, *pending) if d is not None], default=None)

    def _match(self, event: LeadEvent, keys: Sequence[str], since: datetime) -> PersonMatch:
        if event.thread is None:
            return self._match_person(event, keys, since)
        # A chat message: its conversation's lead first, while that lead is open. One
        # indexed lookup; no identity keys needed for a customer who wrote before.
        conversation = self._conversation_of(event)
        if conversation is not None and conversation.lead_id is not None:
            lead = self._load_lead(conversation.lead_id)
            if (joined := conversation_match(lead, conversation, since)) is not None:
                return joined
        return self._match_person(event, keys, since)._replace(conversation=conversation)

    def _match_person(self, event: LeadEvent, keys: Sequence[str], since: datetime) -> PersonMatch:
        for ext in event.replies_to:
            lead_id = self._lead_of_event(event.channel, ext)
            if lead_id is not None:
                return PersonMatch(lead_id=lead_id, matched_on="reply", previous_owner=None)
        if not keys:
            return PersonMatch()
        candidates: dict[str, str] = {}  # lead id -> the key kind that found it
        for key in keys:
            for lead_id in self._pending_identities.get(key, ()):
                candidates.setdefault(lead_id, key)
        marks = ",".join("?" * len(keys))
        for lead_id, key in self._db().execute(
            f"SELECT lead_id, key FROM identities WHERE key IN ({marks})", tuple(keys)
        ):
            candidates.setdefault(lead_id, key)
        if not candidates:
            return PersonMatch()
        leads = [lead for lid in candidates if (lead := self._load_lead(lid)) is not None]
        return person_match(candidates, leads, since)

    def _lead_of_event(self, channel: str, external_id: str) -> str | None:
        rk = replay_key(channel, external_id)
        if rk in self._pending_events:
            return self._pending_events[rk]
        row = (
            self._db()
            .execute(
                "SELECT e.lead_id FROM replay_keys r JOIN events e ON e.id = r.event_id"
                " WHERE r.key = ?",
                (rk,),
            )
            .fetchone()
        )
        return row[0] if row else None

    def _load_lead(self, lead_id: str) -> Lead | None:
        if (pending := self._pending_leads.get(lead_id)) is not None:
            return pending[0]
        row = self._db().execute("SELECT doc FROM leads WHERE id = ?", (lead_id,)).fetchone()
        return Lead.model_validate_json(row[0]) if row else None
