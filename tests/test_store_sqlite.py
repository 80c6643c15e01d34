"""SQLiteStore on its own: group commit, durability, locking, replay, failure isolation, reads."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.assign import Assignment, AssignmentRequest
from gateway.identity import identity_keys
from gateway.models import (
    Channel,
    Contact,
    Lead,
    LeadEvent,
    LeadStatus,
    Outcome,
    Receipt,
    new_id,
)
from gateway.store.base import LeadQuery, PersonMatch, Plan, PlanAction, Planner, Quarantined
from gateway.store.sqlite import SQLiteStore, StoreLocked, StoreUnavailable

T0 = datetime(2026, 1, 13, 9, 0, tzinfo=UTC)
SINCE = T0 - timedelta(days=30)


def make_event(
    external_id: str,
    *,
    phone: str | None = None,
    channel: Channel = Channel.WEBFORM,
    at: datetime = T0,
    idempotency_key: str | None = None,
) -> LeadEvent:
    return LeadEvent(
        channel=channel,
        external_id=external_id,
        idempotency_key=idempotency_key,
        occurred_at=at,
        received_at=at,
        contact=Contact(name=f"Клиент {external_id}", phones=(phone,) if phone else ()),
        text=f"обращение {external_id}",
    )


def planner(
    event: LeadEvent,
    *,
    assigned_to: str | None = "anna",
    status: LeadStatus = LeadStatus.NEW,
    calls: list[PersonMatch] | None = None,
    request: AssignmentRequest | None = None,
) -> Planner:
    """Merge into the matched open lead, else create one — what the pipeline does."""

    def plan(match: PersonMatch) -> Plan:
        if calls is not None:
            calls.append(match)
        if match.lead_id is not None:
            return Plan(PlanAction.MERGE, lead_id=match.lead_id, matched_on=match.matched_on)
        lead = Lead(
            id=new_id(),
            status=status,
            channel=event.channel,
            source_id="WEBFORM",
            contact=event.contact,
            assigned_to=assigned_to,
            after_hours=False,
            sla_due_at=event.occurred_at + timedelta(minutes=15),
            created_at=event.received_at,
            updated_at=event.received_at,
            last_event_at=event.occurred_at,
        )
        return Plan(PlanAction.CREATE, lead=lead, assignment=request)

    return plan


async def record(
    store: SQLiteStore, event: LeadEvent, *, since: datetime = SINCE, **kw: Any
) -> Receipt:
    recorded = await store.record(event, identity_keys(event.contact), since, planner(event, **kw))
    return recorded.receipt


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "store.db"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(db_path)
    await s.open()
    yield s
    await s.close()


def count(db_path: Path, table: str) -> int:
    with sqlite3.connect(db_path) as db:
        (n,) = db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()
    return int(n)


# --- group commit and durability --------------------------------------------------------------


async def test_500_concurrent_records_commit_in_few_batches(db_path: Path) -> None:
    store = SQLiteStore(db_path)
    await store.open()
    batches: list[int] = []
    settle = store._settle

    def spy(batch: list[Any], error: Exception | None) -> None:
        batches.append(len(batch))
        assert error is None
        settle(batch, error)

    store._settle = spy  # type: ignore[method-assign]
    events = [make_event(f"e{n}", phone=f"+7916{n:07d}") for n in range(500)]
    receipts = await asyncio.gather(*(record(store, e) for e in events))
    assert all(r.outcome is Outcome.CREATED for r in receipts)
    assert [r.event_id for r in receipts] == [e.id for e in events]
    assert len({r.lead_id for r in receipts}) == 500
    # Every acknowledgment waited for a commit, and commits were shared.
    assert sum(batches) == 500
    assert len(batches) <= 10, batches
    await store.close()

    assert count(db_path, "leads") == 500
    assert count(db_path, "events") == 500
    assert count(db_path, "outbox") == 500
    reopened = SQLiteStore(db_path)
    await reopened.open()
    try:
        for e, r in zip(events[::50], receipts[::50], strict=True):
            assert r.lead_id is not None
            lead = await reopened.get_lead(r.lead_id)
            assert lead is not None
            assert [ev.id for ev in lead.events] == [e.id]
        # Replays are recognised from disk after a restart.
        again = await record(reopened, events[7])
        assert again == receipts[7].model_copy(update={"outcome": Outcome.REPLAYED})
    finally:
        await reopened.close()


async def test_max_batch_bounds_the_batch_size(db_path: Path) -> None:
    store = SQLiteStore(db_path, max_batch=16)
    await store.open()
    batches: list[int] = []
    settle = store._settle
    store._settle = lambda b, e: (batches.append(len(b)), settle(b, e))[1]  # type: ignore[method-assign]
    await asyncio.gather(*(record(store, make_event(f"m{n}")) for n in range(100)))
    await store.close()
    assert sum(batches) == 100
    assert max(batches) <= 16
    assert count(db_path, "events") == 100


async def test_close_answers_every_caller_in_flight(db_path: Path) -> None:
    store = SQLiteStore(db_path, max_batch=10_000)
    await store.open()
    tasks = [
        asyncio.create_task(record(store, make_event(f"cl{n}", phone=f"+7916{n:07d}")))
        for n in range(1000)
    ]
    await asyncio.sleep(0)  # every record() has decided and queued; the commit loop has them
    await store.close()
    # No caller is left waiting on a batch that close() cut off.
    done, pending = await asyncio.wait(tasks, timeout=30)
    assert not pending
    receipts = [t.result() for t in done]
    assert all(r.outcome is Outcome.CREATED for r in receipts)
    assert count(db_path, "events") == 1000


async def test_acknowledged_means_on_disk(store: SQLiteStore, db_path: Path) -> None:
    receipt = await record(store, make_event("durable-1", phone="+79161234567"))
    # Another connection (another process, in effect) sees it the moment record() returns.
    with sqlite3.connect(db_path) as db:
        row = db.execute("SELECT lead_id, outcome FROM events WHERE id = ?", (receipt.event_id,))
        assert row.fetchone() == (receipt.lead_id, "created")


async def test_second_store_on_same_path_is_locked(store: SQLiteStore, db_path: Path) -> None:
    other = SQLiteStore(db_path)
    with pytest.raises(StoreLocked):
        await other.open()
    # The first store is unaffected.
    assert (await record(store, make_event("after-lock"))).outcome is Outcome.CREATED


async def test_lock_is_released_on_close(db_path: Path) -> None:
    first = SQLiteStore(db_path)
    await first.open()
    r = await record(first, make_event("one", phone="+79161234567"))
    await first.close()
    second = SQLiteStore(db_path)
    await second.open()
    try:
        lead = await second.get_lead(r.lead_id or "")
        assert lead is not None
        # Identity survives the restart: the same person merges into the stored lead.
        merged = await record(second, make_event("two", phone="89161234567"))
        assert merged.outcome is Outcome.MERGED
        assert merged.lead_id == r.lead_id
    finally:
        await second.close()


# --- atomic decide-then-write -----------------------------------------------------------------


async def test_concurrent_same_external_id_is_one_event(store: SQLiteStore, db_path: Path) -> None:
    events = [make_event("same-id", phone=f"+7916000{n:04d}") for n in range(10)]
    receipts = await asyncio.gather(*(record(store, e) for e in events))
    first = receipts[0]
    assert first.outcome is Outcome.CREATED
    assert first.event_id == events[0].id
    for r in receipts[1:]:
        assert r.outcome is Outcome.REPLAYED
        assert (r.event_id, r.lead_id) == (first.event_id, first.lead_id)
    assert count(db_path, "events") == 1
    assert count(db_path, "leads") == 1


async def test_concurrent_idempotency_key_is_one_event(store: SQLiteStore) -> None:
    a = make_event("k-a", idempotency_key="idem-1")
    b = make_event("k-b", idempotency_key="idem-1")
    ra, rb = await asyncio.gather(record(store, a), record(store, b))
    assert ra.outcome is Outcome.CREATED
    assert rb.outcome is Outcome.REPLAYED
    assert rb.event_id == ra.event_id
    # Both keys of the first event now replay from disk.
    assert (await record(store, make_event("k-a"))).event_id == ra.event_id
    c = make_event("k-c", idempotency_key="idem-1")
    assert (await record(store, c)).event_id == ra.event_id


async def test_same_channel_external_id_differs_by_channel(store: SQLiteStore) -> None:
    a = await record(store, make_event("42", channel=Channel.WEBFORM))
    b = await record(store, make_event("42", channel=Channel.ORDERS))
    assert a.outcome is b.outcome is Outcome.CREATED
    assert a.event_id != b.event_id


async def test_concurrent_same_person_merges_into_pending_lead(store: SQLiteStore) -> None:
    # Decided in the same loop turn, before any commit: the second must see the first's lead.
    events = [make_event(f"p{n}", phone="+79161234567") for n in range(5)]
    receipts = await asyncio.gather(*(record(store, e) for e in events))
    assert [r.outcome for r in receipts] == [Outcome.CREATED] + [Outcome.MERGED] * 4
    assert len({r.lead_id for r in receipts}) == 1
    lead = await store.get_lead(receipts[0].lead_id or "")
    assert lead is not None
    assert [e.id for e in lead.events] == [e.id for e in events]
    assert [e.matched_on for e in lead.events] == [None] + ["phone"] * 4


async def test_match_sees_only_open_leads_in_window(store: SQLiteStore) -> None:
    phone = "+79161234567"
    old = await record(store, make_event("o1", phone=phone, at=T0 - timedelta(days=60)))
    calls: list[PersonMatch] = []
    e = make_event("o2", phone=phone)
    r = (await store.record(e, identity_keys(e.contact), SINCE, planner(e, calls=calls))).receipt
    assert r.outcome is Outcome.CREATED
    assert r.lead_id != old.lead_id
    assert calls == [PersonMatch(lead_id=None, matched_on=None, previous_owner="anna")]


async def test_junk_lead_is_not_matched_nor_an_owner(store: SQLiteStore) -> None:
    phone = "+79161234567"
    junk = await record(store, make_event("j1", phone=phone), status=LeadStatus.JUNK)
    calls: list[PersonMatch] = []
    e = make_event("j2", phone=phone)
    r = (await store.record(e, identity_keys(e.contact), SINCE, planner(e, calls=calls))).receipt
    assert r.lead_id != junk.lead_id
    assert calls == [PersonMatch()]


# --- other writes -----------------------------------------------------------------------------


async def test_quarantine_is_kept(store: SQLiteStore, db_path: Path) -> None:
    await store.quarantine(
        Quarantined("phone", "bad signature body", b"\x00\xffraw", {"X-Sig": "abc"}),
        checkpoint=("imap:INBOX", "uid=7"),
    )
    with sqlite3.connect(db_path) as db:
        rows = db.execute("SELECT channel, reason, headers, body FROM quarantine").fetchall()
    assert rows == [("phone", "bad signature body", b'{"X-Sig":"abc"}', b"\x00\xffraw")]
    assert await store.get_checkpoint("imap:INBOX") == "uid=7"


async def test_checkpoints(store: SQLiteStore, db_path: Path) -> None:
    assert await store.get_checkpoint("poller") is None
    await store.save_checkpoint("poller", "1")
    await store.save_checkpoint("poller", "2")
    assert await store.get_checkpoint("poller") == "2"
    # Saved with an event, in its transaction.
    e = make_event("cp-1")
    await store.record(e, (), SINCE, planner(e), ("poller", "3"))
    assert await store.get_checkpoint("poller") == "3"
    # A replay still moves the checkpoint (the poller must not fetch it again).
    await store.record(e, (), SINCE, planner(e), ("poller", "4"))
    assert await store.get_checkpoint("poller") == "4"
    await store.close()
    reopened = SQLiteStore(db_path)
    await reopened.open()
    try:
        assert await reopened.get_checkpoint("poller") == "4"
    finally:
        await reopened.close()
    await store.open()  # the fixture closes it again


async def test_replay_of_a_pending_event_still_moves_the_checkpoint(store: SQLiteStore) -> None:
    """A poller that re-reads a message whose first copy is still being committed must not
    be left behind: the checkpoint moves with the replay too."""
    e = make_event("cp-pending")
    first, second = await asyncio.gather(
        store.record(e, (), SINCE, planner(e), ("poller", "10")),
        store.record(e, (), SINCE, planner(e), ("poller", "11")),
    )
    assert second.receipt.outcome is Outcome.REPLAYED
    assert second.receipt.event_id == first.receipt.event_id
    assert await store.get_checkpoint("poller") == "11"


async def test_write_runs_statements_durably(store: SQLiteStore) -> None:
    r = await record(store, make_event("w-1"))
    (item,) = await store.outbox()
    assert (item.lead_id, item.event_id, item.state, item.kind) == (
        r.lead_id,
        r.event_id,
        "pending",
        "lead.created",
    )
    await store.write(
        [
            ("UPDATE outbox SET attempts = attempts + 1 WHERE id = ?", (item.id,)),
            (
                "UPDATE outbox SET state = 'delivered', delivered_at = ? WHERE id = ?",
                (T0.timestamp(), item.id),
            ),
        ]
    )
    (done,) = await store.outbox(state="delivered")
    assert done.attempts == 1
    assert done.delivered_at == T0
    assert await store.outbox(state="pending") == []


async def test_ping(store: SQLiteStore, db_path: Path) -> None:
    await store.ping()
    await store.close()
    with pytest.raises(StoreUnavailable):
        await store.ping()
    await store.open()


# --- failure isolation ------------------------------------------------------------------------


def add_failing_trigger(db_path: Path, external_id: str) -> None:
    with sqlite3.connect(db_path) as db:
        db.execute(
            "CREATE TRIGGER fail_one BEFORE INSERT ON events"
            f" WHEN NEW.external_id = '{external_id}'"
            " BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
        )


async def test_failed_commit_fails_only_that_batch(store: SQLiteStore, db_path: Path) -> None:
    before = await record(store, make_event("ok-1", phone="+79161234567"))
    add_failing_trigger(db_path, "doomed")

    with pytest.raises(StoreUnavailable):
        await record(store, make_event("doomed", phone="+79035550000"))
    # Nothing of the failed batch is on disk.
    with sqlite3.connect(db_path) as db:
        assert db.execute("SELECT COUNT(*) FROM events WHERE external_id='doomed'").fetchone() == (
            0,
        )
        assert db.execute("SELECT COUNT(*) FROM leads").fetchone() == (1,)

    # The store keeps serving: new events, merges into committed leads.
    after = await record(store, make_event("ok-2", phone="+79031112233"))
    assert after.outcome is Outcome.CREATED
    merged = await record(store, make_event("ok-3", phone="+79161234567"))
    assert merged.outcome is Outcome.MERGED
    assert merged.lead_id == before.lead_id

    # The failed person left no trace in the overlay: their retry is a fresh, real lead.
    with sqlite3.connect(db_path) as db:
        db.execute("DROP TRIGGER fail_one")
    retry = await record(store, make_event("doomed", phone="+79035550000"))
    assert retry.outcome is Outcome.CREATED
    lead = await store.get_lead(retry.lead_id or "")
    assert lead is not None
    assert [e.external_id for e in lead.events] == ["doomed"]


async def test_failed_batch_does_not_leave_a_merge_target(
    store: SQLiteStore, db_path: Path
) -> None:
    add_failing_trigger(db_path, "first")
    phone = "+79167770000"
    # Both decided before the commit: the second merges into the first's pending lead,
    # and both fail together — neither may be acknowledged.
    results = await asyncio.gather(
        record(store, make_event("first", phone=phone)),
        record(store, make_event("second", phone=phone)),
        return_exceptions=True,
    )
    assert all(isinstance(r, StoreUnavailable) for r in results)
    with sqlite3.connect(db_path) as db:
        db.execute("DROP TRIGGER fail_one")
    third = await record(store, make_event("third", phone=phone))
    assert third.outcome is Outcome.CREATED
    assert count(db_path, "leads") == 1


async def test_pending_replay_of_failed_event_fails_too(store: SQLiteStore, db_path: Path) -> None:
    add_failing_trigger(db_path, "dup")
    results = await asyncio.gather(
        record(store, make_event("dup")),
        record(store, make_event("dup")),
        return_exceptions=True,
    )
    # The replay waited on the original's commit and must not claim it was stored.
    assert all(isinstance(r, StoreUnavailable) for r in results), results


# --- reads ------------------------------------------------------------------------------------


async def test_list_leads_filters_and_paging(store: SQLiteStore) -> None:
    made: list[tuple[str, Channel, LeadStatus, str]] = []
    for n in range(12):
        channel = Channel.ORDERS if n % 3 == 0 else Channel.WEBFORM
        status = LeadStatus.JUNK if n % 4 == 0 else LeadStatus.NEW
        seller = "anna" if n % 2 else "boris"
        e = make_event(f"l{n}", channel=channel, at=T0 + timedelta(hours=n), phone=f"+7903{n:07d}")
        r = await record(store, e, status=status, assigned_to=seller)
        assert r.lead_id is not None
        made.append((r.lead_id, channel, status, seller))
    newest_first = [m[0] for m in reversed(made)]

    everything = await store.list_leads(LeadQuery(limit=100))
    assert [lead.id for lead in everything] == newest_first
    assert all(lead.events == () for lead in everything)

    orders = await store.list_leads(LeadQuery(channel=Channel.ORDERS))
    assert [lead.id for lead in orders] == [m[0] for m in reversed(made) if m[1] is Channel.ORDERS]
    junk = await store.list_leads(LeadQuery(status=LeadStatus.JUNK))
    assert {lead.id for lead in junk} == {m[0] for m in made if m[2] is LeadStatus.JUNK}
    anna = await store.list_leads(LeadQuery(assigned_to="anna", status=LeadStatus.NEW))
    assert {lead.id for lead in anna} == {
        m[0] for m in made if m[3] == "anna" and m[2] is LeadStatus.NEW
    }
    since = await store.list_leads(LeadQuery(since=T0 + timedelta(hours=9)))
    assert [lead.id for lead in since] == newest_first[:3]

    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        page = await store.list_leads(LeadQuery(limit=5, before_id=cursor))
        if not page:
            break
        pages.append([lead.id for lead in page])
        cursor = page[-1].id
    assert [len(p) for p in pages] == [5, 5, 2]
    assert [i for p in pages for i in p] == newest_first


async def test_get_lead_returns_events_in_order(store: SQLiteStore) -> None:
    phone = "+79161234567"
    ids = []
    first = await record(store, make_event("g0", phone=phone))
    ids.append(first.event_id)
    for n in range(1, 25):
        r = await record(store, make_event(f"g{n}", phone=phone, at=T0 + timedelta(seconds=n)))
        assert r.lead_id == first.lead_id
        ids.append(r.event_id)
    lead = await store.get_lead(first.lead_id or "")
    assert lead is not None
    assert [e.id for e in lead.events] == ids
    assert [e.outcome for e in lead.events] == [Outcome.CREATED] + [Outcome.MERGED] * 24
    assert lead.last_event_at == T0 + timedelta(seconds=24)
    assert await store.get_lead("01NOSUCHLEAD0000000000000") is None


def rr_request() -> AssignmentRequest:
    return AssignmentRequest(T0.date(), UTC, ("anna", "boris"), "round_robin", "round_robin")


async def test_day_counts_start_from_the_leads_stored_that_day(db_path: Path) -> None:
    """What Pipeline.seed did from outside at startup, the store now does itself when it
    starts counting a day: a restart keeps the day even."""
    store = SQLiteStore(db_path)
    await store.open()
    await record(store, make_event("y0", at=T0 - timedelta(days=1)), assigned_to="boris")
    for n, seller in enumerate(["anna", "anna", "boris", None]):
        await record(store, make_event(f"a{n}"), assigned_to=seller)
    await store.close()

    store = SQLiteStore(db_path)
    await store.open()
    try:
        day = T0.date()
        assert await store.assignment_counts(day) == {}  # not counting any day yet
        e = make_event("a4")
        recorded = await store.record(e, (), SINCE, planner(e, request=rr_request()))
        # Yesterday's lead is not today's: anna 2, boris 1 -> boris.
        assert recorded.assignment == Assignment("boris", "round_robin")
        lead = await store.get_lead(recorded.receipt.lead_id or "")
        assert lead is not None
        assert (lead.assigned_to, lead.assignment_reason) == ("boris", "round_robin")
        assert await store.assignment_counts(day) == {"anna": 2, "boris": 2}
        assert await store.assignment_counts(day - timedelta(days=1)) == {}
    finally:
        await store.close()


async def test_a_day_started_while_leads_wait_in_the_overlay_counts_them(db_path: Path) -> None:
    store = SQLiteStore(db_path)
    await store.open()
    gate = asyncio.Event()
    real_begin = store._begin

    async def held_begin(db: sqlite3.Connection) -> None:
        await gate.wait()
        await real_begin(db)

    store._begin = held_begin  # type: ignore[method-assign]
    try:
        waiting = [
            asyncio.create_task(record(store, make_event(f"w{n}"), assigned_to="anna"))
            for n in range(2)
        ]
        await asyncio.sleep(0.05)  # both decided, neither committed
        e = make_event("w2")
        task = asyncio.create_task(store.record(e, (), SINCE, planner(e, request=rr_request())))
        await asyncio.sleep(0.05)
        assert await store.assignment_counts(T0.date()) == {"anna": 2, "boris": 1}
        gate.set()
        await asyncio.gather(*waiting)
        assert (await task).assignment == Assignment("boris", "round_robin")
    finally:
        gate.set()
        await store.close()


async def test_merge_into_a_lead_whose_batch_then_fails_fails_too(db_path: Path) -> None:
    """B merges (through the overlay) into the lead A is creating; A's batch fails later
    (lock held too long, disk error). B must fail as well: committed alone it would store
    the lead without A's event and without its lead.created outbox row."""
    store = SQLiteStore(db_path)
    await store.open()
    gate = asyncio.Event()
    calls = 0
    real_begin = store._begin

    async def begin_then_fail_once(db: sqlite3.Connection) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            await gate.wait()
            raise StoreUnavailable("database stayed locked")
        await real_begin(db)

    store._begin = begin_then_fail_once  # type: ignore[method-assign]
    phone = "+79167770000"
    try:
        first = asyncio.create_task(record(store, make_event("first", phone=phone)))
        await asyncio.sleep(0.05)  # batch 1 = [first] waits in BEGIN
        second = asyncio.create_task(record(store, make_event("second", phone=phone)))
        await asyncio.sleep(0.05)  # second is decided: a merge into first's pending lead
        gate.set()
        with pytest.raises(StoreUnavailable):
            await first
        with pytest.raises(StoreUnavailable):
            await second
        assert count(db_path, "leads") == count(db_path, "outbox") == 0
        # Both senders retry after their 503: one lead, created then merged.
        again_first = await record(store, make_event("first", phone=phone))
        again_second = await record(store, make_event("second", phone=phone))
        assert again_first.outcome is Outcome.CREATED
        assert again_second.outcome is Outcome.MERGED
        assert again_second.lead_id == again_first.lead_id
        with sqlite3.connect(db_path) as db:
            kinds = [k for (k,) in db.execute("SELECT kind FROM outbox ORDER BY id")]
        assert kinds == ["lead.created", "lead.merged"]
    finally:
        await store.close()
