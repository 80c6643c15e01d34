"""The inbox worker: claim pending entries, hand each to its channel's handler, record how
it went. Every replica runs one (not a singleton): claims with an owner and a lease keep
two from handling one entry at a time, and a worker that died leaves its entries to the
others once its lease runs out. Handlers are idempotent, so an entry handled twice (its
claim ran out mid-way) replays, never duplicates.

Entries are handled one after the other in the order they were kept, and the messages of
one chat (an entry's thread) strictly so, across retries and replicas: the store claims a
thread's entry only while no older one of it waits, and within a batch an entry whose
thread's earlier entry failed goes back untouched (no attempt used) to wait for it.

Done entries are purged after [inbox] keep_done_days, checked hourly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from gateway.chat_metrics import ChatMetrics
from gateway.chat_settings import InboxSettings
from gateway.delivery.worker import backoff
from gateway.inbox import Inbox, InboxItem, InboxState, InboxUpdate, Unprocessable
from gateway.redact import redact
from gateway.store.base import Store
from gateway.supervisor import describe

log = logging.getLogger(__name__)

# An entry of a channel nobody handles now (its connector is switched off) waits this long.
NO_HANDLER_WAIT = 60.0


class InboxWorker:
    def __init__(
        self,
        store: Store,
        inbox: Inbox,
        settings: InboxSettings,
        metrics: ChatMetrics,
        *,
        owner: str,
        rng: Callable[[], float] = random.random,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.inbox = inbox
        self.settings = settings
        self.metrics = metrics
        self.owner = owner
        self._rng = rng
        self._now = now
        self._wake = asyncio.Event()
        self.unhandled: set[str] = set()  # channels with entries and no handler
        self.dead = 0
        self._due: datetime | None = None  # the earliest retry this worker scheduled
        self._purged_at: datetime | None = None
        inbox.on_put(self.wake)

    def wake(self) -> None:
        self._wake.set()

    def problem(self) -> str | None:
        """For /readyz: entries nobody can handle, or entries given up on."""
        problems = []
        if self.unhandled:
            names = ", ".join(sorted(self.unhandled))
            problems.append(f"entries of {names} wait: no connector handles that channel")
        if self.dead:
            problems.append(
                f"{self.dead} entr{'y' if self.dead == 1 else 'ies'} could not be handled"
                " (leadgate inbox list --state dead)"
            )
        return "; ".join(problems) or None

    async def run(self) -> None:
        while True:
            try:
                pause = await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # the store hiccuped: keep going, slower
                log.exception("inbox worker cycle failed")
                pause = self.settings.poll_seconds
            if pause > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), pause)

    async def run_once(self) -> float:
        """One batch; returns how long to rest (0: more may be waiting now)."""
        await self._refresh()
        await self._purge()
        s = self.settings
        items = await self.store.inbox_claim(
            self._now(), s.batch_size, owner=self.owner, lease_seconds=s.claim_lease_seconds
        )
        stalled: set[tuple[str, str, str]] = set()  # threads whose earlier entry must wait
        for item in items:
            thread = (item.channel, item.account, item.thread) if item.thread else None
            if thread is not None and thread in stalled:
                # Its chat's earlier message waits for a retry: this one may not overtake.
                update = InboxUpdate(item.id, InboxState.PENDING, count_attempt=False)
            else:
                update = await self._handle(item)
                if thread is not None and update.state is InboxState.PENDING:
                    stalled.add(thread)
            due = update.next_attempt_at
            if due is not None and (self._due is None or due < self._due):
                self._due = due
            refused = await self.store.update_inbox([update], self._now(), owner=self.owner)
            if refused:
                log.warning(
                    "inbox entry %d was taken over by another worker while handled here "
                    "(raise inbox.claim_lease_seconds)",
                    item.id,
                )
        return 0.0 if len(items) == s.batch_size else self._until_due()

    async def _purge(self) -> None:
        days = self.settings.keep_done_days
        now = self._now()
        if days <= 0 or (
            self._purged_at is not None and now - self._purged_at < timedelta(hours=1)
        ):
            return
        self._purged_at = now
        purged = await self.store.purge_inbox(now - timedelta(days=days))
        if purged:
            log.info("inbox: forgot %d entries handled more than %d days ago", purged, days)

    def _until_due(self) -> float:
        """Rest until the first retry this worker scheduled is due, at most poll_seconds."""
        poll = self.settings.poll_seconds
        if self._due is None:
            return poll
        wait = (self._due - self._now()).total_seconds()
        if wait <= 0:
            self._due = None
            return 0.0
        return min(poll, wait)

    async def _handle(self, item: InboxItem) -> InboxUpdate:
        handler = self.inbox.handlers.get(item.channel)
        now = self._now()
        if handler is None:
            self.unhandled.add(item.channel)
            return InboxUpdate(
                item.id,
                InboxState.PENDING,
                error=f"no handler for channel {item.channel!r}",
                next_attempt_at=now + timedelta(seconds=NO_HANDLER_WAIT),
                count_attempt=False,
            )
        self.unhandled.discard(item.channel)
        try:
            await handler(item)
        except asyncio.CancelledError:
            raise
        except Unprocessable as exc:
            return self._dead(item, f"unprocessable: {redact(str(exc))[:500]}")
        except Exception as exc:
            error = describe(exc)
            if item.attempts + 1 >= self.settings.max_attempts:
                return self._dead(item, f"gave up after {item.attempts + 1} attempts: {error}")
            log.warning("inbox entry %d (%s) failed, will retry: %s", item.id, item.channel, error)
            self.metrics.handled(item.channel, item.account, "retry")
            s = self.settings
            wait = backoff(
                item.attempts + 1, s.backoff_initial_seconds, s.backoff_max_seconds, self._rng
            )
            return InboxUpdate(
                item.id,
                InboxState.PENDING,
                error=error,
                next_attempt_at=self._now() + timedelta(seconds=wait),
            )
        self.metrics.handled(item.channel, item.account, "done")
        return InboxUpdate(item.id, InboxState.DONE)

    def _dead(self, item: InboxItem, error: str) -> InboxUpdate:
        log.error("inbox entry %d (%s/%s) is dead: %s", item.id, item.channel, item.account, error)
        self.metrics.handled(item.channel, item.account, "dead")
        self.dead += 1  # until the next count from the store
        return InboxUpdate(item.id, InboxState.DEAD, error=error)

    async def _refresh(self) -> None:
        stats = await self.store.inbox_stats()
        self.metrics.inbox_depth({c: (s.pending, s.dead) for c, s in stats.items()})
        self.dead = sum(s.dead for s in stats.values())
        oldest = min(
            (s.oldest_pending_at for s in stats.values() if s.oldest_pending_at is not None),
            default=None,
        )
        age = (self._now() - oldest).total_seconds() if oldest is not None else 0.0
        self.metrics.inbox_oldest.set(max(0.0, age))
