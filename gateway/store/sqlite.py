"""The embedded default store: one SQLite file in WAL mode with group commit.

Why it is shaped like this:
- Decisions (replay? same person?) are taken on the event loop with plain, indexed point
  reads on a read connection: they take microseconds, less than a hop to a worker thread.
- Writes go through one connection as batches: every event waiting while the previous
  commit ran is committed together, so one fsync acknowledges many requests. The inserts
  run on the loop (CPU only: inside a WAL transaction nothing touches the disk) and only
  COMMIT, the fsync, goes to a thread. That is one thread hop per batch; aiosqlite made
  one per statement, and each hop could wait milliseconds for the GIL while the loop ran
  Python — measured: p99 44 ms with aiosqlite at a third of today's throughput.
- Between decision and commit an event lives in an in-memory overlay, so a second event
  for the same key or the same person sees it. The overlay is what makes decide-then-write
  atomic without locks: nothing awaits between the lookup and the overlay update.
- The round-robin counts of the day live here too (this process is the file's only writer):
  moved when a lead enters the overlay, taken back when its commit fails.
- One process writes the file (an advisory lock): the server role. A second process (the
  CLI) opens it in the client role: reads, and rare writes as short transactions of its
  own (gateway.store.sqlite_client).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import sqlite3
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import IO, Any

import orjson

from gateway.assign import Assignment
from gateway.models import Lead, LeadEvent, Outcome, Receipt
from gateway.store.base import (
    DeliveryView,
    LeadQuery,
    OutboxKind,
    OutboxState,
    Plan,
    PlanAction,
    Planner,
    Quarantined,
    Recorded,
    StoreUnavailable,
)
from gateway.store.changes import created_lead, event_doc, merged_lead
from gateway.store.day_counts import DayCounts
from gateway.store.schema import SCHEMA
from gateway.store.sqlite_chat import INSERT_MESSAGE, UPSERT_CONVERSATION, ChatMethods
from gateway.store.sqlite_client import ClientRole, StoreRole
from gateway.store.sqlite_inbox import INSERT_INBOX, InboxMethods, migrate_inbox
from gateway.store.sqlite_match import MatchMethods
from gateway.store.sqlite_ops import UPSERT_INTAKE, OpsMethods, intake_rows, migrate_ops
from gateway.store.sqlite_outbox import OutboxMethods
from gateway.store.sqlite_queries import (
    idempotency_key,
    list_leads,
    migrate_leads,
    migrate_outbox,
    open_reader,
    read_delivery_view,
    read_lead,
    release_claims,
    replay_key,
    to_epoch,
)
from gateway.store.sqlite_reads import ReadMethods

__all__ = ["SQLiteStore", "StoreLocked", "StoreRole", "idempotency_key", "replay_key"]

log = logging.getLogger(__name__)


class StoreLocked(RuntimeError):
    """Another leadgate process is already writing this database."""


@dataclass(slots=True)
class _Pending:
    """One event between decision and commit."""

    receipt: Receipt
    done: asyncio.Future[None]
    leads: list[tuple[str, str, str, str | None, float, float, bytes]] = field(default_factory=list)
    events: list[tuple[str, str | None, str, str, float, str, str | None, bytes]] = field(
        default_factory=list
    )
    replays: list[tuple[str, str]] = field(default_factory=list)
    identities: list[tuple[str, str]] = field(default_factory=list)
    outbox: list[tuple[str, str, str, float, float, str, float | None]] = field(
        default_factory=list
    )
    quarantine: list[tuple[str, str, float, bytes, bytes]] = field(default_factory=list)
    checkpoints: list[tuple[str, str]] = field(default_factory=list)
    # Chat messages: conversation rows (upserts), transcript lines, inbox entries.
    conversations: list[tuple[Any, ...]] = field(default_factory=list)
    messages: list[tuple[Any, ...]] = field(default_factory=list)
    inbox: list[tuple[Any, ...]] = field(default_factory=list)
    # Overlay keys this write holds: conversations, inbound lines, inbox entries.
    thread_keys: list[tuple[str, str, str]] = field(default_factory=list)
    lines: list[tuple[str, str]] = field(default_factory=list)
    inbox_keys: list[tuple[str, str, str]] = field(default_factory=list)
    # Any other write (outbox state changes, ...): run in order after the inserts above.
    statements: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    # The uncommitted write this one builds on (a merge into a lead still in the overlay).
    # If that write fails, this one must fail too: else a lead would be stored without
    # its creating event and its lead.created outbox row.
    after: _Pending | None = None
    assignment: Assignment | None = None  # the seller resolved for a lead this write creates
    counted: tuple[date, str] | None = None  # the round-robin count it moved: taken back on failure


class SQLiteStore(
    ClientRole, MatchMethods, OutboxMethods, OpsMethods, ReadMethods, ChatMethods, InboxMethods
):
    def __init__(
        self,
        path: Path | str,
        *,
        role: StoreRole = StoreRole.SERVER,
        max_batch: int = 256,
        outbox_delivered: bool = False,
    ) -> None:
        self.path = Path(path)
        self.role = role
        self.max_batch = max_batch
        # With no remote sink the store itself is the destination: outbox rows are born
        # delivered, in the lead's own transaction, instead of costing a second commit.
        self._outbox_state = OutboxState.DELIVERED if outbox_delivered else OutboxState.PENDING
        self._outbox_busy = {}
        self._client_writer = None
        self._client_lock = asyncio.Lock()
        self._writer: sqlite3.Connection | None = None
        self._fsync: ThreadPoolExecutor | None = None
        self._reader: sqlite3.Connection | None = None
        self._lock_file: IO[bytes] | None = None
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._commit_task: asyncio.Task[None] | None = None
        # The overlay: what is decided but not yet committed.
        self._pending_replays: dict[str, _Pending] = {}
        self._pending_leads: dict[str, tuple[Lead, _Pending]] = {}
        self._pending_identities: dict[str, list[str]] = {}
        self._pending_events: dict[str, str | None] = {}  # replay key -> lead id, for replies
        self._pending_conversations = {}
        self._pending_lines = set()
        self._pending_inbox = {}
        self._inbox_busy = {}
        self._counts = DayCounts()  # round robin of the day in progress, overlay included

    # --- lifecycle -------------------------------------------------------------------

    async def open(self) -> None:
        if self._is_client:
            await self._open_client()
            return
        if not self.path.parent.is_dir():
            # Never made up: a mistyped directory would become a new, empty database.
            raise StoreUnavailable(f"directory {self.path.parent} does not exist")
        # Held for our lifetime; a tiny local file, so opening it inline is fine.
        self._lock_file = open(f"{self.path}.lock", "wb")  # noqa: SIM115, ASYNC230
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            self._lock_file.close()
            self._lock_file = None
            raise StoreLocked(f"{self.path} is in use by another leadgate process") from exc
        self._fsync = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-commit")
        self._writer = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        # FULL: a commit is on disk before we answer 2xx, power loss included.
        for pragma in ("journal_mode=WAL", "synchronous=FULL", "busy_timeout=5000"):
            self._writer.execute(f"PRAGMA {pragma}")
        self._writer.executescript(SCHEMA)
        migrate_outbox(self._writer)
        migrate_ops(self._writer)
        migrate_inbox(self._writer)
        migrate_leads(self._writer)
        # This process is the file's one writer, and only the writer delivers: a claim left
        # in the file belongs to a process that is gone. Its items are due again at once.
        self._writer.execute(*release_claims())
        self._writer.execute(
            "UPDATE inbox SET claimed_by = NULL, claimed_until = NULL WHERE claimed_by IS NOT NULL"
        )
        self._migrate_order_keys(self._writer)
        # From here on the loop must never wait on a lock held by another process (a CLI
        # `outbox retry`): BEGIN fails at once and the commit loop retries asynchronously.
        self._writer.execute("PRAGMA busy_timeout=0")
        self._reader = open_reader(self.path)
        self._commit_task = asyncio.create_task(self._commit_loop(), name="sqlite-group-commit")

    def _migrate_order_keys(self, db: sqlite3.Connection) -> None:
        """Order ids used to be one space for all tokens (external_id "1001"); they are now
        scoped by the token that posted them ("site:1001", connectors/orders.py). Orders
        stored before get the key they would have today, as an alias of their event, so a
        shop retrying an old order still gets its original receipt. Once per file."""
        if db.execute("SELECT 1 FROM migrations WHERE name = ?", (_ORDERS_SCOPED,)).fetchone():
            return
        db.execute("BEGIN IMMEDIATE")
        try:
            aliases = []
            for event_id, external_id, doc in db.execute(
                "SELECT id, external_id, doc FROM events WHERE channel = 'orders'"
            ):
                token = orjson.loads(doc)["record"].get("source_detail")
                if token:
                    aliases.append((replay_key("orders", f"{token}:{external_id}"), event_id))
            db.executemany(_ALIAS_REPLAY, aliases)
            db.execute("INSERT INTO migrations (name) VALUES (?)", (_ORDERS_SCOPED,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        if aliases:
            log.info("%d stored orders keyed by their token's name too", len(aliases))

    async def close(self) -> None:
        if self._client_writer is not None:
            self._client_writer.close()
            self._client_writer = None
        if self._commit_task is not None:
            # Let what was already accepted reach the disk, and its callers hear so, before we
            # stop: an empty queue is not enough, the last batch may still be committing.
            if not self._commit_task.done():
                await self._queue.join()
            self._commit_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._commit_task
            self._commit_task = None
        if self._fsync is not None:
            self._fsync.shutdown(wait=True)
            self._fsync = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    async def ping(self) -> None:
        self._db().execute("SELECT 1").fetchone()
        if self._is_client:
            return
        if self._commit_task is None or self._commit_task.done():
            raise StoreUnavailable("the commit loop is not running")

    def _db(self) -> sqlite3.Connection:
        if self._reader is None:
            raise StoreUnavailable("store is not open")
        return self._reader

    # --- the write path ----------------------------------------------------------------

    async def record(
        self,
        event: LeadEvent,
        keys: Sequence[str],
        since: datetime,
        plan: Planner,
        checkpoint: tuple[str, str] | None = None,
    ) -> Recorded:
        if self._is_client:
            raise StoreUnavailable("a client-role store does not record events: the server does")
        rkeys = [replay_key(event.channel, event.external_id)]
        if event.idempotency_key:
            rkeys.append(idempotency_key(event.idempotency_key))
        # Everything from here to the enqueue runs without awaiting: see the module docstring.
        # An external id that is the event's own fresh ULID cannot have been seen before.
        for rk in rkeys if event.external_id != event.id else rkeys[1:]:
            pending = self._pending_replays.get(rk)
            if pending is not None:
                await asyncio.shield(pending.done)
                if checkpoint is not None:
                    await self.save_checkpoint(*checkpoint)
                return Recorded(pending.receipt.model_copy(update={"outcome": Outcome.REPLAYED}))
            row = (
                self._db()
                .execute(
                    "SELECT e.id, e.lead_id FROM replay_keys r JOIN events e ON e.id = r.event_id"
                    " WHERE r.key = ?",
                    (rk,),
                )
                .fetchone()
            )
            if row is not None:
                if checkpoint is not None:
                    await self.save_checkpoint(*checkpoint)
                return Recorded(Receipt(event_id=row[0], lead_id=row[1], outcome=Outcome.REPLAYED))

        decision, assignment, day = self._decide(event, keys, since, plan)
        item = self._build(event, rkeys, keys, decision, assignment)
        if assignment is not None and assignment.seller_id is not None and day is not None:
            self._counts.add(day, assignment.seller_id)
            item.counted = (day, assignment.seller_id)
            # The day it counted in goes with the lead, in its write: a restart recounts
            # the day from what is stored, and gets the same.
            assert decision.lead is not None
            item.statements.append((_SET_COUNT_DAY, (day.isoformat(), decision.lead.id)))
        if checkpoint is not None:
            item.checkpoints.append(checkpoint)
        for rk in rkeys:
            self._pending_replays[rk] = item
        self._queue.put_nowait(item)
        await asyncio.shield(item.done)
        queued = tuple(answer.message_id for answer in decision.answers)
        return Recorded(item.receipt, item.assignment, queued)

    def _build(
        self,
        event: LeadEvent,
        rkeys: list[str],
        keys: Sequence[str],
        decision: Plan,
        assignment: Assignment | None,
    ) -> _Pending:
        loop = asyncio.get_running_loop()
        now = to_epoch(event.received_at)
        lead: Lead | None
        kind: OutboxKind | None
        after: _Pending | None = None
        if decision.action is PlanAction.CREATE:
            assert decision.lead is not None
            lead = created_lead(decision.lead, assignment)
            outcome, kind = Outcome.CREATED, OutboxKind.CREATED
        elif decision.action is PlanAction.MERGE:
            assert decision.lead_id is not None
            pending_base = self._pending_leads.get(decision.lead_id)
            after = pending_base[1] if pending_base is not None else None
            base = self._load_lead(decision.lead_id)
            if base is None:  # the planner named a lead that does not exist: a bug, not input
                raise LookupError(f"merge target {decision.lead_id} not found")
            lead = merged_lead(base, event, decision)
            outcome, kind = Outcome.MERGED, OutboxKind.MERGED
        else:
            lead, outcome, kind = None, Outcome.KEPT, None
        lead_id = lead.id if lead else None
        item = _Pending(
            receipt=Receipt(event_id=event.id, lead_id=lead_id, outcome=outcome),
            done=loop.create_future(),
            assignment=assignment,
            after=after,
        )
        doc = event_doc(event, outcome, decision.matched_on)
        item.events.append(
            (
                event.id,
                lead_id,
                event.channel.value,
                event.external_id,
                now,
                outcome.value,
                decision.matched_on,
                doc,
            )
        )
        item.replays.extend((rk, event.id) for rk in rkeys)
        self._pending_events[rkeys[0]] = lead_id
        if lead is not None:
            self._pending_leads[lead.id] = (lead, item)
            item.leads.append(
                (
                    lead.id,
                    lead.status.value,
                    lead.channel.value,
                    lead.assigned_to,
                    to_epoch(lead.created_at),
                    to_epoch(lead.last_event_at),
                    # model_dump_json() as bytes, without the str round trip.
                    lead.__pydantic_serializer__.to_json(lead),
                )
            )
            for key in keys:
                self._pending_identities.setdefault(key, []).append(lead.id)
                item.identities.append((key, lead.id))
            assert kind is not None
            delivered_at = now if self._outbox_state is OutboxState.DELIVERED else None
            item.outbox.append(
                (lead.id, event.id, kind, now, now, self._outbox_state, delivered_at)
            )
        if event.thread is not None:
            self._add_thread(item, event, decision, lead_id)
        return item

    async def _commit_loop(self) -> None:
        assert self._writer is not None
        assert self._fsync is not None
        db, fsync = self._writer, self._fsync
        loop = asyncio.get_running_loop()
        while True:
            taken = [await self._queue.get()]
            while len(taken) < self.max_batch and not self._queue.empty():
                taken.append(self._queue.get_nowait())
            batch = self._drop_orphans(taken)
            try:
                await self._write(db, fsync, loop, batch)
            finally:
                # Per item taken, dropped ones included: close() waits on queue.join().
                for _ in taken:
                    self._queue.task_done()

    async def _write(
        self,
        db: sqlite3.Connection,
        fsync: ThreadPoolExecutor,
        loop: asyncio.AbstractEventLoop,
        batch: list[_Pending],
    ) -> None:
        """Commit one batch and settle its callers; a failure fails this batch only."""
        if batch:
            try:
                await self._begin(db)
                _apply(db, batch)
                await loop.run_in_executor(fsync, db.execute, "COMMIT")
            except Exception as exc:  # disk full, I/O error: fail the batch, keep serving
                log.exception("commit of %d events failed", len(batch))
                if db.in_transaction:
                    with contextlib.suppress(Exception):
                        db.execute("ROLLBACK")
                self._settle(batch, StoreUnavailable(f"commit failed: {exc}"))
            else:
                self._settle(batch, None)

    def _drop_orphans(self, batch: list[_Pending]) -> list[_Pending]:
        """Fail, in order, the writes whose base write failed in an earlier batch (or earlier
        in this one): nothing of them is acknowledged, and their senders retry."""
        kept: list[_Pending] = []
        for p in batch:
            base = p.after
            if base is not None and base.done.done() and base.done.exception() is not None:
                self._settle([p], StoreUnavailable("the lead it joins could not be stored"))
            else:
                kept.append(p)
        return kept

    async def _begin(self, db: sqlite3.Connection) -> None:
        """BEGIN IMMEDIATE without blocking the loop while another process holds the lock."""
        delay = 0.001
        for _ in range(200):
            try:
                db.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
        raise StoreUnavailable("database stayed locked by another process for ~10 s")

    def _settle(self, batch: list[_Pending], error: Exception | None) -> None:
        for p in batch:
            for rk, _ in p.replays:
                if self._pending_replays.get(rk) is p:
                    del self._pending_replays[rk]
                self._pending_events.pop(rk, None)
            for key, lead_id in p.identities:
                ids = self._pending_identities.get(key)
                if ids is not None:
                    with contextlib.suppress(ValueError):
                        ids.remove(lead_id)
                    if not ids:
                        del self._pending_identities[key]
            for row in p.leads:
                # A newer version of the lead may wait in a later batch: keep that one.
                entry = self._pending_leads.get(row[0])
                if entry is not None and entry[1] is p:
                    del self._pending_leads[row[0]]
            if p.thread_keys or p.lines:
                self._forget_thread(p)
            for inbox_key in p.inbox_keys:
                if self._pending_inbox.get(inbox_key) is p:
                    del self._pending_inbox[inbox_key]
            if error is None:
                p.done.set_result(None)
            else:
                if p.counted is not None:
                    self._counts.remove(*p.counted)
                p.done.set_exception(error)

    # --- reads -----------------------------------------------------------------------

    async def get_lead(self, lead_id: str) -> Lead | None:
        return read_lead(self._db(), lead_id)

    async def delivery_view(self, lead_id: str, event_id: str) -> DeliveryView | None:
        return read_delivery_view(self._db(), lead_id, event_id)

    async def list_leads(self, query: LeadQuery) -> list[Lead]:
        return list_leads(self._db(), query)

    async def assignment_counts(self, day: date) -> dict[str, int]:
        # Only the day in progress is kept: past days' counts decide nothing any more.
        return self._counts.of(day)

    async def quarantine(
        self, item: Quarantined, checkpoint: tuple[str, str] | None = None
    ) -> None:
        pending = self._bare_pending()
        pending.quarantine.append(
            (
                item.channel,
                item.reason,
                to_epoch(datetime.now(UTC)),
                orjson.dumps(item.headers),
                item.body,
            )
        )
        if checkpoint is not None:
            pending.checkpoints.append(checkpoint)
        await self._enqueue(pending)

    async def save_checkpoint(self, name: str, value: str) -> None:
        pending = self._bare_pending()
        pending.checkpoints.append((name, value))
        await self._enqueue(pending)

    async def get_checkpoint(self, name: str) -> str | None:
        row = self._db().execute("SELECT value FROM checkpoints WHERE name = ?", (name,)).fetchone()
        return str(row[0]) if row else None

    async def write(self, statements: Sequence[tuple[str, tuple[Any, ...]]]) -> None:
        """Run write statements durably, in one transaction with whatever batch they join.

        Every write must come this way: the writer connection may be mid-batch, and a
        statement sent to it directly would land inside (or break) that transaction.
        """
        pending = self._bare_pending()
        pending.statements.extend(statements)
        await self._enqueue(pending)

    def _bare_pending(self) -> _Pending:
        return _Pending(
            receipt=Receipt(event_id="", lead_id=None, outcome=Outcome.KEPT),
            done=asyncio.get_running_loop().create_future(),
        )

    async def _enqueue(self, pending: _Pending) -> None:
        if self._is_client:
            await self._transact(lambda db: _apply(db, [pending]))
            return
        # Through the commit queue: the writer connection may be inside a batch transaction.
        self._queue.put_nowait(pending)
        await asyncio.shield(pending.done)

    def integrity_check(self) -> str:
        """SQLite's own consistency check of the file: "ok", or what is broken."""
        return str(self._db().execute("PRAGMA integrity_check").fetchone()[0])


_INSERT_LEAD = (
    "INSERT INTO leads (id, status, channel, assigned_to, created_at, last_event_at, doc)"
    " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET"
    " status = excluded.status, assigned_to = excluded.assigned_to,"
    " last_event_at = excluded.last_event_at, doc = excluded.doc"
)
_SET_COUNT_DAY = "UPDATE leads SET count_day = ? WHERE id = ?"
_INSERT_EVENT = (
    "INSERT INTO events (id, lead_id, channel, external_id, received_at, outcome, matched_on, doc)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_QUARANTINE = (
    "INSERT INTO quarantine (channel, reason, received_at, headers, body) VALUES (?, ?, ?, ?, ?)"
)
_UPSERT_CHECKPOINT = (
    "INSERT INTO checkpoints (name, value) VALUES (?, ?)"
    " ON CONFLICT(name) DO UPDATE SET value = excluded.value"
)
_INSERT_REPLAY = "INSERT INTO replay_keys (key, event_id) VALUES (?, ?)"
_ORDERS_SCOPED = "orders scoped by token"
_ALIAS_REPLAY = "INSERT OR IGNORE INTO replay_keys (key, event_id) VALUES (?, ?)"
_INSERT_IDENTITY = "INSERT OR IGNORE INTO identities (key, lead_id) VALUES (?, ?)"
_INSERT_OUTBOX = (
    "INSERT INTO outbox (lead_id, event_id, kind, next_attempt_at, created_at, state,"
    " delivered_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
)


def _apply(db: sqlite3.Connection, batch: Sequence[_Pending]) -> None:
    """The rows and statements of a batch, in order, inside the caller's transaction."""
    _many(db, _INSERT_LEAD, [r for p in batch for r in p.leads])
    _many(db, _INSERT_EVENT, [r for p in batch for r in p.events])
    _many(db, UPSERT_INTAKE, intake_rows(r for p in batch for r in p.events))
    _many(db, _INSERT_REPLAY, [r for p in batch for r in p.replays])
    _many(db, _INSERT_IDENTITY, [r for p in batch for r in p.identities])
    _many(db, _INSERT_OUTBOX, [r for p in batch for r in p.outbox])
    _many(db, UPSERT_CONVERSATION, [r for p in batch for r in p.conversations])
    _many(db, INSERT_MESSAGE, [r for p in batch for r in p.messages])
    _many(db, INSERT_INBOX, [r for p in batch for r in p.inbox])
    _many(db, _INSERT_QUARANTINE, [r for p in batch for r in p.quarantine])
    _many(db, _UPSERT_CHECKPOINT, [r for p in batch for r in p.checkpoints])
    for p in batch:
        for sql, params in p.statements:
            db.execute(sql, params)


def _many(db: sqlite3.Connection, sql: str, rows: list[tuple[Any, ...]]) -> None:
    if rows:
        db.executemany(sql, rows)
