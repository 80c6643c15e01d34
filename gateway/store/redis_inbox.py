"""The inbox in the Redis store: pushed input kept before it is answered, handled after.

Every change is one Lua script, so a put's duplicate check and its insert (and the
poller's checkpoint) are one step on the server, whichever replica puts; a claim sees
every entry of a chat at once, so a chat's entries are claimed in order across replicas.
Layout:

    inbox:{id}                        the entry (body base64: replies are decoded text)
    inboxkey:{ch}\\x1f{acct}\\x1f{key}  -> id: the key is remembered until purge_inbox
    inbox:all, inbox:st:{state}       ids (score: the id)
    inbox:due                         pending ids by next_attempt_at
    inbox:thread:{ch}\\x1f{acct}\\x1f{thread}  a chat's pending ids (score: the id)
    inbox:done                        done ids by received_at (what purge_inbox forgets)
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

from gateway.inbox import InboxEntry, InboxItem, InboxState, InboxStats, InboxUpdate
from gateway.store.redis_keys import (
    Keys,
    maybe_moment,
    moment,
    pack_bytes,
    texts,
    ts,
    unavailable,
    unpack_bytes,
)

Lua = Callable[[str], AsyncScript]

_PRELUDE = """
local P = ARGV[1]
local function row(id) return P .. 'inbox:' .. id end
local function restate(id, from, to)
  redis.call('ZREM', P .. 'inbox:st:' .. from, id)
  redis.call('ZADD', P .. 'inbox:st:' .. to, id, id)
end
-- The sorted set of a chat's pending entries; nil for an entry of no chat.
local function thread_of(key)
  local f = redis.call('HMGET', key, 'channel', 'account', 'thread')
  if not f[3] then return nil end
  return P .. 'inbox:thread:' .. f[1] .. '\\31' .. f[2] .. '\\31' .. f[3]
end
"""

# ARGV: prefix, at, checkpoint name ('' = none), checkpoint value, then per entry: channel,
# account, key, headers, body, thread ('' = none). One 1/0 per entry (0: a duplicate).
_PUT = (
    _PRELUDE
    + """
local at = ARGV[2]
local out = {}
for i = 5, #ARGV, 6 do
  local ik = P .. 'inboxkey:' .. ARGV[i] .. '\\31' .. ARGV[i + 1] .. '\\31' .. ARGV[i + 2]
  if redis.call('EXISTS', ik) == 1 then
    table.insert(out, 0)
  else
    local id = redis.call('INCR', P .. 'seq:inbox')
    redis.call('SET', ik, id)
    redis.call('HSET', row(id), 'id', id, 'channel', ARGV[i], 'account', ARGV[i + 1],
      'key', ARGV[i + 2], 'state', 'pending', 'attempts', 0, 'received_at', at,
      'next_attempt_at', at, 'headers', ARGV[i + 3], 'body', ARGV[i + 4])
    redis.call('ZADD', P .. 'inbox:all', id, id)
    redis.call('ZADD', P .. 'inbox:st:pending', id, id)
    redis.call('ZADD', P .. 'inbox:due', at, id)
    if ARGV[i + 5] ~= '' then
      redis.call('HSET', row(id), 'thread', ARGV[i + 5])
      redis.call('ZADD', thread_of(row(id)), id, id)
    end
    table.insert(out, 1)
  end
end
if ARGV[3] ~= '' then redis.call('HSET', P .. 'checkpoints', ARGV[3], ARGV[4]) end
return out
"""
)

# ARGV: prefix, now, until, owner, limit, channel ('' = any). The rows taken, as they were.
# An entry of a chat waits while an older pending one of that chat is due later (its retry)
# or held by a claim that still runs; the entries taken are chosen before any is marked,
# so several due ones of a chat go in one claim, in order.
_CLAIM = (
    _PRELUDE
    + """
local now, limit = tonumber(ARGV[2]), tonumber(ARGV[5])
local function held(f)
  return f[1] ~= false and f[2] ~= false and tonumber(f[2]) > now
end
local function waits(key, id)
  local thread = thread_of(key)
  if not thread then return false end
  for _, older in ipairs(redis.call('ZRANGEBYSCORE', thread, '-inf', '(' .. id)) do
    local f = redis.call('HMGET', row(older), 'claimed_by', 'claimed_until', 'next_attempt_at')
    if tonumber(f[3]) > now or held(f) then return true end
  end
  return false
end
local candidates = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', P .. 'inbox:due', '-inf', ARGV[2])) do
  table.insert(candidates, tonumber(id))
end
table.sort(candidates)
local taken = {}
for _, id in ipairs(candidates) do
  if #taken >= limit then break end
  local key = row(id)
  local f = redis.call('HMGET', key, 'state', 'claimed_by', 'claimed_until', 'channel')
  if f[1] == 'pending' and not held({f[2], f[3]})
      and (ARGV[6] == '' or f[4] == ARGV[6]) and not waits(key, id) then
    table.insert(taken, key)
  end
end
local out = {}
for _, key in ipairs(taken) do
  table.insert(out, redis.call('HGETALL', key))
  redis.call('HSET', key, 'claimed_by', ARGV[4], 'claimed_until', ARGV[3])
end
return out
"""
)

# ARGV: prefix, at, owner, updates (JSON). The ids refused (not held by owner).
_UPDATE = (
    _PRELUDE
    + """
local at, owner = ARGV[2], ARGV[3]
local refused = {}
for _, u in ipairs(cjson.decode(ARGV[4])) do
  local key = row(u.id)
  local f = redis.call('HMGET', key, 'claimed_by', 'state')
  if f[1] ~= owner then
    table.insert(refused, u.id)
  else
    if u.state == 'done' then
      -- The body is no longer needed (its events keep the payload): the key stays.
      redis.call('HSET', key, 'state', 'done', 'body', '')
      redis.call('HDEL', key, 'last_error')
      redis.call('ZREM', P .. 'inbox:due', u.id)
      restate(u.id, f[2], 'done')
      redis.call('ZADD', P .. 'inbox:done', redis.call('HGET', key, 'received_at'), u.id)
      local thread = thread_of(key)
      if thread then redis.call('ZREM', thread, u.id) end
    elseif u.state == 'pending' then
      local due = u.next_attempt_at or at
      redis.call('HSET', key, 'next_attempt_at', due)
      if u.error then redis.call('HSET', key, 'last_error', u.error) end
      redis.call('ZADD', P .. 'inbox:due', due, u.id)
    else
      redis.call('HSET', key, 'state', 'dead')
      if u.error then
        redis.call('HSET', key, 'last_error', u.error)
      else
        redis.call('HDEL', key, 'last_error')
      end
      redis.call('ZREM', P .. 'inbox:due', u.id)
      restate(u.id, f[2], 'dead')
      -- A dead entry holds up nothing: a person looks at it, the chat goes on.
      local thread = thread_of(key)
      if thread then redis.call('ZREM', thread, u.id) end
    end
    redis.call('HINCRBY', key, 'attempts', u.step)
    redis.call('HDEL', key, 'claimed_by', 'claimed_until')
  end
end
return refused
"""
)

# ARGV: prefix, now, ids (JSON; '' = every dead entry). How many changed.
_RETRY = (
    _PRELUDE
    + """
local now = ARGV[2]
local targets
if ARGV[3] == '' then
  targets = redis.call('ZRANGE', P .. 'inbox:st:dead', 0, -1)
else
  targets = cjson.decode(ARGV[3])
end
local n = 0
for _, id in ipairs(targets) do
  local key = row(id)
  if redis.call('HGET', key, 'state') == 'dead' then
    n = n + 1
    redis.call('HSET', key, 'state', 'pending', 'attempts', 0, 'next_attempt_at', now)
    restate(id, 'dead', 'pending')
    redis.call('ZADD', P .. 'inbox:due', now, id)
    local thread = thread_of(key)
    if thread then redis.call('ZADD', thread, id, id) end
  end
end
return n
"""
)

# ARGV: prefix, done_before, most to forget. How many were forgotten (keys included: a
# vendor's repeat is then new).
_PURGE = (
    _PRELUDE
    + """
local ids = redis.call('ZRANGEBYSCORE', P .. 'inbox:done', '-inf', '(' .. ARGV[2],
  'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do
  local key = row(id)
  local f = redis.call('HMGET', key, 'channel', 'account', 'key', 'state')
  if f[4] == 'done' then
    redis.call('DEL', P .. 'inboxkey:' .. f[1] .. '\\31' .. f[2] .. '\\31' .. f[3], key)
    redis.call('ZREM', P .. 'inbox:all', id)
    redis.call('ZREM', P .. 'inbox:st:done', id)
  end
  redis.call('ZREM', P .. 'inbox:done', id)
end
return #ids
"""
)

_PAGE = 200
# Entries one purge script forgets: the server is busy for a few milliseconds at a time.
_PURGE_BATCH = 500


def inbox_item(raw: Mapping[str, str]) -> InboxItem:
    return InboxItem(
        id=int(raw["id"]),
        channel=raw["channel"],
        account=raw["account"],
        key=raw["key"],
        body=unpack_bytes(raw.get("body")),
        headers=orjson.loads(raw["headers"]),
        state=InboxState(raw["state"]),
        attempts=int(raw.get("attempts", "0")),
        received_at=moment(raw["received_at"]),
        next_attempt_at=moment(raw["next_attempt_at"]),
        last_error=raw.get("last_error"),
        claimed_by=raw.get("claimed_by"),
        claimed_until=maybe_moment(raw.get("claimed_until")),
        thread=raw.get("thread"),
    )


def _update_doc(u: InboxUpdate) -> dict[str, Any]:
    if u.state not in InboxState:
        raise ValueError(f"unknown inbox state {u.state!r}")
    doc: dict[str, Any] = {"id": u.id, "state": u.state.value, "step": 1 if u.count_attempt else 0}
    if u.error is not None:
        doc["error"] = u.error
    if u.next_attempt_at is not None:
        doc["next_attempt_at"] = ts(u.next_attempt_at)
    return doc


class InboxMethods:
    """Mixed into RedisStore, which provides the client, the key layout and `_lua`."""

    _r: aioredis.Redis
    _w: aioredis.Redis  # acknowledged writes (see RedisStore.replicated)
    exclusive: Callable[[], contextlib.AbstractAsyncContextManager[object]]
    replicated: Callable[[], Awaitable[None]]
    k: Keys
    _lua: Lua

    async def inbox_put(
        self,
        entries: Sequence[InboxEntry],
        at: datetime,
        checkpoint: tuple[str, str] | None = None,
    ) -> list[bool]:
        args: list[Any] = [self.k.p, ts(at), *(checkpoint or ("", ""))]
        for e in entries:
            args += [
                e.channel,
                e.account,
                e.key,
                orjson.dumps(e.headers),
                pack_bytes(e.body),
                e.thread or "",
            ]
        if not entries and checkpoint is None:
            return []
        async with self.exclusive(), unavailable():
            # Through the writer under its lock: an entry acknowledged to a vendor is one
            # the replicas have (min_replicas).
            kept = await self._lua(_PUT)([], args, client=self._w)
            await self.replicated()
        return [bool(int(x)) for x in kept]

    async def inbox_claim(
        self,
        now: datetime,
        limit: int,
        *,
        owner: str,
        lease_seconds: float,
        channel: str | None = None,
    ) -> list[InboxItem]:
        until = now + timedelta(seconds=lease_seconds)
        if limit <= 0:
            return []
        async with unavailable():
            rows = await self._lua(_CLAIM)(
                [], [self.k.p, ts(now), ts(until), owner, limit, channel or ""]
            )
        return [
            replace(
                inbox_item(dict(zip(row[::2], row[1::2], strict=True))),
                claimed_by=owner,
                claimed_until=until,
            )
            for row in rows
        ]

    async def update_inbox(
        self, updates: Sequence[InboxUpdate], at: datetime, *, owner: str
    ) -> list[int]:
        if not updates:
            return []
        docs = orjson.dumps([_update_doc(u) for u in updates])
        async with unavailable():
            refused = await self._lua(_UPDATE)([], [self.k.p, ts(at), owner, docs])
        return [int(i) for i in refused]

    async def list_inbox(
        self, state: InboxState | None = None, limit: int = 100, *, after_id: int = 0
    ) -> list[InboxItem]:
        p = self.k.p
        index = f"{p}inbox:all" if state is None else f"{p}inbox:st:{InboxState(state).value}"
        async with unavailable():
            ids = texts(
                await self._r.zrangebyscore(index, f"({after_id}", "+inf", start=0, num=limit)
            )
            return await self._inbox_rows(ids)

    async def _inbox_rows(self, ids: Sequence[str]) -> list[InboxItem]:
        if not ids:
            return []
        async with self._r.pipeline(transaction=False) as pipe:
            for item_id in ids:
                pipe.hgetall(f"{self.k.p}inbox:{item_id}")
            rows = await pipe.execute()
        return [inbox_item(row) for row in rows if row]

    async def inbox_stats(self) -> dict[str, InboxStats]:
        p = self.k.p
        pending: dict[str, int] = {}
        dead: dict[str, int] = {}
        oldest: dict[str, datetime] = {}
        async with unavailable():
            for state, counts in (("pending", pending), ("dead", dead)):
                ids = texts(await self._r.zrange(f"{p}inbox:st:{state}", 0, -1))
                for start in range(0, len(ids), _PAGE):
                    async with self._r.pipeline(transaction=False) as pipe:
                        for item_id in ids[start : start + _PAGE]:
                            pipe.hmget(f"{p}inbox:{item_id}", "channel", "received_at")
                        rows = await pipe.execute()
                    for channel, received in rows:
                        if channel is None:
                            continue
                        counts[channel] = counts.get(channel, 0) + 1
                        if state == "pending":
                            at = moment(received)
                            if channel not in oldest or at < oldest[channel]:
                                oldest[channel] = at
        return {
            channel: InboxStats(
                pending=pending.get(channel, 0),
                dead=dead.get(channel, 0),
                oldest_pending_at=oldest.get(channel),
            )
            for channel in sorted(set(pending) | set(dead))
        }

    async def purge_inbox(self, done_before: datetime) -> int:
        purged = 0
        async with unavailable():
            while True:
                n = int(await self._lua(_PURGE)([], [self.k.p, ts(done_before), _PURGE_BATCH]))
                purged += n
                if n < _PURGE_BATCH:
                    return purged

    async def retry_inbox(self, ids: Sequence[int] | None, now: datetime) -> int:
        if ids is not None and not ids:
            return 0
        targets = "" if ids is None else orjson.dumps(sorted(set(ids))).decode()
        async with unavailable():
            changed = await self._lua(_RETRY)([], [self.k.p, ts(now), targets])
        return int(changed)
