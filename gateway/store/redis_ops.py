"""The Redis store's side of what ops watch and decide: intake counts per channel, the open
leads' counts for the /ops page, and the quarantine's states.

Intake is a rollup written in the events' own transactions (gateway.store.redis), one hash
field per (bucket, outcome) per channel with a sorted set of the buckets: the /ops page
reads the buckets of its window, never the events.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime

import orjson
import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

from gateway.models import Channel, Lead, LeadStatus, Outcome
from gateway.store.base import (
    INTAKE_BUCKET_SECONDS,
    IntakeCount,
    OpenLeadStats,
    QuarantineEntry,
    QuarantineState,
)
from gateway.store.redis_keys import (
    Keys,
    fields,
    maybe_moment,
    moment,
    texts,
    ts,
    unavailable,
    unpack_bytes,
)

Lua = Callable[[str], AsyncScript]

# KEYS: the entry; ARGV: state, note ('' = none, with ARGV[4] = '0'), at, has note, expect
# ('' = any). 1 when it moved.
_MARK = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if ARGV[5] ~= '' and redis.call('HGET', KEYS[1], 'state') ~= ARGV[5] then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'updated_at', ARGV[3])
if ARGV[4] == '1' then
  redis.call('HSET', KEYS[1], 'note', ARGV[2])
else
  redis.call('HDEL', KEYS[1], 'note')
end
return 1
"""

_PAGE = 200
# Replays store nothing, so they are never counted.
_COUNTED = tuple(o.value for o in Outcome if o is not Outcome.REPLAYED)


def quarantine_entry(raw: Mapping[str, str]) -> QuarantineEntry:
    return QuarantineEntry(
        id=int(raw["id"]),
        channel=raw["channel"],
        reason=raw["reason"],
        received_at=moment(raw["received_at"]),
        headers=orjson.loads(raw["headers"]),
        body=unpack_bytes(raw.get("body")),
        state=QuarantineState(raw.get("state", "kept")),
        note=raw.get("note"),
        updated_at=maybe_moment(raw.get("updated_at")),
    )


class OpsMethods:
    """Mixed into RedisStore, which provides the client, the key layout and `_lua`."""

    _r: aioredis.Redis
    k: Keys
    _lua: Lua

    async def list_quarantine(
        self,
        channel: str | None = None,
        limit: int = 100,
        *,
        after_id: int = 0,
        state: QuarantineState | None = None,
    ) -> list[QuarantineEntry]:
        found: list[QuarantineEntry] = []
        offset = 0
        async with unavailable():
            while len(found) < limit:
                ids = texts(
                    await self._r.zrangebyscore(
                        self.k.quarantine_all, f"({after_id}", "+inf", start=offset, num=_PAGE
                    )
                )
                if not ids:
                    break
                offset += len(ids)
                for entry in await self._quarantine_rows(ids):
                    if (channel is None or entry.channel == channel) and (
                        state is None or entry.state is QuarantineState(state)
                    ):
                        found.append(entry)
                        if len(found) == limit:
                            break
        return found

    async def _quarantine_rows(self, ids: list[str]) -> list[QuarantineEntry]:
        async with self._r.pipeline(transaction=False) as pipe:
            for entry_id in ids:
                pipe.hgetall(self.k.quarantine(entry_id))
            rows = await pipe.execute()
        return [quarantine_entry(row) for row in rows if row]

    async def get_quarantine(self, entry_id: int) -> QuarantineEntry | None:
        async with unavailable():
            found = await self._quarantine_rows([str(entry_id)])
        return found[0] if found else None

    async def mark_quarantine(
        self,
        entry_id: int,
        state: QuarantineState,
        note: str | None,
        at: datetime,
        *,
        expect: QuarantineState | None = None,
    ) -> bool:
        async with unavailable():
            moved = await self._lua(_MARK)(
                [self.k.quarantine(entry_id)],
                [
                    QuarantineState(state).value,
                    note or "",
                    ts(at),
                    "0" if note is None else "1",
                    "" if expect is None else QuarantineState(expect).value,
                ],
            )
        return bool(moved)

    async def delete_quarantine(self, entry_id: int) -> bool:
        async with unavailable(), self._r.pipeline(transaction=True) as pipe:
            pipe.delete(self.k.quarantine(entry_id))
            pipe.zrem(self.k.quarantine_all, str(entry_id))
            deleted, _ = await pipe.execute()
        return bool(deleted)

    async def intake(self, since: datetime) -> list[IntakeCount]:
        start = int(since.timestamp() // INTAKE_BUCKET_SECONDS) * INTAKE_BUCKET_SECONDS
        found: list[IntakeCount] = []
        async with unavailable():
            for channel in Channel:
                buckets = texts(
                    await self._r.zrangebyscore(self.k.intake_buckets(channel.value), start, "+inf")
                )
                if not buckets:
                    continue
                names = [f"{b}:{o}" for b in buckets for o in _COUNTED]
                counts = texts(await self._r.hmget(self.k.intake(channel.value), names))
                for name, count in zip(names, counts, strict=True):
                    if count is not None and int(count) > 0:
                        bucket, outcome = name.split(":", 1)
                        found.append(
                            IntakeCount(moment(bucket), channel.value, outcome, int(count))
                        )
        found.sort(key=lambda c: (c.bucket_start, c.channel, c.outcome))
        return found

    async def last_event_at(self) -> dict[str, datetime]:
        async with unavailable():
            last = fields(await self._r.hgetall(self.k.intake_last))
        return {channel: moment(at) for channel, at in sorted(last.items())}

    async def open_lead_stats(self, since: datetime, now: datetime) -> OpenLeadStats:
        new = unassigned = overdue = 0
        async with unavailable():
            ids = texts(await self._r.zrangebyscore(self.k.leads_new, since.timestamp(), "+inf"))
            for start in range(0, len(ids), _PAGE):
                chunk = ids[start : start + _PAGE]
                for doc in await self._r.mget([self.k.lead(i) for i in chunk]):
                    if doc is None:
                        continue
                    lead = Lead.model_validate_json(doc)
                    if lead.status is not LeadStatus.NEW or lead.created_at < since:
                        continue
                    new += 1
                    unassigned += lead.assigned_to is None
                    overdue += lead.sla_due_at < now
        return OpenLeadStats(new=new, unassigned=unassigned, overdue=overdue)
