"""accept(): the only way an event reaches the store. Connectors call it; nothing else writes.

Steps: replay check -> calendar -> identity and dedup -> screen -> assignment -> persist.
The replay check, the person lookup, the round-robin pick and the write are the store's
atomic record(). Everything decided here is data (DESIGN "Decisions are data"): what does not
depend on the store is computed once, before record(), and the planner handed to the store
is a pure function of its match, so a store may run it again (an optimistic retry) and get
the same lead id and the same assignment request. Side effects (metrics) happen once, after
record() returned, from what the store reports it stored.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import NamedTuple
from zoneinfo import ZoneInfo

from gateway.assign import Assignment, Roster, SellerSettings
from gateway.calendar import BusinessCalendar, Classification
from gateway.chat_settings import ConversationSettings
from gateway.chats import Chats
from gateway.conversations import AUTO, Transcript
from gateway.identity import identity_keys
from gateway.inbox import Inbox
from gateway.metrics import Metrics
from gateway.models import Lead, LeadEvent, LeadStatus, Outcome, Receipt, new_id
from gateway.rawpayload import bound_raw
from gateway.screen import Screen
from gateway.store.base import (
    Answer,
    PersonMatch,
    Plan,
    PlanAction,
    Planner,
    Quarantined,
    Store,
)
from gateway.textsafe import storable

log = logging.getLogger(__name__)


class Accepted(NamedTuple):
    """A receipt plus what was decided, for connectors that answer with more than 2xx."""

    receipt: Receipt
    classification: Classification
    assignment: Assignment | None


class Pipeline:
    def __init__(
        self,
        *,
        store: Store,
        calendar: BusinessCalendar,
        roster: Roster,
        screen: Screen,
        sources: dict[str, str],
        dedup_window: timedelta,
        metrics: Metrics,
        chats: Chats | None = None,
        mirror_chats: bool = False,
    ) -> None:
        self.store = store
        self.calendar = calendar
        self.roster = roster
        self.screen = screen
        self.sources = sources
        self.dedup_window = dedup_window
        self.metrics = metrics
        # Chat channels: their senders and after-hours policy; the inbox of push input.
        self.chats = chats or Chats(ConversationSettings(), calendar.settings.timezone)
        self.inbox = Inbox(store)
        # A customer's chat messages are also copied to the CRM's chat (Open Lines).
        self.mirror_chats = mirror_chats
        self._on_commit: list[Callable[[], None]] = []

    def on_commit(self, callback: Callable[[], None]) -> None:
        """Called after a lead was created or joined, once it is committed (the outbox
        worker wakes: the lead's delivery starts now, not at its next poll)."""
        self._on_commit.append(callback)

    async def accept(self, event: LeadEvent, checkpoint: tuple[str, str] | None = None) -> Receipt:
        return (await self.accept_detailed(event, checkpoint)).receipt

    async def accept_detailed(
        self, event: LeadEvent, checkpoint: tuple[str, str] | None = None
    ) -> Accepted:
        """Like accept(), plus the calendar verdict and assignment (for connectors that steer
        the sender: a PBX routing the call, an auto-reply saying when we open)."""
        channel = event.channel.value
        if event.raw is not None and (raw := bound_raw(event.raw)) is not event.raw:
            # Kept for audit, not for work: cut to size here, the one door, for every channel.
            event = event.model_copy(update={"raw": raw})
        event = self.screen.without_own_phones(event)
        try:
            classification = self.calendar.classify(event.occurred_at, channel)
        except (ValueError, OverflowError):
            # A sender's clock far outside the calendar's range (year 9999 in a mail's Date):
            # judge the event by when we received it rather than refuse it.
            classification = self.calendar.classify(event.received_at, channel)
        keys = identity_keys(event.contact)
        junk = self.screen.reason(event)
        try:
            since = event.occurred_at - self.dedup_window
        except OverflowError:  # a sender's clock near year 1: nothing can be that old
            since = datetime.min.replace(tzinfo=UTC)
        planner = self._planner(event, classification, junk)
        recorded = await self.store.record(event, keys, since, planner, checkpoint)
        receipt = recorded.receipt
        self.metrics.event(channel, receipt.outcome)  # a StrEnum: its value, without .value
        mirrored = (
            self.mirror_chats
            and event.thread is not None
            and receipt.outcome is not Outcome.REPLAYED
        )
        if recorded.messages or mirrored:
            self.chats.queued()  # the workers look now, not at their next poll
        if receipt.outcome is Outcome.CREATED or receipt.outcome is Outcome.MERGED:
            for callback in self._on_commit:
                callback()
        if receipt.outcome is not Outcome.REPLAYED:
            if classification.after_hours:
                self.metrics.count(self.metrics.after_hours, channel)
            if receipt.outcome is Outcome.CREATED:
                if junk is not None:
                    self.metrics.count(self.metrics.junk, junk.split(":", 1)[0])
                elif recorded.assignment is not None and recorded.assignment.seller_id is None:
                    self.metrics.unassigned.inc()
        return Accepted(receipt, classification, recorded.assignment)

    def _planner(self, event: LeadEvent, cls: Classification, junk: str | None) -> Planner:
        """The decision for `event` as a pure function of what the store knows of the person.

        The new lead (its id included) and the assignment request are made here, once: a
        planner that made them itself would hand a retrying store a new id on every attempt.
        """
        # Only a customer's own contact asks for a reaction, not our outgoing call.
        sla_due_at = cls.sla_due_at if event.creates_lead else None
        # A contact that may only join a lead (our outgoing call) makes none, unless junk.
        creates = event.creates_lead or junk is not None
        lead = self._new_lead(event, cls, junk) if creates else None
        # The seller is chosen for when the lead will be worked, not when it arrived — and
        # never before we had it: a late event (a call notification retried a day on, a
        # mailbox catching up) is worked from now, by who is on duty now.
        request = (
            self.roster.request(max(cls.next_open_at or event.occurred_at, event.received_at))
            if lead is not None and junk is None
            else None
        )
        sticky = self.roster.sticky
        greeting, after_hours = self._answers(event, cls, junk)
        period = cls.next_open_at
        # What a seller should see in the CRM's chat: the customer's own messages, not our
        # echoes or a bot's, not spam, and an edit only as the line it makes when its
        # original was never seen.
        mirror = (
            self.mirror_chats and event.thread is not None and event.creates_lead and junk is None
        )

        def plan(match: PersonMatch) -> Plan:
            answers: tuple[Answer, ...] = () if greeting is None else (greeting,)
            answered_for = None
            conversation = match.conversation
            # One after-hours answer per conversation per closed period: a customer who
            # writes five times on Saturday night hears it once, and again next weekend.
            if after_hours is not None and (
                conversation is None or conversation.auto_answered_for != period
            ):
                answers += (after_hours,)
                answered_for = period
            # Spam never joins a real lead: a bot typing a customer's phone must not
            # bury the customer's own request under junk.
            if match.lead_id is not None and junk is None:
                return Plan(
                    PlanAction.MERGE,
                    lead_id=match.lead_id,
                    matched_on=match.matched_on,
                    sla_due_at=sla_due_at,
                    answers=answers,
                    answered_for=answered_for,
                    mirror=mirror,
                )
            if lead is None:
                return Plan(
                    PlanAction.KEEP, answers=answers, answered_for=answered_for, mirror=mirror
                )
            return Plan(
                PlanAction.CREATE,
                lead=lead,
                assignment=None if request is None else sticky(request, match.previous_owner),
                answers=answers,
                answered_for=answered_for,
                mirror=mirror,
            )

        return plan

    def _answers(
        self, event: LeadEvent, cls: Classification, junk: str | None
    ) -> tuple[Answer | None, Answer | None]:
        """The connector's automatic answer (a greeting) and the after-hours answer this
        chat message may get, made once (their ids too) before the store decides."""
        thread = event.thread
        if thread is None:
            return None, None
        greeting = None
        if event.answer is not None and junk is None:
            greeting = Answer(new_id(), event.answer.text, AUTO, event.answer.ask_phone)
        # Only a customer's own new message is answered: not an edit, not our echo or a
        # bot's (connectors mark those creates_lead=False), not spam, and not one read
        # so late (a backlog after an outage) that we are open again by now.
        if (
            not cls.after_hours
            or cls.next_open_at is None
            or cls.next_open_at <= event.received_at
            or not event.creates_lead
            or event.edits is not None
            or junk is not None
        ):
            return greeting, None
        text = self.chats.after_hours_text(
            event.channel, thread.account, thread.locale, cls.next_open_at, event.received_at
        )
        return greeting, None if text is None else Answer(new_id(), text, AUTO)

    def _new_lead(self, event: LeadEvent, cls: Classification, junk: str | None) -> Lead:
        """The lead this event would create, without its seller (the store sets it)."""
        now = event.received_at
        return Lead(
            id=new_id(),
            status=LeadStatus.JUNK if junk else LeadStatus.NEW,
            channel=event.channel,
            source_id=self.sources.get(event.channel.value, "OTHER"),
            contact=event.contact,
            interest=event.interest,
            after_hours=cls.after_hours,
            after_hours_reason=cls.reason,
            next_open_at=cls.next_open_at,
            sla_due_at=cls.sla_due_at,
            junk_reason=junk,
            created_at=now,
            updated_at=now,
            last_event_at=event.occurred_at,
        )

    # --- what connectors may ask besides accept() ----------------------------------------
    # Narrow questions the pipeline answers, so a connector never holds the store, the
    # calendar or the roster itself (DESIGN: connectors only turn input into events).

    @property
    def tz(self) -> ZoneInfo:
        return self.calendar.tz

    def classify(self, at: datetime, channel: str | None = None) -> Classification:
        return self.calendar.classify(at, channel)

    def open_until(self, at: datetime, channel: str | None = None) -> datetime | None:
        """End of the working window `at` falls in, None when closed: when something shown
        only in working time (the site widget) must switch off."""
        return self.calendar.open_until(at, channel)

    def spam_reason(self, event: LeadEvent) -> str | None:
        return self.screen.reason(event)

    def is_blocked_phone(self, phone: str) -> bool:
        return self.screen.is_blocked_phone(phone)

    async def lead(self, lead_id: str) -> Lead | None:
        return await self.store.get_lead(lead_id)

    async def transcript(self, lead_id: str) -> Transcript:
        """A lead's conversations and their lines (a chat page showing its history)."""
        return await self.store.transcript(lead_id)

    def seller(self, seller_id: str) -> SellerSettings | None:
        return self.roster.seller(seller_id)

    async def get_checkpoint(self, name: str) -> str | None:
        """A connector's durable memo: a poller position, who answered a call, ..."""
        return await self.store.get_checkpoint(name)

    async def save_checkpoint(self, name: str, value: str) -> None:
        await self.store.save_checkpoint(name, value)

    async def quarantine(
        self,
        channel: str,
        reason: str,
        body: bytes,
        headers: dict[str, str] | None = None,
        checkpoint: tuple[str, str] | None = None,
    ) -> None:
        """Keep authentic input that could not become an event, for a person to inspect."""
        # Header values arrive as aiohttp decoded them: bytes that were not UTF-8 are lone
        # surrogates no JSON encoder takes. Kept as \xNN escapes instead.
        kept = {storable(k): storable(v) for k, v in (headers or {}).items()}
        await self.store.quarantine(Quarantined(channel, reason, body, kept), checkpoint)
        self.metrics.count(self.metrics.quarantined, channel)
