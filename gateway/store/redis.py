"""The shared store: several gateway replicas on one Redis, one truth.

Why it is shaped like this:
- Every write that must be atomic is one transaction on the server: record() is an
  optimistic WATCH/MULTI/EXEC — it watches every key its decision reads (replay keys,
  identities, candidate leads, the conversation, the round-robin state), decides purely
  (gateway.store.redis_match.decide), and queues the writes; if another replica changed
  a watched key first, EXEC aborts and the event is read and decided again. Only the
  committed attempt moves the round-robin counts, so a retry changes nothing.
- Claims, outcomes, retries and other read-modify-writes of one kind of row are Lua
  scripts (atomic on the server); an id or an order number is taken inside the script or
  the transaction, so ids grow in the order rows are committed.
- Durability is the server's: with `appendfsync always` Redis writes and fsyncs its AOF
  before it answers anyone (gateway.redisconn.check_durability). Nothing here answers
  before Redis did. A Redis that cannot be reached is StoreUnavailable (a 503); a
  connection lost during EXEC (redis-py says WatchError) is read again: the write is
  found if it landed (and the caller hears what it did), else made again.
- Within one replica, record() calls are applied one at a time in the order they came (a
  FIFO lock), as the embedded store decides them: a burst from one sender keeps its
  order, and the replica's own writes never make each other retry. Across replicas the
  WATCH above settles every race.
- Nothing else is kept in this process between calls: any replica can serve any request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
from collections.abc import Sequence
from datetime import UTC, date, datetime

import orjson
import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.commands.core import AsyncScript
from redis.exceptions import WatchError

from gateway.conversations import Conversation
from gateway.models import EventRecord, Lead, LeadEvent, LeadStatus, Outcome, Receipt
from gateway.store.base import (
    INTAKE_BUCKET_SECONDS,
    DeliveryView,
    LeadQuery,
    OutboxKind,
    OutboxState,
    PersonMatch,
    PlanAction,
    Planner,
    Quarantined,
    Recorded,
    StoreUnavailable,
)
from gateway.store.changes import created_lead, event_doc, merged_lead
from gateway.store.redis_chat import ChatMethods, thread_writes
from gateway.store.redis_inbox import InboxMethods
from gateway.store.redis_keys import (
    INSERT_IN_ORDER,
    Keys,
    fields,
    maybe_text,
    pack_bytes,
    queue_script,
    texts,
    ts,
    unavailable,
)
from gateway.store.redis_match import (
    Count,
    DayState,
    Decision,
    decide,
    match,
    watch_and_read,
    watch_conversation,
    watch_day,
)
from gateway.store.redis_ops import OpsMethods
from gateway.store.redis_outbox import OutboxMethods, add_outbox
from gateway.store.redis_queries import QueryMethods, lead_from, list_leads
from gateway.store.sqlite_queries import idempotency_key, replay_key

__all__ = ["RedisStore"]

log = logging.getLogger(__name__)

# An event contended by this many concurrent writers in a row is not stored: the sender
# hears 503 and retries, rather than this request spinning for ever.
MAX_ATTEMPTS = 1000

# Intake per channel, bucket and outcome, with the channel's last received_at.
# KEYS: intake:{ch}, intake:buckets:{ch}, intake:last; ARGV: channel, bucket, outcome, at
COUNT_INTAKE = """
redis.call('HINCRBY', KEYS[1], ARGV[2] .. ':' .. ARGV[3], 1)
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[2])
local last = redis.call('HGET', KEYS[3], ARGV[1])
if not last or tonumber(last) < tonumber(ARGV[4]) then
  redis.call('HSET', KEYS[3], ARGV[1], ARGV[4])
end
return 1
"""

# A quarantined input: its id taken at commit. KEYS: the counter, q:all; ARGV: prefix, then
# field, value pairs.
ADD_QUARANTINE = """
local id = redis.call('INCR', KEYS[1])
redis.call('HSET', ARGV[1] .. 'q:' .. id, 'id', id, unpack(ARGV, 2))
redis.call('ZADD', KEYS[2], id, id)
return id
"""


def index_lead(pipe: Pipeline, k: Keys, lead: Lead) -> None:
    """Queue a new lead's index entries (its listings, the /ops window of NEW leads)."""
    pipe.zadd(k.leads, {lead.id: 0})
    pipe.zadd(k.leads_created, {lead.id: lead.created_at.timestamp()})
    pipe.zadd(k.leads_by("channel", lead.channel.value), {lead.id: 0})
    pipe.zadd(k.leads_by("status", lead.status.value), {lead.id: 0})
    if lead.assigned_to is not None:
        pipe.zadd(k.leads_by("seller", lead.assigned_to), {lead.id: 0})
    if lead.status is LeadStatus.NEW:
        pipe.zadd(k.leads_new, {lead.id: lead.created_at.timestamp()})


def event_indexes(k: Keys, channel: str, lead_id: str | None) -> list[str]:
    """The sorted sets an event is listed in, by the order stored (INSERT_IN_ORDER)."""
    indexes = [k.events, k.events_of_channel(channel)]
    if lead_id is not None:
        indexes.append(k.events_of_lead(lead_id))
    return indexes


def event_fields(
    event_id: str,
    lead_id: str | None,
    channel: str,
    external_id: str,
    received_at: str,
    doc: bytes | str,
) -> list[str | bytes | int]:
    """INSERT_IN_ORDER's ARGV for an event: its id, then its hash's fields."""
    return [
        event_id,
        "lead_id", lead_id or "",
        "channel", channel,
        "external_id", external_id,
        "received_at", received_at,
        "doc", doc,
    ]  # fmt: skip


_OUTCOMES = {
    PlanAction.CREATE: Outcome.CREATED,
    PlanAction.MERGE: Outcome.MERGED,
    PlanAction.KEEP: Outcome.KEPT,
}


def _landed(decision: Decision, event_id: str, lead_id: str | None) -> Recorded:
    """What record() answers for its own write found stored on a retry."""
    receipt = Receipt(event_id=event_id, lead_id=lead_id, outcome=_OUTCOMES[decision.plan.action])
    queued = tuple(answer.message_id for answer in decision.plan.answers)
    return Recorded(receipt, decision.assignment, queued)


class RedisStore(QueryMethods, OutboxMethods, OpsMethods, ChatMethods, InboxMethods):
    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str,
        outbox_delivered: bool = False,
        writer: aioredis.Redis | None = None,
        min_replicas: int = 0,
        replica_wait_seconds: float = 1.0,
    ) -> None:
        self._r = client
        # Writes acknowledged to a sender (events, inbox entries, queued replies). With
        # min_replicas a client of one connection (see replicated()); else the same client.
        self._w = writer or client
        self._min_replicas = min_replicas
        self._replica_wait_ms = int(replica_wait_seconds * 1000)
        self.k = Keys(prefix)
        # With no remote sink the store itself is the destination: outbox rows are born
        # delivered, in the lead's own transaction.
        self._outbox_state = OutboxState.DELIVERED if outbox_delivered else OutboxState.PENDING
        self._scripts: dict[str, AsyncScript] = {}
        self._recording = asyncio.Lock()  # FIFO: this replica's events in arrival order

    def _lua(self, source: str) -> AsyncScript:
        script = self._scripts.get(source)
        if script is None:
            script = self._scripts[source] = self._r.register_script(source)
        return script

    # --- lifecycle -------------------------------------------------------------------

    async def open(self) -> None:
        # Claims are not released here, unlike the embedded store: other replicas may hold
        # them. A dead replica's claims run out with their lease and are taken over.
        await self.ping()

    async def close(self) -> None:
        await self._r.aclose()
        if self._w is not self._r:
            await self._w.aclose()

    def exclusive(self) -> contextlib.AbstractAsyncContextManager[object]:
        """Held around an acknowledged write other than record(): the writer of one
        connection (min_replicas) serves one command at a time."""
        return self._recording if self._w is not self._r else contextlib.nullcontext()

    async def replicated(self) -> None:
        """With min_replicas: return once that many replicas have every write this store's
        writer connection made (WAIT), else raise StoreUnavailable — the sender gets a 503
        and its retry is a replay. Replication is asynchronous: without this, an event the
        master acknowledged and had not passed on is lost when a replica is promoted."""
        if not self._min_replicas:
            return
        async with unavailable():
            have = int(await self._w.wait(self._min_replicas, self._replica_wait_ms))
        if have < self._min_replicas:
            raise StoreUnavailable(
                f"{have} of {self._min_replicas} Redis replicas confirmed the write within "
                f"{self._replica_wait_ms} ms"
            )

    async def ping(self) -> None:
        async with unavailable():
            await self._r.ping()

    # --- the write path ----------------------------------------------------------------

    async def record(
        self,
        event: LeadEvent,
        keys: Sequence[str],
        since: datetime,
        plan: Planner,
        checkpoint: tuple[str, str] | None = None,
    ) -> Recorded:
        rkeys = [replay_key(event.channel, event.external_id)]
        if event.idempotency_key:
            rkeys.append(idempotency_key(event.idempotency_key))
        # The decisions whose EXEC was sent, by a token each writes into the event: if a
        # reply was lost with the connection (redis-py then raises WatchError) but the write
        # landed, the retry finds the event with one of these tokens, and the caller hears
        # what that write did, not "replayed".
        sent: dict[str, Decision] = {}
        async with self._recording, unavailable():
            for attempt in range(MAX_ATTEMPTS):
                recorded = None
                async with self._w.pipeline(transaction=True) as pipe:
                    with contextlib.suppress(WatchError):
                        recorded = await self._record_once(
                            pipe, event, rkeys, keys, since, plan, checkpoint, sent
                        )
                if recorded is not None:
                    # After the pipeline gave its connection back (WAIT needs it). A replay
                    # waits too: the event may be the one this connection wrote just
                    # before its answer was lost.
                    await self.replicated()
                    return recorded
                if attempt >= 3:
                    # Many writers on one person or one day's counts: spread the retries.
                    await asyncio.sleep(random.uniform(0, 0.002 * min(attempt, 50)))
        raise StoreUnavailable(f"event {event.id}: too much contention, not stored")

    async def _record_once(
        self,
        pipe: Pipeline,
        event: LeadEvent,
        rkeys: list[str],
        keys: Sequence[str],
        since: datetime,
        plan: Planner,
        checkpoint: tuple[str, str] | None,
        sent: dict[str, Decision],
    ) -> Recorded:
        k = self.k
        seen = await watch_and_read(pipe, k, event, rkeys, keys)
        if seen.replayed is not None:
            found, lead_id, token = seen.replayed
            if checkpoint is not None:
                # The poller must not fetch it again: moved even for a replay.
                pipe.multi()  # type: ignore[no-untyped-call]
                pipe.hset(k.checkpoints, *checkpoint)
                await self._commit(pipe, event)
            if token in sent:
                return _landed(sent[token], event.id, lead_id)
            return Recorded(Receipt(event_id=found, lead_id=lead_id, outcome=Outcome.REPLAYED))

        conversation = (
            await watch_conversation(pipe, k, event) if event.thread is not None else None
        )
        found_match = await match(pipe, k, event, keys, since, seen, conversation)
        first = plan(found_match)
        state = DayState()
        if first.action is PlanAction.CREATE and first.assignment is not None:
            state = await watch_day(pipe, k)
        decision = self._decide(plan, found_match, state, event.received_at)
        base = None
        if decision.plan.action is PlanAction.MERGE:
            assert decision.plan.lead_id is not None
            base = seen.leads.get(decision.plan.lead_id)
            if base is None:
                # A planner naming a lead the match did not find: read (and watch) it.
                await pipe.watch(k.lead(decision.plan.lead_id))
                doc = await pipe.get(k.lead(decision.plan.lead_id))
                if doc is None:  # a bug, not input
                    raise LookupError(f"merge target {decision.plan.lead_id} not found")
                base = Lead.model_validate_json(doc)
        # The line the message edits, or for a message the line its early edit made (the
        # lines hash is watched with the conversation).
        line = None
        if event.thread is not None and conversation is not None:
            line = maybe_text(
                await pipe.hget(
                    k.conversation_lines(conversation.id), event.edits or event.external_id
                )
            )

        pipe.multi()  # type: ignore[no-untyped-call]
        receipt = self._queue_record(pipe, event, rkeys, keys, decision, base, conversation, line)
        if checkpoint is not None:
            pipe.hset(k.checkpoints, *checkpoint)
        token = secrets.token_hex(8)
        pipe.hset(k.event(event.id), "attempt", token)
        sent[token] = decision
        await self._commit(pipe, event)
        queued = tuple(answer.message_id for answer in decision.plan.answers)
        return Recorded(receipt, decision.assignment, queued)

    def _decide(
        self, plan: Planner, found: PersonMatch, state: DayState, received_at: datetime
    ) -> Decision:
        """The plan, and for a create its seller and count (pure; see redis_match)."""
        return decide(plan, found, state, received_at)

    async def _commit(self, pipe: Pipeline, event: LeadEvent | None = None) -> None:
        """EXEC the transaction (raises WatchError when a watched key changed)."""
        await pipe.execute()

    def _queue_record(
        self,
        pipe: Pipeline,
        event: LeadEvent,
        rkeys: list[str],
        keys: Sequence[str],
        decision: Decision,
        base: Lead | None,
        conversation: Conversation | None,
        line: str | None,
    ) -> Receipt:
        k, d = self.k, decision.plan
        now = ts(event.received_at)
        lead: Lead | None
        kind: OutboxKind | None
        if d.action is PlanAction.CREATE:
            assert d.lead is not None
            lead = created_lead(d.lead, decision.assignment)
            outcome, kind = Outcome.CREATED, OutboxKind.CREATED
        elif d.action is PlanAction.MERGE:
            assert base is not None
            lead = merged_lead(base, event, d)
            outcome, kind = Outcome.MERGED, OutboxKind.MERGED
        else:
            lead, outcome, kind = None, Outcome.KEPT, None
        lead_id = lead.id if lead is not None else None

        if lead is not None:
            pipe.set(k.lead(lead.id), lead.__pydantic_serializer__.to_json(lead))
            if d.action is PlanAction.CREATE:
                index_lead(pipe, k, lead)
            for key in keys:
                pipe.sadd(k.identity(key), lead.id)
        doc = event_doc(event, outcome, d.matched_on)
        indexes = event_indexes(k, event.channel.value, lead_id)
        queue_script(
            pipe,
            INSERT_IN_ORDER,
            [k.seq("event"), k.event(event.id), *indexes],
            event_fields(event.id, lead_id, event.channel.value, event.external_id, now, doc),
        )
        for rk in rkeys:
            pipe.set(k.replay(rk), event.id)
        bucket = int(event.received_at.timestamp() // INTAKE_BUCKET_SECONDS) * INTAKE_BUCKET_SECONDS
        channel = event.channel.value
        queue_script(
            pipe,
            COUNT_INTAKE,
            [k.intake(channel), k.intake_buckets(channel), k.intake_last],
            [channel, bucket, outcome.value, now],
        )
        if lead is not None:
            assert kind is not None
            add_outbox(
                pipe,
                k,
                lead_id=lead.id,
                event_id=event.id,
                kind=kind,
                due=now,
                state=self._outbox_state,
            )
        if decision.count is not None:
            self._move_count(pipe, decision.count)
            if decision.count.seller is not None and lead is not None:
                # The day it counted in goes with the lead, as on SQLite.
                pipe.hset(k.count_days, lead.id, decision.count.day.isoformat())
        if event.thread is not None:
            thread_writes(pipe, k, event, d, lead_id, conversation, line)
        return Receipt(event_id=event.id, lead_id=lead_id, outcome=outcome)

    def _move_count(self, pipe: Pipeline, count: Count) -> None:
        k = self.k
        if count.restart:
            # A new day: the old day's counts decide nothing any more.
            pipe.delete(k.rr)
            pipe.hset(k.rr, mapping={"day": count.day.isoformat(), "earlier": count.earlier})
        if count.seller is not None:
            pipe.hincrby(k.rr, f"s:{count.seller}", 1)

    # --- reads -----------------------------------------------------------------------

    async def get_lead(self, lead_id: str) -> Lead | None:
        async with unavailable():
            doc = await self._r.get(self.k.lead(lead_id))
            if doc is None:
                return None
            ids = texts(await self._r.zrange(self.k.events_of_lead(lead_id), 0, -1))
            docs = await self._event_docs(ids)
        events = tuple(
            sorted(
                (EventRecord.model_validate(orjson.loads(d)["record"]) for d in docs if d),
                key=lambda e: e.id,
            )
        )
        return lead_from(doc).model_copy(update={"events": events})

    async def _event_docs(self, ids: Sequence[str]) -> list[str | None]:
        async with self._r.pipeline(transaction=False) as pipe:
            for event_id in ids:
                pipe.hget(self.k.event(event_id), "doc")
            return list(await pipe.execute())

    async def delivery_view(self, lead_id: str, event_id: str) -> DeliveryView | None:
        k = self.k
        async with unavailable(), self._r.pipeline(transaction=False) as pipe:
            pipe.get(k.lead(lead_id))
            pipe.hmget(k.event(event_id), "lead_id", "doc")
            pipe.zcard(k.events_of_lead(lead_id))
            doc, (owner, stored), count = await pipe.execute()
        if doc is None:
            return None
        event = None
        if stored is not None and owner == lead_id:
            event = EventRecord.model_validate(orjson.loads(stored)["record"])
        return DeliveryView(lead_from(doc), event, int(count))

    async def list_leads(self, query: LeadQuery) -> list[Lead]:
        async with unavailable():
            return await list_leads(self._r, self.k, query)

    async def assignment_counts(self, day: date) -> dict[str, int]:
        async with unavailable():
            state = DayState.parse(fields(await self._r.hgetall(self.k.rr)))
        return dict(state.counts) if state.day == day else {}

    async def quarantine(
        self, item: Quarantined, checkpoint: tuple[str, str] | None = None
    ) -> None:
        k = self.k
        async with unavailable(), self._r.pipeline(transaction=True) as pipe:
            queue_script(
                pipe,
                ADD_QUARANTINE,
                [k.seq("quarantine"), k.quarantine_all],
                [
                    k.p,
                    "channel", item.channel,
                    "reason", item.reason,
                    "received_at", ts(datetime.now(UTC)),
                    "headers", orjson.dumps(item.headers),
                    "body", pack_bytes(item.body),
                    "state", "kept",
                ],
            )
            if checkpoint is not None:
                pipe.hset(k.checkpoints, *checkpoint)
            await pipe.execute()

    async def save_checkpoint(self, name: str, value: str) -> None:
        async with unavailable():
            await self._r.hset(self.k.checkpoints, name, value)

    async def get_checkpoint(self, name: str) -> str | None:
        async with unavailable():
            value = await self._r.hget(self.k.checkpoints, name)
        return None if value is None else str(value)
