"""`leadgate store copy`: an installation moves from its SQLite file to Redis with all it
holds — leads and events (kept ones too), replay and identity keys, the outbox with its
states and CRM links, conversations and transcripts, checkpoints, quarantine, the inbox —
and the command proves it with counts and a checksum of both sides. Afterwards the Redis
store carries on where the file stopped: a sender's retry is a replay, the person's next
contact joins their lead, the round robin gives the next lead to whom SQLite would have (in
the day each lead counted in), a chat's waiting inbox entries keep their order."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis.asyncio

from gateway import cli
from gateway.assign import Assignment, AssignmentRequest
from gateway.inbox import InboxEntry, InboxState, InboxUpdate
from gateway.models import Outcome
from gateway.store.base import OutboxKind, OutboxState, OutboxUpdate, Quarantined
from gateway.store.fingerprint import fingerprint
from gateway.store.redis import RedisStore
from gateway.store.sqlite import SQLiteStore, StoreRole
from tests.redis_server import RedisTarget
from tests.store.contract import T0, make_event, record, rr
from tests.store.test_contract_conversations import chat_event, record_chat

NOW = datetime.now(UTC).replace(microsecond=0)


async def fill(path: Path) -> dict[str, str]:
    """A store with a bit of everything; the ids a test looks for afterwards."""
    store = SQLiteStore(path)
    await store.open()
    try:
        first = await record(store, make_event("f1", phone="+79161234567"), assignment=rr("anna"))
        await record(store, make_event("f2", phone="+79161234567", idempotency_key="form:k"))
        await record(store, make_event("call-out", phone="+79035550000", creates_lead=False))
        await record(store, make_event("f3", phone="+79030000003"), assignment=rr("boris"))
        chat = await record_chat(store, chat_event(1), answers=("Здравствуйте!",))
        await record_chat(store, chat_event(2, at=T0 + timedelta(minutes=1)))
        assert chat.receipt.lead_id is not None
        await store.queue_message(chat.receipt.lead_id, "Ответ", author="seller:anna", now=T0)
        crm = await store.claim_outbox(
            T0, 10, owner="w", lease_seconds=60, kinds=(OutboxKind.CREATED, OutboxKind.MERGED)
        )
        assert len(crm) >= 3
        await store.update_outbox(
            "bitrix24",
            [
                OutboxUpdate(crm[0].id, OutboxState.DELIVERED, remote_id="501"),
                OutboxUpdate(crm[1].id, OutboxState.DEAD, error="bad field"),
            ],
            T0,
            owner="w",
        )
        await store.quarantine(Quarantined("email", "malformed", b"\xff\x00", {"m": "1"}))
        await store.inbox_put(
            [
                InboxEntry("telegram", "shop", "7", b'{"update_id": 7}'),
                InboxEntry("vk", "c", "8", b"{}"),
            ],
            T0,
            ("telegram:shop:offset", "8"),
        )
        (taken,) = await store.inbox_claim(T0, 1, owner="w", lease_seconds=60, channel="vk")
        await store.update_inbox([InboxUpdate(taken.id, InboxState.DONE)], T0, owner="w")
        await store.save_checkpoint("imap:sales:INBOX", "uidvalidity=1;uid=42")
        return {"lead": first.receipt.lead_id or "", "event": first.receipt.event_id}
    finally:
        await store.close()


@pytest.fixture
async def target(redis_target: RedisTarget) -> AsyncIterator[RedisStore]:
    store = RedisStore(
        redis.asyncio.Redis.from_url(redis_target.url, decode_responses=True),
        prefix=redis_target.prefix,
    )
    await store.open()
    yield store
    await store.close()


async def copy(tmp_path: Path, path: Path, target: RedisTarget) -> int:
    """The command as a person runs it (in a thread: it runs its own event loop)."""
    config = tmp_path / "leadgate.toml"
    config.write_text(f'[store]\npath = "{path}"\n', encoding="utf-8")
    return await asyncio.to_thread(
        cli.main,
        [
            "-c", str(config), "store", "copy",
            "--from", f"sqlite:{path}", "--to", target.url, "--prefix", target.prefix,
        ],
    )  # fmt: skip


async def test_copy_moves_everything_and_proves_it(
    tmp_path: Path,
    redis_target: RedisTarget,
    target: RedisStore,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "leadgate.db"
    ids = await fill(path)
    assert await copy(tmp_path, path, redis_target) == 0
    out = capsys.readouterr().out
    sqlite_line = next(line for line in out.splitlines() if line.startswith("sqlite:"))
    redis_line = next(line for line in out.splitlines() if line.startswith("redis:"))
    assert sqlite_line.removeprefix("sqlite:").strip() == redis_line.removeprefix("redis:").strip()
    assert "leads 3, events 6, conversations 1, messages 4" in sqlite_line
    assert "links 1, checkpoints 2, quarantine 1, inbox 2" in sqlite_line
    assert "the copy matches its source" in out

    source = SQLiteStore(path, role=StoreRole.CLIENT)
    await source.open()
    try:
        assert await fingerprint(source, ["bitrix24"]) == await fingerprint(target, ["bitrix24"])
        today_counts = await source.assignment_counts(NOW.date())
    finally:
        await source.close()

    # The Redis store goes on where the file stopped.
    again = await record(target, make_event("f1", phone="+79161234567"))
    assert (again.receipt.outcome, again.receipt.event_id) == (Outcome.REPLAYED, ids["event"])
    by_key = await record(target, make_event("other", idempotency_key="form:k"))
    assert by_key.receipt.outcome is Outcome.REPLAYED
    joined = await record(target, make_event("f9", phone="8 916 123-45-67"))
    assert (joined.receipt.outcome, joined.receipt.lead_id) == (Outcome.MERGED, ids["lead"])
    links = await target.lead_links("bitrix24", [ids["lead"]])
    assert links[ids["lead"]].remote_id == "501"
    assert [i.last_error for i in await target.outbox(OutboxState.DEAD)] == ["bad field"]
    pending = await target.claim_outbox(NOW, 100, owner="redis-worker", lease_seconds=60)
    assert pending and all(i.claimed_by == "redis-worker" for i in pending)
    assert await target.get_checkpoint("telegram:shop:offset") == "8"
    assert await target.inbox_put([InboxEntry("vk", "c", "8", b"{}")], NOW) == [False]
    assert await target.assignment_counts(NOW.date()) == today_counts


async def counted_leads(path: Path, n: int, request: AssignmentRequest) -> None:
    """`n` new people's leads in the SQLite store at `path`, each assigned by `request`."""
    store = SQLiteStore(path)
    await store.open()
    try:
        for i in range(n):
            event = make_event(f"t{i}", phone=f"+7903{i:07d}", at=NOW)
            await record(store, event, assignment=request)
    finally:
        await store.close()


async def next_on_both(
    path: Path, target: RedisStore, request: AssignmentRequest
) -> tuple[Assignment | None, Assignment | None]:
    """The seller the next lead gets on the copy and on the file it was copied from."""
    event = make_event("next", phone="+79039999999", at=NOW)
    on_redis = await record(target, event, assignment=request)
    store = SQLiteStore(path)
    await store.open()
    try:
        on_sqlite = await record(store, event, assignment=request)
    finally:
        await store.close()
    return on_redis.assignment, on_sqlite.assignment


async def test_the_round_robin_turn_survives_the_move(
    tmp_path: Path, redis_target: RedisTarget, target: RedisStore
) -> None:
    path = tmp_path / "leadgate.db"
    await counted_leads(path, 3, rr("a", "b", at=NOW))
    assert await copy(tmp_path, path, redis_target) == 0
    # The next lead goes to the same seller on either side.
    on_redis, on_sqlite = await next_on_both(path, target, rr("a", "b", at=NOW))
    assert on_redis == on_sqlite == Assignment("b", "round_robin")


async def test_leads_counted_in_a_later_day_stay_in_it_after_the_move(
    tmp_path: Path, redis_target: RedisTarget, target: RedisStore
) -> None:
    """After-hours leads count in the next opening, days away: on Redis the next lead of
    that day must see them there, as SQLite does after a restart."""
    path = tmp_path / "leadgate.db"
    monday = NOW + timedelta(days=3)
    await counted_leads(path, 2, rr("anna", at=monday))  # anna alone is on duty then
    assert await copy(tmp_path, path, redis_target) == 0
    on_redis, on_sqlite = await next_on_both(path, target, rr("anna", "boris", at=monday))
    assert on_redis == on_sqlite == Assignment("boris", "round_robin")
    assert await target.assignment_counts(monday.date()) == {"anna": 2, "boris": 1}


async def test_a_chats_inbox_order_and_the_purge_survive_the_move(
    tmp_path: Path, redis_target: RedisTarget, target: RedisStore
) -> None:
    path = tmp_path / "leadgate.db"
    later = T0 + timedelta(seconds=30)
    store = SQLiteStore(path)
    await store.open()
    await store.inbox_put(
        [
            InboxEntry("telegram", "shop", "1", b"{}", thread="42"),
            InboxEntry("telegram", "shop", "2", b"{}", thread="42"),
            InboxEntry("telegram", "shop", "3", b"{}"),
        ],
        T0,
    )
    first, second, other = await store.inbox_claim(T0, 10, owner="w", lease_seconds=60)
    await store.update_inbox(
        [
            InboxUpdate(first.id, InboxState.PENDING, "boom", next_attempt_at=later),
            InboxUpdate(second.id, InboxState.PENDING, count_attempt=False),
            InboxUpdate(other.id, InboxState.DONE),
        ],
        T0,
        owner="w",
    )
    await store.close()
    assert await copy(tmp_path, path, redis_target) == 0
    assert [i.thread for i in await target.list_inbox()] == ["42", "42", None]
    # 2 still waits for 1, which waits for its retry.
    assert await target.inbox_claim(T0, 10, owner="r", lease_seconds=60) == []
    taken = await target.inbox_claim(later, 10, owner="r", lease_seconds=60)
    assert [i.key for i in taken] == ["1", "2"]
    # The done entry is forgotten in its time, its key with it.
    assert await target.purge_inbox(T0 + timedelta(days=1)) == 1
    assert await target.inbox_put([InboxEntry("telegram", "shop", "3", b"{}")], later) == [True]


async def test_copy_refuses_a_running_gateway_and_a_prefix_with_data(
    tmp_path: Path, redis_target: RedisTarget, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "leadgate.db"
    await fill(path)
    running = SQLiteStore(path)
    await running.open()
    try:
        assert await copy(tmp_path, path, redis_target) == 1
        assert "in use by a running gateway" in capsys.readouterr().err
    finally:
        await running.close()
    assert await copy(tmp_path, path, redis_target) == 0
    capsys.readouterr()
    assert await copy(tmp_path, path, redis_target) == 1
    assert "already holds data" in capsys.readouterr().err
