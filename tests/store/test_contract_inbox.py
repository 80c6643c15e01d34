"""The inbox in the Store contract, run against every implementation (FACTORIES): durable,
idempotent puts (with a poller's checkpoint in the same transaction), claims with an owner
and a lease, outcomes, dead entries kept and retried, stats per channel."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from gateway.inbox import InboxEntry, InboxState, InboxUpdate
from gateway.store.base import Store

from .conftest import Harness
from .contract import T0

LEASE = 60.0


def entry(
    key: str, *, channel: str = "telegram", account: str = "shop", thread: str | None = None
) -> InboxEntry:
    body = f'{{"update_id": {key}}}'.encode()
    return InboxEntry(channel, account, key, body, {"X-Thing": "1"}, thread=thread)


async def test_put_keeps_each_key_once(store: Store) -> None:
    assert await store.inbox_put([entry("1"), entry("2"), entry("1")], T0) == [True, True, False]
    assert await store.inbox_put([entry("2"), entry("3")], T0) == [False, True]
    # The key is (channel, account, key): another bot's update 1 is another entry.
    assert await store.inbox_put([entry("1", account="other")], T0) == [True]
    items = await store.list_inbox()
    assert [(i.account, i.key) for i in items] == [
        ("shop", "1"),
        ("shop", "2"),
        ("shop", "3"),
        ("other", "1"),
    ]
    first = items[0]
    assert first.body == b'{"update_id": 1}'
    assert first.headers == {"X-Thing": "1"}
    assert (first.state, first.attempts, first.received_at) == (InboxState.PENDING, 0, T0)


async def test_concurrent_puts_of_one_key_keep_it_once(store: Store) -> None:
    results = await asyncio.gather(*(store.inbox_put([entry("7")], T0) for _ in range(10)))
    assert sorted(r[0] for r in results) == [False] * 9 + [True]
    assert len(await store.list_inbox()) == 1


async def test_a_checkpoint_moves_with_the_entries(harness: Harness) -> None:
    await harness.store.inbox_put([entry("1"), entry("2")], T0, ("telegram:shop:offset", "3"))
    store = await harness.reopen()  # durable: a restart still has both
    assert await store.get_checkpoint("telegram:shop:offset") == "3"
    assert len(await store.list_inbox()) == 2
    # Only duplicates: the checkpoint still moves (the poller must not fetch them again).
    assert await store.inbox_put([entry("2")], T0, ("telegram:shop:offset", "4")) == [False]
    assert await store.get_checkpoint("telegram:shop:offset") == "4"


async def test_claims_hold_entries_until_their_lease_runs_out(store: Store) -> None:
    await store.inbox_put([entry("1"), entry("2"), entry("9", channel="vk")], T0)
    now = T0 + timedelta(seconds=1)
    mine = await store.inbox_claim(now, 10, owner="a", lease_seconds=LEASE, channel="telegram")
    assert [i.key for i in mine] == ["1", "2"]
    assert all(
        i.claimed_by == "a" and i.claimed_until == now + timedelta(seconds=LEASE) for i in mine
    )
    assert [i.key for i in await store.inbox_claim(now, 10, owner="b", lease_seconds=LEASE)] == [
        "9"
    ]
    assert await store.inbox_claim(now, 10, owner="a", lease_seconds=LEASE) == []
    later = now + timedelta(seconds=LEASE + 1)
    taken = await store.inbox_claim(later, 10, owner="b", lease_seconds=LEASE, channel="telegram")
    assert [i.key for i in taken] == ["1", "2"]
    # "a" lost them: its outcome is refused and changes nothing.
    done = [InboxUpdate(i.id, InboxState.DONE) for i in mine]
    assert sorted(await store.update_inbox(done, later, owner="a")) == [i.id for i in mine]
    assert all(i.state is InboxState.PENDING for i in await store.list_inbox())


async def test_claims_running_at_once_never_share_an_entry(store: Store) -> None:
    await store.inbox_put([entry(str(n)) for n in range(20)], T0)
    now = T0 + timedelta(seconds=1)
    batches = await asyncio.gather(
        *(store.inbox_claim(now, 5, owner=f"w{n}", lease_seconds=LEASE) for n in range(6))
    )
    ids = [i.id for batch in batches for i in batch]
    assert len(ids) == len(set(ids)) == 20


async def test_outcomes_done_retry_dead_and_a_retry_of_the_dead(store: Store) -> None:
    await store.inbox_put([entry("1"), entry("2"), entry("3")], T0)
    now = T0 + timedelta(seconds=1)
    one, two, three = await store.inbox_claim(now, 10, owner="a", lease_seconds=LEASE)
    due = now + timedelta(seconds=30)
    updates = [
        InboxUpdate(one.id, InboxState.DONE),
        InboxUpdate(two.id, InboxState.PENDING, error="store busy", next_attempt_at=due),
        InboxUpdate(three.id, InboxState.DEAD, error="unprocessable: not JSON"),
    ]
    assert await store.update_inbox(updates, now, owner="a") == []
    items = {i.key: i for i in await store.list_inbox()}
    assert items["1"].state is InboxState.DONE and items["1"].body == b""
    assert (items["2"].state, items["2"].attempts, items["2"].next_attempt_at) == (
        InboxState.PENDING,
        1,
        due,
    )
    assert items["2"].last_error == "store busy" and items["2"].claimed_by is None
    assert (items["3"].state, items["3"].last_error) == (InboxState.DEAD, "unprocessable: not JSON")
    assert items["3"].body  # a dead entry keeps its body for a person
    # A handled key is still a duplicate.
    assert await store.inbox_put([entry("1")], now) == [False]
    # Not due yet: nothing to claim.
    assert await store.inbox_claim(now, 10, owner="a", lease_seconds=LEASE) == []
    stats = await store.inbox_stats()
    assert (stats["telegram"].pending, stats["telegram"].dead) == (1, 1)
    assert [i.key for i in await store.list_inbox(InboxState.DEAD)] == ["3"]
    assert await store.retry_inbox(None, now) == 1
    assert await store.retry_inbox([items["1"].id], now) == 0  # done: left alone
    again = await store.inbox_claim(now, 10, owner="a", lease_seconds=LEASE)
    assert [(i.key, i.attempts) for i in again] == [("3", 0)]


async def test_stats_count_per_channel(store: Store) -> None:
    assert await store.inbox_stats() == {}
    await store.inbox_put([entry("1"), entry("2", channel="vk")], T0)
    stats = await store.inbox_stats()
    assert set(stats) == {"telegram", "vk"}
    assert stats["vk"].pending == 1 and stats["vk"].oldest_pending_at == T0


async def test_a_threads_entries_are_claimed_in_order_never_past_one_that_waits(
    harness: Harness,
) -> None:
    store = harness.store
    await store.inbox_put(
        [
            entry("1", thread="42"),
            entry("2", thread="42"),
            entry("3", thread="77"),
            entry("4"),
            entry("5", thread="42", account="other"),  # another bot's chat 42
        ],
        T0,
    )
    now = T0 + timedelta(seconds=1)
    # All due: a thread's entries may go together, in order.
    items = await store.inbox_claim(now, 10, owner="a", lease_seconds=LEASE)
    assert [(i.key, i.thread) for i in items] == [
        ("1", "42"),
        ("2", "42"),
        ("3", "77"),
        ("4", None),
        ("5", "42"),
    ]
    # 1 failed and waits for its retry; 2 was put back untouched: 2 waits for 1.
    later = now + timedelta(seconds=30)
    refused = await store.update_inbox(
        [
            InboxUpdate(items[0].id, InboxState.PENDING, "boom", next_attempt_at=later),
            InboxUpdate(items[1].id, InboxState.PENDING, count_attempt=False),
            *(InboxUpdate(i.id, InboxState.DONE) for i in items[2:]),
        ],
        now,
        owner="a",
    )
    assert refused == []
    assert await store.inbox_claim(now, 10, owner="b", lease_seconds=LEASE) == []
    await store.inbox_put([entry("6", thread="42"), entry("7", thread="77")], now)
    (other_chat,) = await store.inbox_claim(now, 10, owner="b", lease_seconds=LEASE)
    assert other_chat.key == "7"
    await store.update_inbox([InboxUpdate(other_chat.id, InboxState.DONE)], now, owner="b")
    # A claim that still runs holds up its thread too: 1 is taken, 2 and 6 wait for it.
    store = await harness.reopen()  # and the order survives a restart
    first = await store.inbox_claim(later, 1, owner="c", lease_seconds=LEASE)
    assert [i.key for i in first] == ["1"]
    assert await store.inbox_claim(later, 10, owner="d", lease_seconds=LEASE) == []
    await store.update_inbox([InboxUpdate(first[0].id, InboxState.DONE)], later, owner="c")
    rest = await store.inbox_claim(later, 10, owner="d", lease_seconds=LEASE)
    assert [i.key for i in rest] == ["2", "6"]
    # A dead entry holds up nothing (a person looks at it; the chat goes on).
    await store.update_inbox(
        [InboxUpdate(rest[0].id, InboxState.DEAD, "bad"), InboxUpdate(rest[1].id, InboxState.DONE)],
        later,
        owner="d",
    )
    await store.inbox_put([entry("8", thread="42")], later)
    assert [i.key for i in await store.inbox_claim(later, 10, owner="e", lease_seconds=LEASE)] == [
        "8"
    ]


async def test_done_entries_are_purged_after_their_time(store: Store) -> None:
    await store.inbox_put([entry("1"), entry("2"), entry("3")], T0)
    await store.inbox_put([entry("4")], T0 + timedelta(days=2))
    items = await store.inbox_claim(T0 + timedelta(days=3), 10, owner="a", lease_seconds=LEASE)
    done = [InboxUpdate(i.id, InboxState.DONE) for i in items if i.key in ("1", "4")]
    dead = [InboxUpdate(i.id, InboxState.DEAD, "bad") for i in items if i.key == "2"]
    pending = [InboxUpdate(i.id, InboxState.PENDING, "later") for i in items if i.key == "3"]
    await store.update_inbox([*done, *dead, *pending], T0, owner="a")
    assert await store.purge_inbox(T0 + timedelta(days=1)) == 1
    assert [(i.key, i.state) for i in await store.list_inbox()] == [
        ("2", InboxState.DEAD),
        ("3", InboxState.PENDING),
        ("4", InboxState.DONE),
    ]
    # Forgotten: the vendor's repeat of it is new again (and only replays its events).
    assert await store.inbox_put([entry("1"), entry("4")], T0) == [True, False]
