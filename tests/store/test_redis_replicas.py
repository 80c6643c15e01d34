"""Two replicas on one Redis: each has its own client and store on the same key prefix, and
they write at the same time. Within a replica record() goes in arrival order; between
replicas only Redis (WATCH/MULTI, Lua) keeps the truth one. What the contract promises for
one store must hold for the pair: one lead per person, one event per sender id, round-robin
counts equal to the leads stored, outbox items claimed by one replica only, a chat's inbox
entries handled one at a time in the order kept."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
import redis.asyncio

from gateway.inbox import InboxEntry, InboxState, InboxUpdate
from gateway.models import Outcome
from gateway.store.base import LeadQuery, Recorded
from gateway.store.redis import RedisStore
from tests.redis_server import RedisTarget

from .contract import T0, make_event, record, rr

PHONE = "+79161234567"
SELLERS = ("anna", "boris", "vera")


@pytest.fixture
async def replicas(redis_target: RedisTarget) -> AsyncIterator[tuple[RedisStore, RedisStore]]:
    stores = [
        RedisStore(
            redis.asyncio.Redis.from_url(redis_target.url, decode_responses=True),
            prefix=redis_target.prefix,
        )
        for _ in range(2)
    ]
    for store in stores:
        await store.open()
    try:
        yield stores[0], stores[1]
    finally:
        for store in stores:
            await store.close()


async def test_one_person_on_two_replicas_is_one_lead(
    replicas: tuple[RedisStore, RedisStore],
) -> None:
    a, b = replicas
    events = [
        make_event(f"same-{n}", phone=PHONE, at=T0 + timedelta(milliseconds=n)) for n in range(40)
    ]
    results = await asyncio.gather(
        *(record(a if n % 2 else b, e, assignment=rr(*SELLERS)) for n, e in enumerate(events))
    )
    outcomes = Counter(r.receipt.outcome for r in results)
    assert outcomes == {Outcome.CREATED: 1, Outcome.MERGED: 39}
    (lead,) = await b.list_leads(LeadQuery())
    full = await a.get_lead(lead.id)
    assert full is not None and len(full.events) == 40
    assert sum((await a.assignment_counts(T0.date())).values()) == 1


async def test_round_robin_stays_even_and_true_across_replicas(
    replicas: tuple[RedisStore, RedisStore],
) -> None:
    a, b = replicas
    events = [make_event(f"n{n}", phone=f"+7903{n:07d}") for n in range(60)]
    results: list[Recorded] = await asyncio.gather(
        *(record(a if n % 3 else b, e, assignment=rr(*SELLERS)) for n, e in enumerate(events))
    )
    chosen = Counter(r.assignment.seller_id for r in results if r.assignment)
    assert chosen == {"anna": 20, "boris": 20, "vera": 20}
    assert await a.assignment_counts(T0.date()) == await b.assignment_counts(T0.date()) == chosen
    for r in results:
        lead = await b.get_lead(r.receipt.lead_id or "")
        assert lead is not None and r.assignment is not None
        assert lead.assigned_to == r.assignment.seller_id


async def test_a_sender_retrying_on_both_replicas_is_one_event(
    replicas: tuple[RedisStore, RedisStore],
) -> None:
    a, b = replicas
    event = make_event("order-7", phone=PHONE)
    results = await asyncio.gather(*(record(a if n % 2 else b, event) for n in range(20)))
    assert Counter(r.receipt.outcome for r in results) == {
        Outcome.CREATED: 1,
        Outcome.REPLAYED: 19,
    }
    assert len({r.receipt.event_id for r in results}) == 1


async def test_claims_on_two_replicas_never_share_an_item(
    replicas: tuple[RedisStore, RedisStore],
) -> None:
    a, b = replicas
    for n in range(30):
        await record(a, make_event(f"c{n}", phone=f"+7903{n:07d}"))
    now = T0 + timedelta(seconds=1)
    batches = await asyncio.gather(
        *(
            (a if n % 2 else b).claim_outbox(now, 4, owner=f"replica-{n % 2}", lease_seconds=60)
            for n in range(10)
        )
    )
    ids = [item.id for batch in batches for item in batch]
    assert len(ids) == len(set(ids)) == 30


async def test_a_chats_inbox_entries_go_one_at_a_time_in_order_across_replicas(
    replicas: tuple[RedisStore, RedisStore],
) -> None:
    a, b = replicas
    chats, per_chat = 6, 5
    entries = [
        InboxEntry("telegram", "shop", f"{n}", b"{}", thread=f"chat-{n % chats}")
        for n in range(chats * per_chat)
    ]
    await a.inbox_put(entries, T0)
    now = T0 + timedelta(seconds=1)
    handled: dict[str, list[int]] = {}
    holding: dict[str, str] = {}  # chat -> the replica whose claim holds one of its entries

    async def worker(store: RedisStore, name: str) -> None:
        idle = 0
        while idle < 20:
            items = await store.inbox_claim(now, 2, owner=name, lease_seconds=60)
            if not items:
                idle += 1
                await asyncio.sleep(0.001)
                continue
            idle = 0
            for item in items:
                assert item.thread is not None
                assert holding.get(item.thread, name) == name, "two replicas hold one chat"
                holding[item.thread] = name
            await asyncio.sleep(0.002)  # the work, while other claims run
            for item in items:
                assert item.thread is not None
                handled.setdefault(item.thread, []).append(item.id)
                holding.pop(item.thread, None)
            await store.update_inbox(
                [InboxUpdate(i.id, InboxState.DONE) for i in items], now, owner=name
            )

    await asyncio.gather(*(worker(a if n % 2 else b, f"replica-{n}") for n in range(4)))
    assert sorted(handled) == [f"chat-{n}" for n in range(chats)]
    for ids in handled.values():
        assert len(ids) == per_chat and ids == sorted(ids)
    assert await a.list_inbox(InboxState.PENDING) == []
