"""Moving house: an embedded SQLite store copied into an empty Redis key prefix, so an
installation can switch to replicas (`leadgate store copy`).

Everything the store holds goes over as it is: leads, events in the order they were stored
with their replay keys and identity keys, the outbox with its ids, states, attempts and
links to the CRM, conversations and transcripts, checkpoints, quarantine, the inbox, the
intake counts, the day each lead's assignment counted in and the round-robin state of the
day in progress (so assignment stays even across the switch), and the order of each chat's
waiting inbox entries. Claims do not: nobody holds anything in the new store. The copy
reads the file with the gateway stopped (it takes the file's lock) and refuses a prefix
that has data.
"""

from __future__ import annotations

import fcntl
import sqlite3
from collections.abc import Callable
from datetime import datetime, time
from pathlib import Path
from typing import IO, Any
from zoneinfo import ZoneInfo

import orjson
import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from gateway.inbox import InboxState
from gateway.models import Lead
from gateway.store.base import StoreUnavailable
from gateway.store.redis import event_fields, event_indexes, index_lead
from gateway.store.redis_chat import add_line, conversation_fields
from gateway.store.redis_keys import (
    INSERT_IN_ORDER,
    Keys,
    pack_bytes,
    queue_script,
    ts,
    unavailable,
)
from gateway.store.redis_outbox import restore_outbox
from gateway.store.sqlite_chat import all_conversations, all_messages
from gateway.store.sqlite_inbox import all_inbox
from gateway.store.sqlite_ops import quarantine_rows
from gateway.store.sqlite_queries import (
    assigned_since,
    latest_count_day,
    open_reader,
    outbox_rows,
)

_BATCH = 500


class CopyRefused(RuntimeError):
    """The copy would not be a faithful one (the gateway still writes the file, the
    target already holds data); the message says which."""


def lock_file(path: Path) -> IO[bytes]:
    """The file's writer lock, held while copying: a running gateway would go on writing
    what the copy has already read."""
    if not path.exists():
        raise CopyRefused(f"no store at {path}")
    handle = open(f"{path}.lock", "wb")  # noqa: SIM115 (held until the copy ends)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        handle.close()
        raise CopyRefused(f"{path} is in use by a running gateway: stop it first") from exc
    return handle


class _Batches:
    """A non-transactional pipeline sent every few hundred commands."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self.pipe: Pipeline = client.pipeline(transaction=False)
        self.queued = 0

    async def step(self) -> Pipeline:
        self.queued += 1
        if self.queued >= _BATCH:
            await self.flush()
        return self.pipe

    async def flush(self) -> None:
        if self.queued:
            await self.pipe.execute()
            self.queued = 0


async def copy_sqlite_to_redis(
    path: Path, client: aioredis.Redis, prefix: str, tz: ZoneInfo
) -> tuple[dict[str, int], list[str]]:
    """Copy the store at `path` (whose lock the caller holds: see lock_file) under
    `prefix`: what was copied per kind of row, and the sinks that have links."""
    db = open_reader(path, read_only=True)
    try:
        async with unavailable():
            async for _ in client.scan_iter(match=f"{prefix}*", count=1000):
                raise CopyRefused(
                    f"the target already holds data under prefix {prefix!r}: "
                    "copy into an empty prefix"
                )
            copied = await _copy(db, client, Keys(prefix), tz)
        sinks = [sink for (sink,) in db.execute("SELECT DISTINCT sink FROM outbox_links")]
        return copied, sorted(sinks)
    finally:
        db.close()


async def _copy(
    db: sqlite3.Connection, client: aioredis.Redis, k: Keys, tz: ZoneInfo
) -> dict[str, int]:
    out = _Batches(client)
    copied: dict[str, int] = {}

    def count(kind: str) -> None:
        copied[kind] = copied.get(kind, 0) + 1

    for doc, count_day in db.execute("SELECT doc, count_day FROM leads ORDER BY id"):
        lead = Lead.model_validate_json(doc)
        pipe = await out.step()
        pipe.set(k.lead(lead.id), lead.__pydantic_serializer__.to_json(lead))
        index_lead(pipe, k, lead)
        if count_day is not None:
            pipe.hset(k.count_days, lead.id, count_day)
        count("leads")
    for key, lead_id in db.execute("SELECT key, lead_id FROM identities"):
        (await out.step()).sadd(k.identity(key), lead_id)
    for row in db.execute(
        "SELECT id, lead_id, channel, external_id, received_at, doc FROM events ORDER BY rowid"
    ):
        event_id, lead_id, channel, external_id, received_at, doc = row
        queue_script(
            await out.step(),
            INSERT_IN_ORDER,
            [k.seq("event"), k.event(event_id), *event_indexes(k, channel, lead_id)],
            event_fields(event_id, lead_id, channel, external_id, repr(received_at), doc),
        )
        count("events")
    for key, event_id in db.execute("SELECT key, event_id FROM replay_keys"):
        (await out.step()).set(k.replay(key), event_id)
    await _copy_intake(db, out, k)
    for name, value in db.execute("SELECT name, value FROM checkpoints"):
        (await out.step()).hset(k.checkpoints, name, value)
        count("checkpoints")
    for conversation in all_conversations(db):
        pipe = await out.step()
        fields = conversation_fields(conversation)
        if conversation.last_outbound_at is not None:
            fields["last_outbound_at"] = ts(conversation.last_outbound_at)
        pipe.hset(k.conversation(conversation.id), items=_pairs(fields))
        c = conversation
        pipe.set(k.conversation_key(c.channel.value, c.account, c.chat), c.id)
        count("conversations")
    for message in all_messages(db):
        add_line(await out.step(), k, message)
        count("messages")
    for item in outbox_rows(db, " ORDER BY id", ()):
        restore_outbox(await out.step(), k, item)
        count("outbox")
    for sink, lead_id, remote_id in db.execute("SELECT sink, lead_id, remote_id FROM outbox_links"):
        (await out.step()).hset(f"{k.p}links:{sink}", lead_id, remote_id)
        count("links")
    await _copy_quarantine(db, out, k, count)
    await _copy_inbox(db, out, k, count)
    _seed_round_robin(db, out.pipe, k, tz)
    await out.flush()
    return copied


def _pairs(fields: dict[str, str]) -> list[str]:
    return [part for pair in fields.items() for part in pair]


async def _copy_intake(db: sqlite3.Connection, out: _Batches, k: Keys) -> None:
    last: dict[str, float] = {}
    for channel, bucket, outcome, n, last_at in db.execute(
        "SELECT channel, bucket, outcome, count, last_at FROM intake"
    ):
        pipe = await out.step()
        pipe.hset(k.intake(channel), f"{bucket}:{outcome}", n)
        pipe.zadd(k.intake_buckets(channel), {str(bucket): bucket})
        last[channel] = max(last.get(channel, last_at), last_at)
    for channel, at in last.items():
        (await out.step()).hset(k.intake_last, channel, repr(at))


async def _copy_quarantine(
    db: sqlite3.Connection, out: _Batches, k: Keys, count: Callable[[str], None]
) -> None:
    top = 0
    for entry in quarantine_rows(db, "ORDER BY id", []):
        fields = {
            "id": str(entry.id),
            "channel": entry.channel,
            "reason": entry.reason,
            "received_at": ts(entry.received_at),
            "headers": orjson.dumps(entry.headers).decode(),
            "body": pack_bytes(entry.body),
            "state": entry.state.value,
        }
        if entry.note is not None:
            fields["note"] = entry.note
        if entry.updated_at is not None:
            fields["updated_at"] = ts(entry.updated_at)
        pipe = await out.step()
        pipe.hset(k.quarantine(entry.id), items=_pairs(fields))
        pipe.zadd(k.quarantine_all, {str(entry.id): entry.id})
        top = max(top, entry.id)
        count("quarantine")
    if top:
        (await out.step()).set(k.seq("quarantine"), top)


async def _copy_inbox(
    db: sqlite3.Connection, out: _Batches, k: Keys, count: Callable[[str], None]
) -> None:
    top = 0
    for item in all_inbox(db):
        fields = {
            "id": str(item.id),
            "channel": item.channel,
            "account": item.account,
            "key": item.key,
            "state": item.state.value,
            "attempts": str(item.attempts),
            "received_at": ts(item.received_at),
            "next_attempt_at": ts(item.next_attempt_at),
            "headers": orjson.dumps(item.headers).decode(),
            "body": pack_bytes(item.body),
        }
        if item.last_error is not None:
            fields["last_error"] = item.last_error
        if item.thread is not None:
            fields["thread"] = item.thread
        pipe = await out.step()
        pipe.hset(k.inbox(item.id), items=_pairs(fields))
        pipe.set(k.inbox_key(item.channel, item.account, item.key), item.id)
        pipe.zadd(f"{k.p}inbox:all", {str(item.id): item.id})
        pipe.zadd(f"{k.p}inbox:st:{item.state.value}", {str(item.id): item.id})
        if item.state is InboxState.PENDING:
            pipe.zadd(f"{k.p}inbox:due", {str(item.id): item.next_attempt_at.timestamp()})
            if item.thread is not None:
                # The chat's order holds in the new store: its entries wait as they did.
                thread = k.inbox_thread(item.channel, item.account, item.thread)
                pipe.zadd(thread, {str(item.id): item.id})
        elif item.state is InboxState.DONE:
            pipe.zadd(f"{k.p}inbox:done", {str(item.id): item.received_at.timestamp()})
        top = max(top, item.id)
        count("inbox")
    if top:
        (await out.step()).set(k.seq("inbox"), top)


def _seed_round_robin(db: sqlite3.Connection, pipe: Pipeline, k: Keys, tz: ZoneInfo) -> None:
    """The day in progress with its counts and the running total before it, from the leads
    and the day each counted in, as the embedded store seeds them when it opens: today, or
    the latest day a lead counted in if later (after-hours leads counted on Monday stay on
    Monday). The first lead after the switch gets the seller it would have got before."""
    day = datetime.now(tz).date()
    if (latest := latest_count_day(db)) is not None and latest > day:
        day = latest
    counts, earlier = assigned_since(db, day, datetime.combine(day, time.min, tz).timestamp())
    state: list[Any] = ["day", day.isoformat(), "earlier", earlier]
    for seller, n in counts.items():
        state += [f"s:{seller}", n]
    pipe.hset(k.rr, items=state)


__all__ = ["CopyRefused", "StoreUnavailable", "copy_sqlite_to_redis", "lock_file"]
