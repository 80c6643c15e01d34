"""The Store protocol: what the pipeline needs from persistence, whatever backs it."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import Any, NamedTuple, Protocol

from gateway.assign import Assignment, AssignmentRequest
from gateway.conversations import (
    ChatMessage,
    Conversation,
    MessageStatus,
    MessageView,
    Transcript,
)
from gateway.inbox import InboxEntry, InboxItem, InboxState, InboxStats, InboxUpdate
from gateway.models import Channel, EventRecord, Lead, LeadEvent, LeadStatus, Receipt


class StoreUnavailable(RuntimeError):
    """A write could not be made durable; nothing in it was acknowledged. Callers answer 503
    (or back off), never 2xx."""


# The records of a decision (PersonMatch, Plan, Recorded, and assign's AssignmentRequest and
# Assignment) are NamedTuples: immutable like frozen dataclasses, and built for every event
# on the hot path at a third of a frozen dataclass's cost.


class PersonMatch(NamedTuple):
    """What the store knows of the person behind an event, found by identity keys."""

    lead_id: str | None = None  # the lead this event joins: an open one in the window, or a reply's
    matched_on: str | None = None  # "phone", "email", "vk", "reply", "conversation", ...
    previous_owner: str | None = None  # seller of the person's most recent real lead, any age
    # A chat message's conversation as stored before this event (None: a new thread, or
    # not a chat message): the planner reads whether it had its after-hours answer.
    conversation: Conversation | None = None


class Answer(NamedTuple):
    """An automatic message the plan sends back in the event's conversation. Its id is
    made once, outside the planner, so a store deciding twice queues the same message."""

    message_id: str
    text: str
    author: str
    ask_phone: bool = False


class PlanAction(StrEnum):
    CREATE = "create"  # a new lead
    MERGE = "merge"  # the event joins an existing lead
    KEEP = "keep"  # the event is stored, no lead (our outgoing call to an unknown number)


class Plan(NamedTuple):
    """The pipeline's decision for one event, taken with the match in hand: pure data.

    create: `lead` is the new lead as the pipeline built it, without its seller; the store
    resolves `assignment` (None: nobody, a junk lead) with its round-robin counts and stores
    the lead with that seller. merge: join `lead_id`. keep: store the event, make no lead.
    """

    action: PlanAction
    lead: Lead | None = None
    lead_id: str | None = None
    matched_on: str | None = None
    # merge: the reaction deadline this contact asks for. It replaces the lead's when that
    # one had already passed when the contact came (a customer calling again a week later
    # needs a callback again); an earlier deadline still running stays.
    sla_due_at: datetime | None = None
    assignment: AssignmentRequest | None = None
    # Chat messages: what is sent back in the event's conversation with it (a greeting,
    # the after-hours answer), queued in the same transaction as the event.
    answers: tuple[Answer, ...] = ()
    # Set when `answers` hold the after-hours answer: the closed period (its next_open_at)
    # it answers, stored as the conversation's auto_answered_for.
    answered_for: datetime | None = None
    # Chat messages: the new inbound line is also copied to the CRM's chat (Bitrix24 Open
    # Lines): a `message.mirror` outbox row for it, in the same transaction.
    mirror: bool = False


# Pure: the same match gives an equal plan. A store may call it more than once for one event
# (a transaction retried after a conflict) and applies only the plan of the attempt it commits.
Planner = Callable[[PersonMatch], Plan]


class Recorded(NamedTuple):
    """What record() did: the sender's receipt, and for a lead it created, the seller it
    stored (None for merge, keep, replay and a junk lead)."""

    receipt: Receipt
    assignment: Assignment | None = None
    messages: tuple[str, ...] = ()  # ids of the outbound messages the plan queued


@dataclass(frozen=True, slots=True)
class LeadQuery:
    channel: Channel | None = None
    status: LeadStatus | None = None
    assigned_to: str | None = None
    since: datetime | None = None
    before_id: str | None = None  # paging cursor: leads older than this id
    limit: int = 50


class OutboxKind(StrEnum):
    """What an outbox row asks a sink to do; written by the store, read by the sinks."""

    CREATED = "lead.created"
    MERGED = "lead.merged"
    MESSAGE_OUT = "message.out"  # a message to a customer, for its channel's sender
    # Bitrix24 Open Lines (gateway.delivery.openlines): a customer's message to copy into
    # the line, and the delivery of a seller's answer from the line to report back.
    MESSAGE_MIRROR = "message.mirror"
    MESSAGE_STATUS = "message.status"


# What the CRM sink works on; the message worker takes MESSAGE_OUT.
CRM_KINDS = (OutboxKind.CREATED, OutboxKind.MERGED)
# What the Open Lines worker takes.
MIRROR_KINDS = (OutboxKind.MESSAGE_MIRROR, OutboxKind.MESSAGE_STATUS)


class OutboxState(StrEnum):
    PENDING = "pending"  # waiting for its next attempt (or being attempted, when claimed)
    DELIVERED = "delivered"  # the sink took it
    DEAD = "dead"  # in the dead-letter queue, until a person retries it
    # Ended without delivery on purpose: the destination refused it for good (a customer
    # who blocked the bot). Final, not the dead-letter queue: there is nothing to retry.
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class OutboxItem:
    id: int
    lead_id: str
    event_id: str
    kind: OutboxKind
    state: OutboxState
    attempts: int
    next_attempt_at: datetime
    created_at: datetime
    last_error: str | None = None
    delivered_at: datetime | None = None
    remote_id: str | None = None  # the sink's id for what was delivered (CRM lead/comment id)
    attempted: bool = False  # a delivery attempt was started before (it may have landed)
    # Who holds the item now (a delivery worker's owner name) and until when: while the
    # claim runs nobody else takes it; once it ran out, another worker may.
    claimed_by: str | None = None
    claimed_until: datetime | None = None
    # message.out: the transcript line to send, and its conversation (for the order).
    message_id: str | None = None
    conversation_id: str | None = None


# --- outbox (delivery) ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OutboxUpdate:
    """What became of one claimed item; the worker writes a batch of these in one go.

    DELIVERED: done (`remote_id` kept; for lead.created also as the lead's link).
    PENDING: try again at `next_attempt_at`. DEAD: to the dead-letter queue. CLOSED: ended
    for good without delivery. `count_attempt` adds one to attempts; `attempted` (when not
    None) resets the flag that says an attempt may have reached the sink (False when the
    sink certainly saw nothing). Every outcome ends the claim.

    message.out rows: `message_status` (when not None) becomes the transcript line's
    status, in the same transaction, with `error` as its status_reason and `remote_id` as
    its external_id; a line that is sent also moves its conversation's last_outbound_at.
    """

    id: int
    state: OutboxState
    error: str | None = None
    remote_id: str | None = None
    next_attempt_at: datetime | None = None
    count_attempt: bool = True
    attempted: bool | None = None
    message_status: MessageStatus | None = None


@dataclass(frozen=True, slots=True)
class OutboxStats:
    pending: int
    dead: int
    oldest_pending_at: datetime | None  # created_at of the oldest pending item


@dataclass(frozen=True, slots=True)
class DeliveryView:
    """What a sink needs for one outbox item: the lead *without* its history (a person who
    posts a thousand times has a thousand events; no delivery carries them), the one event
    the item is about, and how many events the lead has."""

    lead: Lead  # events == ()
    event: EventRecord | None  # None when the item's event is not on this lead
    event_count: int


@dataclass(frozen=True, slots=True)
class LeadLink:
    """Where a lead stands with a sink: its lead.created item's state and the remote id."""

    state: OutboxState | None  # None when the lead.created row is gone (purged after delivery)
    remote_id: str | None


@dataclass(frozen=True, slots=True)
class Quarantined:
    """Input that was authentic but could not be made into an event: kept, not dropped."""

    channel: str
    reason: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


class QuarantineState(StrEnum):
    """Where a quarantined input stands. A person moves it on (`leadgate quarantine`)."""

    KEPT = "kept"  # waiting for a person
    RELEASE = "release"  # a person asked for it to be run again; the gateway will do it
    RELEASED = "released"  # done: run again into an event, or taken over by a person


@dataclass(frozen=True, slots=True)
class QuarantineEntry:
    """A quarantined input as stored, for a person (or a test) to look at."""

    id: int
    channel: str
    reason: str
    received_at: datetime
    headers: dict[str, str]
    body: bytes
    state: QuarantineState = QuarantineState.KEPT
    note: str | None = None  # what became of it, in words (the re-run's receipt or error)
    updated_at: datetime | None = None  # when the state last changed


# --- what ops watch ---------------------------------------------------------------------------

# Intake is counted per channel and outcome in buckets of this many seconds (UTC epoch
# aligned), kept with the events themselves so a restart loses no history.
INTAKE_BUCKET_SECONDS = 300


@dataclass(frozen=True, slots=True)
class IntakeCount:
    """Events stored for one channel with one outcome in one bucket."""

    bucket_start: datetime  # UTC, a multiple of INTAKE_BUCKET_SECONDS since the epoch
    channel: str
    outcome: str
    count: int


@dataclass(frozen=True, slots=True)
class OpenLeadStats:
    """NEW leads created since a moment: how many, how many with no seller, and how many
    whose reaction deadline (sla_due_at) has passed while they are still NEW here."""

    new: int
    unassigned: int
    overdue: int


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as the store holds it: its record, the lead it joined (None: kept on no
    lead) and the sender's payload kept for audit."""

    record: EventRecord
    lead_id: str | None
    raw: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class EventQuery:
    channel: Channel | None = None
    external_id: str | None = None
    lead_id: str | None = None
    after_id: str | None = None  # paging cursor: the events stored after this one
    limit: int = 100


class Store(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise if the store cannot serve; for /readyz."""

    async def record(
        self,
        event: LeadEvent,
        keys: Sequence[str],
        since: datetime,
        plan: Planner,
        checkpoint: tuple[str, str] | None = None,
    ) -> Recorded:
        """Store `event` durably and return what became of it; the one write path.

        Atomically with respect to other record() calls: if (channel, external_id) or the
        event's idempotency key was seen, return the original receipt as `replayed` (after it
        is durable). Otherwise find the person by `keys` (an open lead is one with status NEW
        and last event at or after `since`; a reply joins the lead of the event it answers by
        `replies_to`), call `plan` with the match, resolve a create's assignment request with
        `assign.pick` and the round-robin counts of its day (`assign.counting_day`), and
        persist the lead, the event, an outbox row and the count in one transaction before
        returning. Only the committed attempt moves the counts: a failed write leaves them as
        they were. The day the count went to is stored with the lead in that transaction,
        and a store that starts counting a day (after opening) takes its counts from the
        leads stored with that day — starting at the latest day stored, if later — so a
        restart or a retry counts every lead in the same day as before. A `checkpoint`
        (name, value) — a poller's position — is saved in that same transaction, so a crash
        can neither skip the event nor take it twice.

        A chat message (`event.thread` set) also, in that same transaction: finds or opens
        its conversation (channel, thread.account, thread.chat) and hands it to `plan` as
        `PersonMatch.conversation`; matches the conversation's lead first when that lead is
        open (status NEW, last event at or after `since`) with matched_on "conversation",
        then identity keys as above; keeps the message as an inbound transcript line (its
        id is the event's id, its external_id the event's) — or, for an edit
        (`event.edits`), rewrites the text, attachments and edited_at of the line whose
        external_id it names in that conversation (a new line when there is none, which
        stands for the message: when the message itself comes later, it adds no line and
        keeps the edited text, only the line's `at` moves back to the message's); moves
        the conversation's lead_id (when the event joined or made a lead),
        last_inbound_at and locale (when given). The plan's `answers` become outbound lines
        (status queued, on the event's lead) each with a `message.out` outbox row, and its
        `answered_for` the conversation's auto_answered_for; their ids are in
        `Recorded.messages`. A replayed event does none of this again.
        """

    async def get_lead(self, lead_id: str) -> Lead | None: ...

    async def delivery_view(self, lead_id: str, event_id: str) -> DeliveryView | None:
        """The lead without its events, its event `event_id`, and its event count; None
        when there is no such lead. Costs the same for a lead of one event or of 10,000."""

    async def list_leads(self, query: LeadQuery) -> list[Lead]:
        """Newest first, without events (use get_lead for those)."""

    async def assignment_counts(self, day: date) -> dict[str, int]:
        """Round-robin counts of the local day `day`, seller id -> leads, as the next
        resolution for that day would see them ({} for a day the store is not counting)."""

    async def quarantine(
        self, item: Quarantined, checkpoint: tuple[str, str] | None = None
    ) -> None:
        """Keep `item` durably; a `checkpoint` is saved in the same transaction."""

    async def save_checkpoint(self, name: str, value: str) -> None:
        """Durably move a poller's position (for input that made no event)."""

    async def get_checkpoint(self, name: str) -> str | None: ...

    async def list_checkpoints(self, prefix: str = "") -> dict[str, str]:
        """Every checkpoint whose name starts with `prefix` (poller positions, limits)."""

    # --- reads for people and tests (the CLI, the admin API) --------------------------------

    async def get_event(self, event_id: str) -> StoredEvent | None: ...

    async def list_events(self, query: EventQuery) -> list[StoredEvent]:
        """In the order they were stored, with their raw payloads; kept events (on no
        lead) included."""

    async def event_for_key(self, key: str) -> StoredEvent | None:
        """The event first stored under a client's Idempotency-Key (what a replay answers)."""

    async def list_quarantine(
        self,
        channel: str | None = None,
        limit: int = 100,
        *,
        after_id: int = 0,
        state: QuarantineState | None = None,
    ) -> list[QuarantineEntry]:
        """Oldest first; `after_id` pages on; `state` keeps entries in that state only."""

    async def get_quarantine(self, entry_id: int) -> QuarantineEntry | None:
        """One quarantined input with its body, or None when there is no such entry."""

    async def mark_quarantine(
        self,
        entry_id: int,
        state: QuarantineState,
        note: str | None,
        at: datetime,
        *,
        expect: QuarantineState | None = None,
    ) -> bool:
        """Move an entry to `state` with a note for people, stamped `at`. With `expect`, only
        an entry in that state moves, so a person's request and the gateway's answer to an
        earlier one cannot overwrite each other. False (nothing changed) when the entry is
        gone or was not in `expect`."""

    async def delete_quarantine(self, entry_id: int) -> bool:
        """Forget an entry for good; False when there was none."""

    # --- what ops watch (the /ops page) ---------------------------------------------------

    async def intake(self, since: datetime) -> list[IntakeCount]:
        """Stored events per channel and outcome in buckets of INTAKE_BUCKET_SECONDS, for the
        buckets starting at or after `since` floored to a bucket; ordered by bucket, then
        channel, then outcome. Counted when the event is stored (in the same transaction),
        by its received_at; replays store nothing, so they are not counted."""

    async def last_event_at(self) -> dict[str, datetime]:
        """Per channel, the received_at of the last event stored (channels with none left out)."""

    async def open_lead_stats(self, since: datetime, now: datetime) -> OpenLeadStats:
        """Counts over the NEW leads created at or after `since`; overdue means
        sla_due_at < `now`."""

    # --- outbox (delivery) ----------------------------------------------------------------

    async def outbox(
        self, state: OutboxState | None = None, limit: int = 100, *, after_id: int = 0
    ) -> list[OutboxItem]:
        """Items oldest first, of one state or all; `after_id` pages on."""

    async def claim_outbox(
        self,
        now: datetime,
        limit: int,
        *,
        owner: str,
        lease_seconds: float,
        mark: bool = True,
        kinds: Collection[OutboxKind] | None = None,
    ) -> list[OutboxItem]:
        """Claim pending items due at `now`, oldest first, for `owner` until `now` plus
        `lease_seconds`, and return them (showing the new claim). `kinds`: only items of
        these kinds (None: any), so the CRM worker and the message worker never take each
        other's items.

        Items of a conversation (message.out, message.mirror, message.status) go in order
        per conversation and kind: one is claimable only while no older item of the same
        kind and conversation is pending (waiting, retrying or held), so a conversation's
        message N+1 never overtakes message N — and a kind that waits (the CRM's chat is
        down) never holds up another (the replies to the customer).

        Only items nobody holds are taken: unclaimed ones and those whose claim ran out
        (taken over: their holder is presumed gone). An item held by anyone, this owner
        included, whose claim still runs is never returned, so no item is sent twice while
        held. Two claims running at once never get the same item. The claim is durable
        before this returns. With `mark`, each item is also durably flagged as attempted
        (the items returned keep their previous flag), so a crash while the sink works
        leaves a trace that makes the next attempt look before it creates.
        """

    async def update_outbox(
        self, sink: str, updates: Sequence[OutboxUpdate], at: datetime, *, owner: str
    ) -> list[int]:
        """Record the outcomes of items `owner` claimed, all in one transaction, and end
        their claims. An update for an item `owner` no longer holds (its claim ran out and
        another took it over, or it is not claimed) is refused and changes nothing: its ids
        are returned. A claim that ran out but was not taken over still counts as held."""

    async def lead_links(self, sink: str, lead_ids: Sequence[str]) -> dict[str, LeadLink]:
        """For merges: whether each lead reached `sink`, and as which remote id."""

    async def retry_outbox(self, ids: Sequence[int] | None, now: datetime) -> int:
        """Make dead (or waiting) items due now with fresh attempts; None = all dead ones.
        Returns how many were changed. A claim on a waiting item stays (it is in flight).
        A retried message.out puts its transcript line back to queued."""

    async def outbox_stats(self, kinds: Collection[OutboxKind] | None = None) -> OutboxStats:
        """Pending and dead items (of these kinds; None: all)."""

    async def purge_outbox(self, delivered_before: datetime) -> None:
        """Forget delivered items older than a moment (lead links are kept)."""

    # --- conversations (chat channels) ---------------------------------------------------

    async def transcript(self, lead_id: str) -> Transcript:
        """The conversations that have lines on this lead, and those lines (inbound and
        outbound, with their status), in the order they were stored; empty for a lead that
        came by no chat (or no such lead)."""

    async def get_message(self, message_id: str) -> MessageView | None:
        """One transcript line with its conversation (what a sender needs)."""

    async def queue_message(
        self,
        lead_id: str,
        text: str,
        *,
        author: str,
        now: datetime,
        conversation_id: str | None = None,
        ask_phone: bool = False,
        message_id: str | None = None,
        report: bool = False,
    ) -> ChatMessage:
        """Queue a message to the customer of `lead_id`, durably, and return its line
        (status queued, at `now`): the line and its `message.out` outbox row in one
        transaction. It goes to `conversation_id` — which must have lines on this lead —
        or else to the lead's conversation the customer wrote in last. Raises NoSuchLead,
        or NoConversation when the lead has none (or not the one named).

        `message_id`: the line's id, chosen by a caller that may call again after a crash;
        when a line with that id exists, it is returned as stored and nothing is queued.
        `report`: the message came from the CRM's chat (Open Lines), which wants to hear
        when it was delivered: a `message.status` outbox row for it, in the same
        transaction."""

    async def get_conversation(self, conversation_id: str) -> Conversation | None:
        """One conversation by its id (the CRM's chat names it when a seller answers)."""

    # --- inbox (push input stored before it is answered, handled after) -------------------

    async def inbox_put(
        self,
        entries: Sequence[InboxEntry],
        at: datetime,
        checkpoint: tuple[str, str] | None = None,
    ) -> list[bool]:
        """Keep each entry durably (all in one transaction with `checkpoint`) before
        returning, as pending and due at `at`, with its thread; one bool per entry: False
        for a duplicate of (channel, account, key) already kept (at any state, done
        included: the key is remembered until purge_inbox) or earlier in `entries`, which
        changes nothing."""

    async def inbox_claim(
        self,
        now: datetime,
        limit: int,
        *,
        owner: str,
        lease_seconds: float,
        channel: str | None = None,
    ) -> list[InboxItem]:
        """Claim pending entries due at `now` (of `channel`; None: any), oldest first, for
        `owner` until `now` plus `lease_seconds`, as claim_outbox does: never an entry whose
        claim still runs, never one entry to two claims, durable before it returns.

        An entry with a `thread` is claimable only while no older pending entry of the same
        (channel, account, thread) is due later or held by a claim that still runs (being
        claimed or updated counts as held): a chat's messages are handled in the order
        kept, a retried one is never overtaken. Several due ones of a thread may go in
        one claim, in order."""

    async def update_inbox(
        self, updates: Sequence[InboxUpdate], at: datetime, *, owner: str
    ) -> list[int]:
        """Record what became of entries `owner` claimed, in one transaction, ending the
        claims; refused (and returned) for entries `owner` no longer holds. DONE also
        drops the body (the key stays, so a repeat is still a duplicate)."""

    async def list_inbox(
        self, state: InboxState | None = None, limit: int = 100, *, after_id: int = 0
    ) -> list[InboxItem]:
        """Entries oldest first, of one state or all, with their bodies; `after_id` pages on."""

    async def inbox_stats(self) -> dict[str, InboxStats]:
        """Pending and dead entries per channel (channels with none left out)."""

    async def purge_inbox(self, done_before: datetime) -> int:
        """Forget done entries received before a moment (keys included: a repeat is then
        new); returns how many."""

    async def retry_inbox(self, ids: Sequence[int] | None, now: datetime) -> int:
        """Make dead entries (these, or all when None) pending and due now with fresh
        attempts; returns how many changed."""
