"""The Redis store's key layout, value encodings and error mapping.

Every key starts with the configured prefix (several gateways, or tests, share a server).
Rows are hashes; listings are sorted sets, so a page or a count never scans everything:

    lead:{id}                  Lead JSON without events
    leads                      all lead ids (score 0: ordered by id, i.e. by ULID)
    leads:channel:{ch}         \\
    leads:status:{st}           > the same, per filter of LeadQuery
    leads:seller:{seller}      /
    leads:created              all lead ids by created_at (LeadQuery.since)
    leads:new                  NEW leads by created_at (the /ops counts)
    event:{id}                 hash: seq, lead_id, channel, external_id, doc (record + raw)
    events, events:channel:{ch}, events:lead:{lead}   event ids by seq (the order stored)
    rk:{replay key}            event id first stored under (channel, external_id) or an
                               Idempotency-Key
    ident:{key}                set of lead ids of an identity key ("phone:+7916...")
    rr                         round robin of the day in progress: day, earlier, s:{seller}
    leads:count_day            hash lead id -> the day (ISO) its assignment counted in,
                               written with the lead (what the embedded store keeps per lead)
    checkpoints                hash name -> value
    intake:{ch}                hash "{bucket}:{outcome}" -> count; intake:buckets:{ch} the
                               buckets by start; intake:last hash channel -> last received_at
    q:{id}, q:all              quarantine rows, ids
    conv:{id}                  conversation hash; convkey:{ch}\\x1f{account}\\x1f{chat} -> id;
                               conv:{id}:lines hash external id -> line id;
                               lead:{id}:convs the conversations with lines on a lead
    msg:{id}, msgs:lead:{lead} transcript lines, a lead's lines by seq
    ob:{id} ...                the outbox (gateway.store.redis_outbox has its indexes)
    inbox:{id} ...             the inbox (gateway.store.redis_inbox)
    seq:{name}                 counters for ids and the order stored

Keys a Lua script builds from the prefix are not declared to Redis: this layout is for one
server or a Sentinel group, not Redis Cluster.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, cast

from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError, WatchError

from gateway.store.base import StoreUnavailable

SEP = "\x1f"

# A row with its order number taken at commit: KEYS[1] the counter, KEYS[2] the row's hash,
# KEYS[3..] sorted sets that get ARGV[1] scored by that number; ARGV[2..] field, value pairs.
INSERT_IN_ORDER = """
local seq = redis.call('INCR', KEYS[1])
redis.call('HSET', KEYS[2], 'seq', seq, unpack(ARGV, 2))
for i = 3, #KEYS do redis.call('ZADD', KEYS[i], seq, ARGV[1]) end
return seq
"""


def queue_script(
    pipe: Pipeline, source: str, keys: list[str], args: list[str | bytes | int]
) -> None:
    """Queue a Lua script in a transaction (or a batch) as its text, EVAL. By its hash
    (EVALSHA), a script the server forgot — a restart, a failover — would fail inside EXEC
    while the transaction's other commands apply; redis-py guards against that with a
    SCRIPT EXISTS round trip before every such transaction. The text costs a few hundred
    bytes and nothing more: Redis compiles a script once and keeps it."""
    pipe.eval(source, len(keys), *keys, *args)


class Keys:
    def __init__(self, prefix: str) -> None:
        self.p = prefix
        self.leads = f"{prefix}leads"
        self.leads_new = f"{prefix}leads:new"
        self.leads_created = f"{prefix}leads:created"
        self.events = f"{prefix}events"
        self.rr = f"{prefix}rr"
        self.count_days = f"{prefix}leads:count_day"
        self.checkpoints = f"{prefix}checkpoints"
        self.intake_last = f"{prefix}intake:last"
        self.quarantine_all = f"{prefix}q:all"

    def lead(self, lead_id: str) -> str:
        return f"{self.p}lead:{lead_id}"

    def leads_by(self, name: str, value: str) -> str:
        return f"{self.p}leads:{name}:{value}"

    def event(self, event_id: str) -> str:
        return f"{self.p}event:{event_id}"

    def events_of_channel(self, channel: str) -> str:
        return f"{self.p}events:channel:{channel}"

    def events_of_lead(self, lead_id: str) -> str:
        return f"{self.p}events:lead:{lead_id}"

    def seq(self, name: str) -> str:
        return f"{self.p}seq:{name}"

    def replay(self, rk: str) -> str:
        return f"{self.p}rk:{rk}"

    def identity(self, key: str) -> str:
        return f"{self.p}ident:{key}"

    def intake(self, channel: str) -> str:
        return f"{self.p}intake:{channel}"

    def intake_buckets(self, channel: str) -> str:
        return f"{self.p}intake:buckets:{channel}"

    def quarantine(self, entry_id: int | str) -> str:
        return f"{self.p}q:{entry_id}"

    def conversation(self, conversation_id: str) -> str:
        return f"{self.p}conv:{conversation_id}"

    def conversation_key(self, channel: str, account: str, chat: str) -> str:
        return f"{self.p}convkey:{channel}{SEP}{account}{SEP}{chat}"

    def conversation_lines(self, conversation_id: str) -> str:
        return f"{self.p}conv:{conversation_id}:lines"

    def lead_conversations(self, lead_id: str) -> str:
        return f"{self.p}lead:{lead_id}:convs"

    def message(self, message_id: str) -> str:
        return f"{self.p}msg:{message_id}"

    def messages_of_lead(self, lead_id: str) -> str:
        return f"{self.p}msgs:lead:{lead_id}"

    def outbox(self, item_id: int | str) -> str:
        return f"{self.p}ob:{item_id}"

    def inbox(self, entry_id: int | str) -> str:
        return f"{self.p}inbox:{entry_id}"

    def inbox_key(self, channel: str, account: str, key: str) -> str:
        return f"{self.p}inboxkey:{channel}{SEP}{account}{SEP}{key}"

    def inbox_thread(self, channel: str, account: str, thread: str) -> str:
        return f"{self.p}inbox:thread:{channel}{SEP}{account}{SEP}{thread}"


# --- values ------------------------------------------------------------------------------------

# The client decodes replies (gateway.redisconn: decode_responses=True), which redis-py's
# types cannot express: these name what a reply is.


def text(reply: Any) -> str:
    return cast(str, reply)


def maybe_text(reply: Any) -> str | None:
    return cast(str | None, reply)


def texts(reply: Any) -> list[str]:
    return cast(list[str], reply)


def fields(reply: Any) -> dict[str, str]:
    """A hash as HGETALL returns it ({} when there is none)."""
    return cast(dict[str, str], reply)


def ts(moment: datetime) -> str:
    """A moment as stored: UTC epoch seconds, the shortest text that reads back exactly."""
    return repr(moment.timestamp())


def moment(value: str) -> datetime:
    return datetime.fromtimestamp(float(value), UTC)


def maybe_moment(value: str | None) -> datetime | None:
    return None if value is None or value == "" else moment(value)


def pack_bytes(data: bytes) -> str:
    """Bodies are bytes (a malformed mail, a binary payload); replies are decoded as text."""
    return base64.b64encode(data).decode("ascii")


def unpack_bytes(value: str | None) -> bytes:
    return base64.b64decode(value) if value else b""


# --- errors ------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def unavailable() -> AsyncIterator[None]:
    """A Redis that cannot answer (connection lost, timed out, read-only after a failover,
    refusing writes) is a store that cannot serve: callers answer 503, never 2xx."""
    try:
        yield
    except WatchError:
        raise  # not a failure: the caller's optimistic transaction tries again
    except RedisError as exc:
        raise StoreUnavailable(f"redis: {exc}") from exc
