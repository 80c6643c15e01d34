"""The outbox half of the Store contract, run against every implementation.

Claims with an owner and a lease, outcomes, retry, the dead-letter queue, stats, purge,
lead links and the `attempted` flag, as the Store protocol's docstrings promise them.
Leads are made the one way they are made in production: the pipeline's accept() over
the store under test (or over its server, for a store that does not record itself).

Add an implementation by adding a factory to IMPLEMENTATIONS.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis.asyncio

from gateway.config import load_settings
from gateway.metrics import Metrics
from gateway.models import Channel, Contact, LeadEvent, Outcome, Receipt
from gateway.store.base import OutboxItem, OutboxKind, OutboxState, OutboxUpdate, Store
from gateway.store.redis import RedisStore
from gateway.store.sqlite import SQLiteStore, StoreRole
from gateway.web import make_pipeline
from tests.redis_server import shared_session

T0 = datetime(2026, 1, 12, 8, 0, tzinfo=UTC)
NOW = T0 + timedelta(seconds=1)
LEASE = 60.0
SINK = "bitrix24"


@dataclass
class Harness:
    store: Store  # the store under test
    accept: Callable[[LeadEvent], Awaitable[Receipt]]  # the way in: pipeline.accept
    writer: Store  # what records (the store itself, or the server beside a client)


async def _sqlite(tmp_path: Path, role: StoreRole) -> AsyncIterator[Harness]:
    path = tmp_path / "leadgate.db"
    settings = load_settings(
        None, store={"path": str(path)}, sellers=[{"id": "anna", "name": "Анна"}]
    )
    server = SQLiteStore(path)
    await server.open()
    pipeline = make_pipeline(settings, server, Metrics())
    tested: Store = server
    if role is StoreRole.CLIENT:
        # The CLI's store beside the running server: it claims and updates through short
        # transactions of its own while the server keeps recording.
        tested = SQLiteStore(path, role=StoreRole.CLIENT)
        await tested.open()
    try:
        yield Harness(store=tested, accept=pipeline.accept, writer=server)
    finally:
        if tested is not server:
            await tested.close()
        await server.close()


async def sqlite_server(tmp_path: Path) -> AsyncIterator[Harness]:
    async for harness in _sqlite(tmp_path, StoreRole.SERVER):
        yield harness


async def sqlite_client(tmp_path: Path) -> AsyncIterator[Harness]:
    async for harness in _sqlite(tmp_path, StoreRole.CLIENT):
        yield harness


async def _redis(tmp_path: Path, replicas: int) -> AsyncIterator[Harness]:
    """A Redis store under a key prefix of its own; with two replicas, the store under test
    is a second gateway's on the same data while the first one records."""
    target = shared_session().target()
    settings = load_settings(
        None, store={"path": str(tmp_path / "unused.db")}, sellers=[{"id": "anna", "name": "Анна"}]
    )
    stores = [
        RedisStore(
            redis.asyncio.Redis.from_url(target.url, decode_responses=True), prefix=target.prefix
        )
        for _ in range(replicas)
    ]
    for store in stores:
        await store.open()
    pipeline = make_pipeline(settings, stores[0], Metrics())
    try:
        yield Harness(store=stores[-1], accept=pipeline.accept, writer=stores[0])
    finally:
        for store in stores:
            await store.close()
        target.cleanup()


async def redis_one(tmp_path: Path) -> AsyncIterator[Harness]:
    async for harness in _redis(tmp_path, 1):
        yield harness


async def redis_replica(tmp_path: Path) -> AsyncIterator[Harness]:
    async for harness in _redis(tmp_path, 2):
        yield harness


IMPLEMENTATIONS: dict[str, Callable[[Path], AsyncIterator[Harness]]] = {
    "sqlite": sqlite_server,
    "sqlite-client": sqlite_client,
    "redis": redis_one,
    "redis-replica": redis_replica,
}


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
async def outbox_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    async for harness in IMPLEMENTATIONS[request.param](tmp_path):
        yield harness


def order(n: int, phone: str | None = None, at: datetime = T0) -> LeadEvent:
    return LeadEvent(
        channel=Channel.ORDERS,
        external_id=f"o-{n}",
        occurred_at=at,
        received_at=at,
        contact=Contact(name="Пётр", phones=(phone or f"+7916000{n:04d}",)),
    )


async def seed(h: Harness, n: int) -> list[str]:
    """n new leads (each with its lead.created item), oldest first; their lead ids."""
    ids = []
    for i in range(n):
        receipt = await h.accept(order(i, at=T0 + timedelta(milliseconds=i)))
        assert receipt.outcome is Outcome.CREATED and receipt.lead_id is not None
        ids.append(receipt.lead_id)
    return ids


async def claim(
    h: Harness, owner: str, now: datetime = NOW, limit: int = 10, *, mark: bool = True
) -> list[OutboxItem]:
    return await h.store.claim_outbox(now, limit, owner=owner, lease_seconds=LEASE, mark=mark)


# --- claims ---------------------------------------------------------------------------------


async def test_claim_returns_due_pending_items_oldest_first(outbox_store: Harness) -> None:
    h = outbox_store
    leads = await seed(h, 3)
    items = await claim(h, "a", limit=2)
    assert [i.lead_id for i in items] == leads[:2]
    assert all(isinstance(i.state, OutboxState) and isinstance(i.kind, OutboxKind) for i in items)
    assert [(i.state, i.kind) for i in items] == [(OutboxState.PENDING, OutboxKind.CREATED)] * 2
    assert all(i.claimed_by == "a" for i in items)
    assert all(i.claimed_until == NOW + timedelta(seconds=LEASE) for i in items)
    # The claim is what the store now says about them, to anyone who looks.
    stored = {i.id: i for i in await h.store.outbox()}
    assert all(stored[i.id].claimed_by == "a" for i in items)
    assert stored[items[0].id].claimed_until == NOW + timedelta(seconds=LEASE)
    rest = await claim(h, "b")
    assert [i.lead_id for i in rest] == leads[2:]


async def test_items_not_yet_due_wait(outbox_store: Harness) -> None:
    h = outbox_store
    await seed(h, 1)
    assert await claim(h, "a", now=T0 - timedelta(days=1)) == []
    (item,) = await claim(h, "a")
    later = NOW + timedelta(hours=1)
    await h.store.update_outbox(
        SINK,
        [OutboxUpdate(item.id, OutboxState.PENDING, error="boom", next_attempt_at=later)],
        NOW,
        owner="a",
    )
    assert await claim(h, "b", now=later - timedelta(seconds=1)) == []  # backing off
    (again,) = await claim(h, "b", now=later)
    assert again.id == item.id and again.attempts == 1


async def test_a_held_item_is_never_claimed_again_while_the_lease_runs(
    outbox_store: Harness,
) -> None:
    h = outbox_store
    await seed(h, 2)
    (first,) = await claim(h, "a", limit=1)
    just_before = NOW + timedelta(seconds=LEASE - 1)
    others = await claim(h, "b", now=just_before)
    assert len(others) == 1 and others[0].id != first.id
    # Not even its own holder gets it twice: a second worker of the same owner must not.
    assert await claim(h, "a", now=just_before) == []


async def test_an_expired_claim_is_taken_over(outbox_store: Harness) -> None:
    h = outbox_store
    await seed(h, 1)
    (held,) = await claim(h, "a")
    expiry = NOW + timedelta(seconds=LEASE)
    (taken,) = await claim(h, "b", now=expiry)
    assert taken.id == held.id
    assert taken.claimed_by == "b" and taken.claimed_until == expiry + timedelta(seconds=LEASE)
    assert taken.attempted  # a's claim left the trace: b looks before it creates


async def test_concurrent_claims_never_share_an_item(outbox_store: Harness) -> None:
    h = outbox_store
    await seed(h, 7)
    batches = await asyncio.gather(*(claim(h, f"w{n}", limit=2) for n in range(5)))
    ids = [i.id for batch in batches for i in batch]
    assert len(ids) == len(set(ids)) == 7


# --- outcomes -------------------------------------------------------------------------------


async def test_an_update_from_a_holder_who_lost_the_claim_is_refused(
    outbox_store: Harness,
) -> None:
    h = outbox_store
    await seed(h, 2)
    a_items = await claim(h, "a")
    held, kept = a_items
    expiry = NOW + timedelta(seconds=LEASE)
    # b takes over only the first (it asks for one); a's claim on the second ran out too,
    # but nobody took it over, so a still holds it.
    (taken,) = await claim(h, "b", now=expiry, limit=1)
    assert taken.id == held.id
    late = expiry + timedelta(seconds=5)
    refused = await h.store.update_outbox(
        SINK,
        [
            OutboxUpdate(held.id, OutboxState.DEAD, error="a's late verdict"),
            OutboxUpdate(kept.id, OutboxState.DELIVERED, remote_id="202"),
        ],
        late,
        owner="a",
    )
    assert refused == [held.id]
    by_id = {i.id: i for i in await h.store.outbox()}
    assert (by_id[held.id].state, by_id[held.id].claimed_by) == (OutboxState.PENDING, "b")
    assert by_id[held.id].last_error is None
    assert (by_id[kept.id].state, by_id[kept.id].remote_id) == (OutboxState.DELIVERED, "202")

    # b finishes; a late word from a after that changes nothing either.
    assert (
        await h.store.update_outbox(
            SINK, [OutboxUpdate(held.id, OutboxState.DELIVERED, remote_id="101")], late, owner="b"
        )
        == []
    )
    again = await h.store.update_outbox(
        SINK,
        [OutboxUpdate(held.id, OutboxState.PENDING, error="a again", next_attempt_at=late)],
        late,
        owner="a",
    )
    assert again == [held.id]
    item = {i.id: i for i in await h.store.outbox()}[held.id]
    assert (item.state, item.remote_id, item.attempts) == (OutboxState.DELIVERED, "101", 1)
    links = await h.store.lead_links(SINK, [taken.lead_id])
    assert links[taken.lead_id].remote_id == "101"  # a's refused update wrote no link


async def test_an_update_for_an_unclaimed_item_is_refused(outbox_store: Harness) -> None:
    h = outbox_store
    await seed(h, 1)
    (item,) = await h.store.outbox()
    refused = await h.store.update_outbox(
        SINK, [OutboxUpdate(item.id, OutboxState.DEAD, error="who?")], NOW, owner="a"
    )
    assert refused == [item.id]
    assert (await h.store.outbox())[0].state is OutboxState.PENDING
    assert await h.store.update_outbox(SINK, [], NOW, owner="a") == []


async def test_delivered_pending_and_dead_outcomes(outbox_store: Harness) -> None:
    h = outbox_store
    leads = await seed(h, 3)
    a, b, c = await claim(h, "w")
    due = NOW + timedelta(hours=1)
    refused = await h.store.update_outbox(
        SINK,
        [
            OutboxUpdate(a.id, OutboxState.DELIVERED, remote_id="101"),
            OutboxUpdate(b.id, OutboxState.PENDING, error="boom", next_attempt_at=due),
            OutboxUpdate(c.id, OutboxState.DEAD, error="bad field"),
        ],
        NOW,
        owner="w",
    )
    assert refused == []
    by_id = {i.id: i for i in await h.store.outbox()}
    done, waiting, dead = by_id[a.id], by_id[b.id], by_id[c.id]
    assert (done.state, done.remote_id, done.delivered_at, done.attempts, done.last_error) == (
        OutboxState.DELIVERED,
        "101",
        NOW,
        1,
        None,
    )
    assert (waiting.state, waiting.next_attempt_at, waiting.last_error, waiting.attempts) == (
        OutboxState.PENDING,
        due,
        "boom",
        1,
    )
    assert (dead.state, dead.last_error, dead.attempts) == (OutboxState.DEAD, "bad field", 1)
    # Every outcome ends the claim.
    assert all(i.claimed_by is None and i.claimed_until is None for i in by_id.values())
    links = await h.store.lead_links(SINK, leads)
    assert (links[leads[0]].state, links[leads[0]].remote_id) == (OutboxState.DELIVERED, "101")
    assert (links[leads[1]].state, links[leads[1]].remote_id) == (OutboxState.PENDING, None)
    assert (links[leads[2]].state, links[leads[2]].remote_id) == (OutboxState.DEAD, None)


async def test_an_outcome_that_used_no_attempt(outbox_store: Harness) -> None:
    """WAIT/THROTTLE/HALT: no attempt counted; `attempted` put back as it was."""
    h = outbox_store
    await seed(h, 1)
    (item,) = await claim(h, "w")
    assert item.attempted is False
    await h.store.update_outbox(
        SINK,
        [
            OutboxUpdate(
                item.id,
                OutboxState.PENDING,
                error="wait",
                next_attempt_at=NOW,
                count_attempt=False,
                attempted=item.attempted,
            )
        ],
        NOW,
        owner="w",
    )
    (after,) = await h.store.outbox()
    assert (after.attempts, after.attempted, after.last_error) == (0, False, "wait")


# --- the attempted flag ---------------------------------------------------------------------


async def test_claiming_marks_attempted_durably_and_returns_the_previous_flag(
    outbox_store: Harness,
) -> None:
    h = outbox_store
    await seed(h, 2)
    first = await claim(h, "w", limit=1)
    assert [i.attempted for i in first] == [False]  # as it was before this claim
    assert [i.attempted for i in await h.store.outbox()] == [True, False]
    # Without `mark` (a sink that acts only inside the process) no trace is left.
    second = await claim(h, "w", mark=False)
    assert [i.attempted for i in second] == [False]
    assert [i.attempted for i in await h.store.outbox()] == [True, False]
    # An update that does not mention the flag keeps it.
    await h.store.update_outbox(
        SINK,
        [
            OutboxUpdate(first[0].id, OutboxState.PENDING, error="x", next_attempt_at=NOW),
            OutboxUpdate(second[0].id, OutboxState.PENDING, error="x", next_attempt_at=NOW),
        ],
        NOW,
        owner="w",
    )
    assert [i.attempted for i in await h.store.outbox()] == [True, False]
    again = await claim(h, "w")
    assert [i.attempted for i in again] == [True, False]


# --- retry, DLQ, stats, purge, links --------------------------------------------------------


async def test_retry_of_dead_items_by_ids_and_all(outbox_store: Harness) -> None:
    h = outbox_store
    await seed(h, 4)
    a, b, c, d = await claim(h, "w")
    due = NOW + timedelta(hours=1)
    await h.store.update_outbox(
        SINK,
        [
            OutboxUpdate(a.id, OutboxState.DELIVERED, remote_id="1"),
            OutboxUpdate(b.id, OutboxState.PENDING, error="later", next_attempt_at=due),
            OutboxUpdate(c.id, OutboxState.DEAD, error="bad"),
            OutboxUpdate(d.id, OutboxState.DEAD, error="bad"),
        ],
        NOW,
        owner="w",
    )
    assert await h.store.retry_outbox([a.id], NOW) == 0  # delivered: left alone
    assert await h.store.retry_outbox([999_999], NOW) == 0  # unknown
    assert await h.store.retry_outbox([c.id], NOW) == 1  # one dead item by id
    assert await h.store.retry_outbox([b.id], NOW) == 1  # waiting: made due now
    assert await h.store.retry_outbox(None, NOW) == 1  # all dead: d is left
    assert await h.store.retry_outbox(None, NOW) == 0
    by_id = {i.id: i for i in await h.store.outbox()}
    for item_id in (b.id, c.id, d.id):
        item = by_id[item_id]
        assert (item.state, item.attempts, item.next_attempt_at) == (OutboxState.PENDING, 0, NOW)
        assert item.attempted  # the trace survives a retry: the sink may have seen it
    assert by_id[a.id].state is OutboxState.DELIVERED
    due_now = await claim(h, "w")
    assert {i.id for i in due_now} == {b.id, c.id, d.id}


async def test_the_dead_letter_queue_lists_dead_items_oldest_first(outbox_store: Harness) -> None:
    h = outbox_store
    await seed(h, 5)
    items = await claim(h, "w")
    dead = [items[0], items[2], items[3]]
    await h.store.update_outbox(
        SINK,
        [OutboxUpdate(i.id, OutboxState.DEAD, error=f"e{i.id}") for i in dead]
        + [OutboxUpdate(items[1].id, OutboxState.DELIVERED, remote_id="9")],
        NOW,
        owner="w",
    )
    dlq = await h.store.outbox(OutboxState.DEAD)
    assert [i.id for i in dlq] == [i.id for i in dead]
    assert [i.last_error for i in dlq] == [f"e{i.id}" for i in dead]
    page = await h.store.outbox(OutboxState.DEAD, 2)
    rest = await h.store.outbox(OutboxState.DEAD, 2, after_id=page[-1].id)
    assert [i.id for i in page + rest] == [i.id for i in dead]
    assert [i.id for i in await h.store.outbox(OutboxState.PENDING)] == [items[4].id]
    assert len(await h.store.outbox()) == 5


async def test_stats_count_pending_and_dead_and_date_the_oldest(outbox_store: Harness) -> None:
    h = outbox_store
    empty = await h.store.outbox_stats()
    assert (empty.pending, empty.dead, empty.oldest_pending_at) == (0, 0, None)
    await seed(h, 3)
    first, *_ = await claim(h, "w", limit=1)
    await h.store.update_outbox(
        SINK, [OutboxUpdate(first.id, OutboxState.DEAD, error="x")], NOW, owner="w"
    )
    stats = await h.store.outbox_stats()
    assert (stats.pending, stats.dead) == (2, 1)
    assert stats.oldest_pending_at == T0 + timedelta(milliseconds=1)  # the dead one is not


async def test_purge_forgets_old_delivered_items_and_keeps_lead_links(
    outbox_store: Harness,
) -> None:
    h = outbox_store
    leads = await seed(h, 3)
    a, b, c = await claim(h, "w")
    await h.store.update_outbox(
        SINK, [OutboxUpdate(a.id, OutboxState.DELIVERED, remote_id="101")], NOW, owner="w"
    )
    later = NOW + timedelta(days=1)
    await h.store.update_outbox(
        SINK, [OutboxUpdate(b.id, OutboxState.DELIVERED, remote_id="102")], later, owner="w"
    )
    await h.store.purge_outbox(NOW + timedelta(seconds=1))
    assert [i.id for i in await h.store.outbox()] == [b.id, c.id]
    links = await h.store.lead_links(SINK, leads)
    assert (links[leads[0]].state, links[leads[0]].remote_id) == (None, "101")
    assert links[leads[1]].remote_id == "102"


async def test_lead_links_per_sink_and_kinds(outbox_store: Harness) -> None:
    h = outbox_store
    (lead,) = await seed(h, 1)
    merged = await h.accept(order(50, phone="+79160000000", at=T0 + timedelta(seconds=0.5)))
    assert merged.outcome is Outcome.MERGED and merged.lead_id == lead
    created, joined = await claim(h, "w")
    assert (created.kind, joined.kind) == (OutboxKind.CREATED, OutboxKind.MERGED)
    assert created.lead_id == joined.lead_id == lead
    await h.store.update_outbox(
        SINK,
        [
            OutboxUpdate(created.id, OutboxState.DELIVERED, remote_id="77"),
            OutboxUpdate(joined.id, OutboxState.DELIVERED, remote_id="comment-5"),
        ],
        NOW,
        owner="w",
    )
    links = await h.store.lead_links(SINK, [lead, "no-such-lead"])
    assert set(links) == {lead}
    assert (links[lead].state, links[lead].remote_id) == (OutboxState.DELIVERED, "77")
    other = await h.store.lead_links("webhook", [lead])
    assert (other[lead].state, other[lead].remote_id) == (OutboxState.DELIVERED, None)
    assert await h.store.lead_links(SINK, []) == {}
