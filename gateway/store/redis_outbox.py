"""The outbox in the Redis store: rows as hashes, every change of state a Lua script.

Indexes (under the prefix), kept by the scripts below and nothing else:

    ob:{id}                  the row (a hash; an absent field is NULL)
    ob:all                   every id (score: the id)
    ob:st:{state}:{kind}     ids per state and kind (listings, counts, "retry all dead")
    ob:due:{kind}            pending ids by next_attempt_at (what a claim looks at)
    ob:pc:{kind}             pending ids by created_at (the oldest pending)
    ob:th:{conv}:{kind}      pending ids of one conversation and kind: only the smallest
                             may be claimed (messages go in order)
    ob:done                  delivered and closed ids by delivered_at (the purge)
    ob:leadrow               lead id -> its lead.created row (lead links)
    links:{sink}             lead id -> the sink's id for it (kept through purges)

An id is taken inside the script that adds the row, so ids grow in the order rows are
committed: a conversation's message N+1 can never get a smaller id than message N.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.commands.core import AsyncScript

from gateway.store.base import (
    LeadLink,
    OutboxItem,
    OutboxKind,
    OutboxState,
    OutboxStats,
    OutboxUpdate,
)
from gateway.store.redis_keys import (
    Keys,
    maybe_moment,
    moment,
    queue_script,
    text,
    texts,
    ts,
    unavailable,
)

Lua = Callable[[str], AsyncScript]

_PRELUDE = """
local P = ARGV[1]
local function row(id) return P .. 'ob:' .. id end
local function unpend(id, kind, conv)
  redis.call('ZREM', P .. 'ob:due:' .. kind, id)
  redis.call('ZREM', P .. 'ob:pc:' .. kind, id)
  if conv then redis.call('ZREM', P .. 'ob:th:' .. conv .. ':' .. kind, id) end
end
local function pend(id, kind, conv, due, created)
  redis.call('ZADD', P .. 'ob:due:' .. kind, due, id)
  redis.call('ZADD', P .. 'ob:pc:' .. kind, created, id)
  if conv then redis.call('ZADD', P .. 'ob:th:' .. conv .. ':' .. kind, id, id) end
end
local function restate(id, kind, from, to)
  redis.call('ZREM', P .. 'ob:st:' .. from .. ':' .. kind, id)
  redis.call('ZADD', P .. 'ob:st:' .. to .. ':' .. kind, id, id)
end
"""

# ARGV: prefix, lead_id, event_id, kind, due, created, state, message_id, conversation_id
# ('' for none). Returns the new id.
_ADD = (
    _PRELUDE
    + """
local id = redis.call('INCR', P .. 'seq:ob')
local kind, state = ARGV[4], ARGV[7]
local f = {'id', id, 'lead_id', ARGV[2], 'event_id', ARGV[3], 'kind', kind, 'state', state,
  'attempts', 0, 'next_attempt_at', ARGV[5], 'created_at', ARGV[6], 'attempted', 0}
local conv = nil
if ARGV[8] ~= '' then table.insert(f, 'message_id'); table.insert(f, ARGV[8]) end
if ARGV[9] ~= '' then
  conv = ARGV[9]
  table.insert(f, 'conversation_id'); table.insert(f, conv)
end
if state == 'delivered' then table.insert(f, 'delivered_at'); table.insert(f, ARGV[6]) end
redis.call('HSET', row(id), unpack(f))
redis.call('ZADD', P .. 'ob:all', id, id)
redis.call('ZADD', P .. 'ob:st:' .. state .. ':' .. kind, id, id)
if state == 'pending' then
  pend(id, kind, conv, ARGV[5], ARGV[6])
else
  redis.call('ZADD', P .. 'ob:done', ARGV[6], id)
end
if kind == 'lead.created' then redis.call('HSET', P .. 'ob:leadrow', ARGV[2], id) end
return id
"""
)

# ARGV: prefix, now, until, owner, mark ('1'/'0'), limit, kinds... Returns the rows taken
# as they were before the claim.
_CLAIM = (
    _PRELUDE
    + """
local now, limit = tonumber(ARGV[2]), tonumber(ARGV[6])
local candidates = {}
for i = 7, #ARGV do
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', P .. 'ob:due:' .. ARGV[i], '-inf', ARGV[2])) do
    table.insert(candidates, tonumber(id))
  end
end
table.sort(candidates)
local out = {}
for _, id in ipairs(candidates) do
  if #out >= limit then break end
  local key = row(id)
  local f = redis.call('HMGET', key, 'claimed_by', 'claimed_until', 'conversation_id', 'kind',
    'state')
  local free = f[5] == 'pending' and ((not f[1]) or tonumber(f[2]) <= now)
  if free and f[3] then
    local first = redis.call('ZRANGE', P .. 'ob:th:' .. f[3] .. ':' .. f[4], 0, 0)
    free = first[1] == tostring(id)
  end
  if free then
    table.insert(out, redis.call('HGETALL', key))
    redis.call('HSET', key, 'claimed_by', ARGV[4], 'claimed_until', ARGV[3])
    if ARGV[5] == '1' then redis.call('HSET', key, 'attempted', 1) end
  end
end
return out
"""
)

# ARGV: prefix, sink, at, owner, updates (JSON). Returns the ids refused (not held by owner).
_UPDATE = (
    _PRELUDE
    + """
local sink, at, owner = ARGV[2], ARGV[3], ARGV[4]
local refused = {}
for _, u in ipairs(cjson.decode(ARGV[5])) do
  local key = row(u.id)
  local f = redis.call('HMGET', key, 'claimed_by', 'kind', 'state', 'lead_id', 'message_id',
    'conversation_id')
  if f[1] ~= owner then
    table.insert(refused, u.id)
  else
    local kind, conv = f[2], f[6]
    if u.message_status and f[5] then
      local mk = P .. 'msg:' .. f[5]
      if redis.call('EXISTS', mk) == 1 then
        redis.call('HSET', mk, 'status', u.message_status)
        if u.error then
          redis.call('HSET', mk, 'status_reason', u.error)
        else
          redis.call('HDEL', mk, 'status_reason')
        end
        if u.remote_id then
          redis.call('HSET', mk, 'external_id', u.remote_id)
          if conv then redis.call('HSETNX', P .. 'conv:' .. conv .. ':lines', u.remote_id, f[5]) end
        end
        if u.message_status == 'sent' and conv then
          local ck = P .. 'conv:' .. conv
          local last = redis.call('HGET', ck, 'last_outbound_at')
          if redis.call('EXISTS', ck) == 1 and (not last or tonumber(last) < tonumber(at)) then
            redis.call('HSET', ck, 'last_outbound_at', at)
          end
        end
      end
    end
    if u.state == 'delivered' then
      if u.remote_id and kind == 'lead.created' then
        redis.call('HSET', P .. 'links:' .. sink, f[4], u.remote_id)
      end
      redis.call('HSET', key, 'state', 'delivered', 'delivered_at', at)
      if u.remote_id then
        redis.call('HSET', key, 'remote_id', u.remote_id)
      else
        redis.call('HDEL', key, 'remote_id')
      end
      redis.call('HDEL', key, 'last_error')
      unpend(u.id, kind, conv)
      restate(u.id, kind, f[3], 'delivered')
      redis.call('ZADD', P .. 'ob:done', at, u.id)
    elseif u.state == 'pending' then
      local due = u.next_attempt_at or at
      redis.call('HSET', key, 'next_attempt_at', due)
      if u.error then redis.call('HSET', key, 'last_error', u.error) end
      if u.attempted then redis.call('HSET', key, 'attempted', u.attempted) end
      redis.call('ZADD', P .. 'ob:due:' .. kind, due, u.id)
    else
      redis.call('HSET', key, 'state', u.state)
      if u.error then
        redis.call('HSET', key, 'last_error', u.error)
      else
        redis.call('HDEL', key, 'last_error')
      end
      if u.attempted then redis.call('HSET', key, 'attempted', u.attempted) end
      unpend(u.id, kind, conv)
      restate(u.id, kind, f[3], u.state)
      if u.state == 'closed' then
        redis.call('HSET', key, 'delivered_at', at)
        redis.call('ZADD', P .. 'ob:done', at, u.id)
      else
        redis.call('HDEL', key, 'delivered_at')
      end
    end
    redis.call('HINCRBY', key, 'attempts', u.step)
    redis.call('HDEL', key, 'claimed_by', 'claimed_until')
  end
end
return refused
"""
)

# ARGV: prefix, now, ids (JSON; '' = every dead item), kinds... Returns how many changed.
_RETRY = (
    _PRELUDE
    + """
local now = ARGV[2]
local targets = {}
if ARGV[3] == '' then
  for i = 4, #ARGV do
    for _, id in ipairs(redis.call('ZRANGE', P .. 'ob:st:dead:' .. ARGV[i], 0, -1)) do
      table.insert(targets, id)
    end
  end
else
  targets = cjson.decode(ARGV[3])
end
local n = 0
for _, id in ipairs(targets) do
  local key = row(id)
  local f = redis.call('HMGET', key, 'state', 'kind', 'message_id', 'conversation_id',
    'created_at')
  if f[1] == 'dead' or (f[1] == 'pending' and ARGV[3] ~= '') then
    n = n + 1
    if f[2] == 'message.out' and f[3] then
      local mk = P .. 'msg:' .. f[3]
      if redis.call('EXISTS', mk) == 1 then
        redis.call('HSET', mk, 'status', 'queued')
        redis.call('HDEL', mk, 'status_reason')
      end
    end
    -- Fresh attempts; `attempted` stays: the sink may hold a trace of the earlier tries.
    redis.call('HSET', key, 'state', 'pending', 'attempts', 0, 'next_attempt_at', now)
    if f[1] == 'dead' then
      restate(id, f[2], 'dead', 'pending')
      pend(id, f[2], f[4], now, f[5])
    else
      redis.call('ZADD', P .. 'ob:due:' .. f[2], now, id)
    end
  end
end
return n
"""
)

# ARGV: prefix, before, batch size. Forgets up to a batch of rows finished before a moment;
# returns how many.
_PURGE = (
    _PRELUDE
    + """
local ids = redis.call('ZRANGEBYSCORE', P .. 'ob:done', '-inf', '(' .. ARGV[2], 'LIMIT', 0,
  tonumber(ARGV[3]))
for _, id in ipairs(ids) do
  local key = row(id)
  local f = redis.call('HMGET', key, 'state', 'kind', 'lead_id')
  redis.call('DEL', key)
  redis.call('ZREM', P .. 'ob:all', id)
  redis.call('ZREM', P .. 'ob:done', id)
  if f[1] then redis.call('ZREM', P .. 'ob:st:' .. f[1] .. ':' .. f[2], id) end
  if f[2] == 'lead.created' and redis.call('HGET', P .. 'ob:leadrow', f[3]) == id then
    redis.call('HDEL', P .. 'ob:leadrow', f[3])
  end
end
return #ids
"""
)

# A row brought over from another store with its id and fields (leadgate store copy).
# ARGV: prefix, id, then field, value pairs; the counter moves past the id.
_RESTORE = (
    _PRELUDE
    + """
local id = tonumber(ARGV[2])
local f = {}
for i = 3, #ARGV, 2 do f[ARGV[i]] = ARGV[i + 1] end
redis.call('HSET', row(id), 'id', id, unpack(ARGV, 3))
redis.call('ZADD', P .. 'ob:all', id, id)
redis.call('ZADD', P .. 'ob:st:' .. f.state .. ':' .. f.kind, id, id)
if f.state == 'pending' then
  pend(id, f.kind, f.conversation_id, f.next_attempt_at, f.created_at)
elseif f.state == 'delivered' or f.state == 'closed' then
  redis.call('ZADD', P .. 'ob:done', f.delivered_at or f.created_at, id)
end
if f.kind == 'lead.created' then redis.call('HSET', P .. 'ob:leadrow', f.lead_id, id) end
if id > tonumber(redis.call('GET', P .. 'seq:ob') or '0') then
  redis.call('SET', P .. 'seq:ob', id)
end
return id
"""
)

_PURGE_BATCH = 1000
_ALL_KINDS = tuple(k.value for k in OutboxKind)


def add_outbox(
    pipe: Pipeline,
    k: Keys,
    *,
    lead_id: str,
    event_id: str,
    kind: OutboxKind,
    due: str,
    state: OutboxState = OutboxState.PENDING,
    message_id: str | None = None,
    conversation_id: str | None = None,
) -> None:
    """Queue a new row on `pipe` (inside its transaction): its id is taken at commit."""
    queue_script(
        pipe,
        _ADD,
        [],
        [
            k.p,
            lead_id,
            event_id,
            kind.value,
            due,
            due,
            state.value,
            message_id or "",
            conversation_id or "",
        ],
    )


def restore_outbox(pipe: Pipeline, k: Keys, item: OutboxItem) -> None:
    """Queue `item` as it is (its id, state, attempts, flag, link id), without a claim."""
    optional = {
        "last_error": item.last_error,
        "delivered_at": ts(item.delivered_at) if item.delivered_at else None,
        "remote_id": item.remote_id,
        "message_id": item.message_id,
        "conversation_id": item.conversation_id,
    }
    fields = {
        "lead_id": item.lead_id,
        "event_id": item.event_id,
        "kind": item.kind.value,
        "state": item.state.value,
        "attempts": str(item.attempts),
        "next_attempt_at": ts(item.next_attempt_at),
        "created_at": ts(item.created_at),
        "attempted": "1" if item.attempted else "0",
        **{name: value for name, value in optional.items() if value is not None},
    }
    pairs = [part for pair in fields.items() for part in pair]
    queue_script(pipe, _RESTORE, [], [k.p, item.id, *pairs])


def outbox_item(raw: Mapping[str, str]) -> OutboxItem:
    return OutboxItem(
        id=int(raw["id"]),
        lead_id=raw.get("lead_id", ""),
        event_id=raw.get("event_id", ""),
        kind=OutboxKind(raw["kind"]),
        state=OutboxState(raw["state"]),
        attempts=int(raw.get("attempts", "0")),
        next_attempt_at=moment(raw["next_attempt_at"]),
        created_at=moment(raw["created_at"]),
        last_error=raw.get("last_error"),
        delivered_at=maybe_moment(raw.get("delivered_at")),
        remote_id=raw.get("remote_id"),
        attempted=raw.get("attempted", "0") == "1",
        claimed_by=raw.get("claimed_by"),
        claimed_until=maybe_moment(raw.get("claimed_until")),
        message_id=raw.get("message_id"),
        conversation_id=raw.get("conversation_id"),
    )


def _pairs(flat: Sequence[str]) -> dict[str, str]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _kinds(kinds: Collection[OutboxKind] | None) -> tuple[str, ...]:
    return _ALL_KINDS if kinds is None else tuple(OutboxKind(k).value for k in kinds)


def _update_doc(u: OutboxUpdate) -> dict[str, Any]:
    doc: dict[str, Any] = {"id": u.id, "state": u.state.value, "step": 1 if u.count_attempt else 0}
    if u.state not in OutboxState:
        raise ValueError(f"unknown outbox state {u.state!r}")
    if u.error is not None:
        doc["error"] = u.error
    if u.remote_id is not None:
        doc["remote_id"] = u.remote_id
    if u.next_attempt_at is not None:
        doc["next_attempt_at"] = ts(u.next_attempt_at)
    if u.attempted is not None:
        doc["attempted"] = "1" if u.attempted else "0"
    if u.message_status is not None:
        doc["message_status"] = u.message_status.value
    return doc


class OutboxMethods:
    """Mixed into RedisStore, which provides the client, the key layout and `_lua`."""

    _r: aioredis.Redis
    k: Keys
    _lua: Lua

    async def _outbox_rows(self, ids: Sequence[str | int]) -> list[OutboxItem]:
        if not ids:
            return []
        async with self._r.pipeline(transaction=False) as pipe:
            for item_id in ids:
                pipe.hgetall(self.k.outbox(item_id))
            rows = await pipe.execute()
        return [outbox_item(row) for row in rows if row]

    async def outbox(
        self, state: OutboxState | None = None, limit: int = 100, *, after_id: int = 0
    ) -> list[OutboxItem]:
        p = self.k.p
        async with unavailable():
            if state is None:
                ids = [
                    int(i)
                    for i in texts(
                        await self._r.zrangebyscore(
                            f"{p}ob:all", f"({after_id}", "+inf", start=0, num=limit
                        )
                    )
                ]
            else:
                merged: list[int] = []
                for kind in _ALL_KINDS:
                    merged += map(
                        int,
                        await self._zrange_ids(
                            f"{p}ob:st:{OutboxState(state).value}:{kind}",
                            f"({after_id}",
                            "+inf",
                            start=0,
                            num=limit,
                        ),
                    )
                ids = sorted(merged)[:limit]
            return await self._outbox_rows(ids)

    async def _zrange_ids(
        self, key: str, low: str, high: str, *, start: int, num: int
    ) -> list[str]:
        return texts(await self._r.zrangebyscore(key, low, high, start=start, num=num))

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
        until = now + timedelta(seconds=lease_seconds)
        if limit <= 0:
            return []
        async with unavailable():
            rows = await self._lua(_CLAIM)(
                [],
                [self.k.p, ts(now), ts(until), owner, "1" if mark else "0", limit, *_kinds(kinds)],
            )
        return [
            replace(outbox_item(_pairs(row)), claimed_by=owner, claimed_until=until)
            for row in rows
        ]

    async def update_outbox(
        self, sink: str, updates: Sequence[OutboxUpdate], at: datetime, *, owner: str
    ) -> list[int]:
        if not updates:
            return []
        docs = orjson.dumps([_update_doc(u) for u in updates])
        async with unavailable():
            refused = await self._lua(_UPDATE)([], [self.k.p, sink, ts(at), owner, docs])
        return [int(i) for i in refused]

    async def lead_links(self, sink: str, lead_ids: Sequence[str]) -> dict[str, LeadLink]:
        if not lead_ids:
            return {}
        p = self.k.p
        async with unavailable():
            remote = texts(await self._r.hmget(f"{p}links:{sink}", list(lead_ids)))
            rows = texts(await self._r.hmget(f"{p}ob:leadrow", list(lead_ids)))
            async with self._r.pipeline(transaction=False) as pipe:
                for row_id in rows:
                    if row_id is not None:
                        pipe.hget(self.k.outbox(text(row_id)), "state")
                states = iter(await pipe.execute())
        out: dict[str, LeadLink] = {}
        for lead_id, remote_id, row_id in zip(lead_ids, remote, rows, strict=True):
            state = next(states) if row_id is not None else None
            if remote_id is None and state is None:
                continue
            out[lead_id] = LeadLink(
                state=OutboxState(state) if state is not None else None, remote_id=remote_id
            )
        return out

    async def retry_outbox(self, ids: Sequence[int] | None, now: datetime) -> int:
        targets = "" if ids is None else orjson.dumps(sorted(set(ids))).decode()
        if ids is not None and not ids:
            return 0
        async with unavailable():
            changed = await self._lua(_RETRY)([], [self.k.p, ts(now), targets, *_ALL_KINDS])
        return int(changed)

    async def outbox_stats(self, kinds: Collection[OutboxKind] | None = None) -> OutboxStats:
        p = self.k.p
        names = _kinds(kinds)
        async with unavailable(), self._r.pipeline(transaction=False) as pipe:
            for kind in names:
                pipe.zcard(f"{p}ob:st:pending:{kind}")
                pipe.zcard(f"{p}ob:st:dead:{kind}")
                pipe.zrange(f"{p}ob:pc:{kind}", 0, 0, withscores=True)
            found = await pipe.execute()
        pending = sum(int(found[i]) for i in range(0, len(found), 3))
        dead = sum(int(found[i]) for i in range(1, len(found), 3))
        oldest = [float(first[0][1]) for first in found[2::3] if first]
        return OutboxStats(
            pending=pending,
            dead=dead,
            oldest_pending_at=moment(repr(min(oldest))) if oldest else None,
        )

    async def purge_outbox(self, delivered_before: datetime) -> None:
        async with unavailable():
            while True:
                gone = await self._lua(_PURGE)([], [self.k.p, ts(delivered_before), _PURGE_BATCH])
                if int(gone) < _PURGE_BATCH:
                    return
