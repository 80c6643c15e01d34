"""Reads of the Redis store for people and tests: leads (paged by id through the sorted-set
indexes), events in the order stored, the Idempotency-Key lookup, checkpoints."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
import redis.asyncio as aioredis

from gateway.models import Channel, EventRecord, Lead
from gateway.store.base import EventQuery, LeadQuery, StoredEvent
from gateway.store.redis_keys import Keys, fields, maybe_text, texts, unavailable
from gateway.store.sqlite_queries import idempotency_key, replay_key

_PAGE = 200


def lead_from(doc: str | bytes) -> Lead:
    return Lead.model_validate_json(doc).model_copy(update={"events": ()})


async def list_leads(r: aioredis.Redis, k: Keys, query: LeadQuery) -> list[Lead]:
    """Newest first (by id, a ULID) along the most selective index of the query; the other
    filters are checked on the lead itself."""
    if query.since is not None:
        return await _leads_since(r, k, query)
    if query.assigned_to is not None:
        index = k.leads_by("seller", query.assigned_to)
    elif query.channel is not None:
        index = k.leads_by("channel", query.channel.value)
    elif query.status is not None:
        index = k.leads_by("status", query.status.value)
    else:
        index = k.leads
    upper = f"({query.before_id}" if query.before_id is not None else "+"
    found: list[Lead] = []
    offset = 0
    while len(found) < query.limit:
        ids = texts(await r.zrevrangebylex(index, upper, "-", start=offset, num=_PAGE))
        if not ids:
            break
        offset += len(ids)
        for doc in await r.mget([k.lead(i) for i in ids]):
            if doc is None:
                continue
            lead = lead_from(doc)
            if _wanted(lead, query):
                found.append(lead)
                if len(found) == query.limit:
                    break
    return found


async def _leads_since(r: aioredis.Redis, k: Keys, query: LeadQuery) -> list[Lead]:
    """The leads created in the window (by the created_at index), newest id first: a window
    costs its own leads, not the whole history."""
    assert query.since is not None
    ids = texts(await r.zrangebyscore(k.leads_created, query.since.timestamp(), "+inf"))
    if query.before_id is not None:
        ids = [i for i in ids if i < query.before_id]
    ids.sort(reverse=True)
    found: list[Lead] = []
    for start in range(0, len(ids), _PAGE):
        for doc in await r.mget([k.lead(i) for i in ids[start : start + _PAGE]]):
            if doc is not None and _wanted(lead := lead_from(doc), query):
                found.append(lead)
                if len(found) == query.limit:
                    return found
    return found


def _wanted(lead: Lead, q: LeadQuery) -> bool:
    return (
        (q.channel is None or lead.channel is q.channel)
        and (q.status is None or lead.status is q.status)
        and (q.assigned_to is None or lead.assigned_to == q.assigned_to)
        and (q.since is None or lead.created_at >= q.since)
    )


def stored_event(raw: dict[str, Any]) -> StoredEvent:
    data = orjson.loads(raw["doc"])
    return StoredEvent(
        record=EventRecord.model_validate(data["record"]),
        lead_id=raw.get("lead_id") or None,
        raw=data.get("raw"),
    )


class QueryMethods:
    """Mixed into RedisStore, which provides the client and the key layout."""

    _r: aioredis.Redis
    k: Keys

    async def _rows(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        if not ids:
            return []
        async with self._r.pipeline(transaction=False) as pipe:
            for event_id in ids:
                pipe.hgetall(self.k.event(event_id))
            return [row for row in await pipe.execute() if row]

    async def _events(self, ids: Sequence[str]) -> list[StoredEvent]:
        return [stored_event(row) for row in await self._rows(ids)]

    async def get_event(self, event_id: str) -> StoredEvent | None:
        async with unavailable():
            found = await self._events([event_id])
        return found[0] if found else None

    async def list_events(self, query: EventQuery) -> list[StoredEvent]:
        k = self.k
        async with unavailable():
            if query.external_id is not None:
                # A sender's id names at most one event per channel: the replay keys.
                channels = [query.channel.value] if query.channel is not None else None
                return await self._events_by_sender(query, channels)
            if query.lead_id is not None:
                index = k.events_of_lead(query.lead_id)
            elif query.channel is not None:
                index = k.events_of_channel(query.channel.value)
            else:
                index = k.events
            low = "-inf"
            if query.after_id is not None:
                seq = maybe_text(await self._r.hget(k.event(query.after_id), "seq"))
                low = f"({seq}" if seq is not None else "-inf"
            found: list[StoredEvent] = []
            offset = 0
            while len(found) < query.limit:
                ids = texts(
                    await self._r.zrangebyscore(index, low, "+inf", start=offset, num=_PAGE)
                )
                if not ids:
                    break
                offset += len(ids)
                for event in await self._events(ids):
                    if _event_wanted(event, query):
                        found.append(event)
                        if len(found) == query.limit:
                            break
            return found

    async def _events_by_sender(
        self, query: EventQuery, channels: list[str] | None
    ) -> list[StoredEvent]:
        assert query.external_id is not None
        names = channels if channels is not None else [c.value for c in Channel]
        keys = [self.k.replay(replay_key(name, query.external_id)) for name in names]
        rows = await self._rows([i for i in texts(await self._r.mget(keys)) if i is not None])
        floor = 0
        if query.after_id is not None:
            after = await self._r.hget(self.k.event(query.after_id), "seq")
            floor = int(after) if after is not None else 0
        rows.sort(key=lambda row: int(row["seq"]))
        events = [stored_event(row) for row in rows if int(row["seq"]) > floor]
        return [e for e in events if _event_wanted(e, query)][: query.limit]

    async def event_for_key(self, key: str) -> StoredEvent | None:
        async with unavailable():
            event_id = maybe_text(await self._r.get(self.k.replay(idempotency_key(key))))
            if event_id is None:
                return None
            found = await self._events([event_id])
        return found[0] if found else None

    async def list_checkpoints(self, prefix: str = "") -> dict[str, str]:
        async with unavailable():
            everything = fields(await self._r.hgetall(self.k.checkpoints))
        return {name: everything[name] for name in sorted(everything) if name.startswith(prefix)}


def _event_wanted(event: StoredEvent, q: EventQuery) -> bool:
    return (
        (q.channel is None or event.record.channel is q.channel)
        and (q.external_id is None or event.record.external_id == q.external_id)
        and (q.lead_id is None or event.lead_id == q.lead_id)
    )
