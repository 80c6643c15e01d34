"""The outbox worker: claim due items, hand them to the sink, record what happened.

At-least-once: an item leaves the outbox only after the sink said it took effect, and a
crash anywhere leaves it pending. Items are claimed under this process's owner name for
`claim_lease_seconds`: no other worker (another replica) takes them while the claim runs,
one takes them over after it, and an outcome we record too late is refused by the store.
Exactly-once effect comes from the sinks' idempotency (the claim durably flags an item as
attempted before the sink sees it, so the next try looks before it creates). Transient
failures back off exponentially with jitter; permanent ones and exhausted retries go to the
dead-letter queue with their last error.
Credentials refused stop delivery (no attempts burnt) and alert via /readyz, the
`leadgate_delivery_halted` gauge and an error log; it retries every halt_probe_seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from gateway.delivery.http_session import MAX_RETRY_AFTER
from gateway.delivery.metrics import DeliveryMetrics
from gateway.delivery.settings import DeliverySettings
from gateway.delivery.sink import Delivery, Result, Sink, Status
from gateway.i18n import N_
from gateway.redact import redact
from gateway.store.base import (
    CRM_KINDS,
    LeadLink,
    OutboxItem,
    OutboxState,
    OutboxUpdate,
    Store,
)
from gateway.texts import Text

log = logging.getLogger(__name__)
# How long shutdown waits for cancelled delivery lanes to unwind.
_LANE_UNWIND_SECONDS = 5.0

_DONE = (Status.DELIVERED, Status.SKIPPED)
_FAILED = (Status.RETRY, Status.DEAD, Status.THROTTLE, Status.HALT)


def _bounded_wait(seconds: float) -> float:
    if math.isnan(seconds):
        return 0.0
    return min(max(0.0, seconds), MAX_RETRY_AFTER)


def backoff(attempt: int, initial: float, cap: float, rng: Callable[[], float]) -> float:
    """Seconds before try number attempt+1: doubling from `initial`, at most `cap`, with
    "equal jitter" (half fixed, half random) so a burst of failures does not retry in step."""
    delay = min(cap, initial * 2.0 ** max(0, attempt - 1))
    return delay / 2 + rng() * delay / 2


class OutboxWorker:
    def __init__(
        self,
        store: Store,
        sink: Sink,
        settings: DeliverySettings,
        metrics: DeliveryMetrics,
        *,
        owner: str,
        rng: Callable[[], float] = random.random,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.sink = sink
        self.settings = settings
        self.metrics = metrics
        # Our name on the items we claim (Coordination.owner: unique per process and start).
        self.owner = owner
        self._rng = rng
        self._now = now
        self._wake = asyncio.Event()
        self.halted_since: datetime | None = None
        self.halted_reason: str | None = None
        self.failing_since: datetime | None = None
        self.last_error: str | None = None
        self.stopped: str | None = None  # the worker itself died: never expected
        self._probe_at: datetime | None = None
        self._purged_at: datetime | None = None
        self._clock = clock
        self._rest_until = 0.0  # on _clock: no lane starts before (throttled, failing)
        self._busy: set[str] = set()  # leads whose items are in a lane now
        self._held: list[OutboxItem] = []  # claimed while their lead was busy
        # lead -> {item id: due} of items this worker sent back to wait (retry, throttle)
        self._resting: dict[str, dict[int, datetime]] = {}
        self._refreshed_at: datetime | None = None

    # --- what ops see ---------------------------------------------------------------------

    def problem(self) -> str | None:
        """For /readyz: None when delivery is healthy."""
        name = self.sink.name
        if self.stopped is not None:
            return Text(N_("обработчик очереди остановлен: {reason}"), reason=self.stopped)
        if self.halted_since is not None:
            return Text(
                N_(
                    "{sink} отклоняет наши учётные данные, доставка остановлена с {since} "
                    "({reason}); исправьте их, новая попытка каждые {seconds} с"
                ),
                sink=name,
                since=self.halted_since,
                reason=self.halted_reason,
                seconds=f"{self.settings.halt_probe_seconds:g}",
            )
        if self.failing_since is not None:
            return Text(
                N_("{sink}: ошибки с {since}: {error}; лиды ждут в очереди"),
                sink=name,
                since=self.failing_since,
                error=self.last_error,
            )
        return None

    def wake(self) -> None:
        """Look at the outbox now instead of at the next poll, even while resting after a
        throttle (an operator made items due again)."""
        self._rest_until = 0.0
        self._wake.set()

    def stored(self) -> None:
        """A lead was stored: look now, unless resting because the sink asked us to."""
        self._wake.set()

    # --- the loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Dispatch batches until cancelled: up to `concurrency` sink calls in flight, each
        a lane of its own (claim -> deliver -> record). The sink's own budget (the portal's
        leaky bucket) paces the lanes through ready(); a lead is in one lane at a time."""
        self.stopped = None  # started (again, by the supervisor, after it stopped)
        await self.sink.start()
        lanes: set[asyncio.Task[None]] = set()
        try:
            while True:
                lanes = {lane for lane in lanes if not lane.done()}
                if len(lanes) >= self.settings.concurrency:
                    await asyncio.wait(lanes, return_when=asyncio.FIRST_COMPLETED)
                    continue
                try:
                    pause = await self._dispatch(lanes)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the store hiccuped: keep going, slower
                    log.exception("outbox worker cycle failed")
                    self._failing(f"{type(exc).__name__}: {exc}")
                    pause = max(self.settings.poll_seconds, 1.0)
                if pause > 0:
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), pause)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self.stopped = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            for lane in lanes:
                lane.cancel()
            # Cancelled lanes leave their items claimed: taken over after the lease, as after
            # a crash. Waiting for them here keeps the sink open while they unwind — for a
            # bounded time: a lane stuck in a call that ignores cancellation must not hold
            # the shutdown (its items are taken over after the lease all the same).
            if lanes:
                _, stuck = await asyncio.wait(lanes, timeout=_LANE_UNWIND_SECONDS)
                if stuck:
                    log.warning("%d outbox lanes did not unwind; left to their lease", len(stuck))
            await self._release_held()
            await self.sink.close()

    async def run_once(self) -> float:
        """One cycle in the caller's task: claim, deliver, record; returns how long to rest
        before the next one (0: go on at once)."""
        batch, rest = await self._take()
        if batch is None:
            return rest
        return await self._lane(batch)

    async def _dispatch(self, lanes: set[asyncio.Task[None]]) -> float:
        """Start one lane if there is work and budget; return how long to rest (0: at once)."""
        batch, rest = await self._take()
        if batch is None:
            return rest
        lane = asyncio.get_running_loop().create_task(self._run_lane(batch))
        lanes.add(lane)
        return 0.0

    async def _run_lane(self, batch: list[OutboxItem]) -> None:
        try:
            pause = await self._lane(batch)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the store hiccuped: its items come back after the lease
            log.exception("outbox worker lane failed")
            self._failing(f"{type(exc).__name__}: {exc}")
            pause = max(self.settings.poll_seconds, 1.0)
        if pause > 0:
            self._rest_until = max(self._rest_until, self._clock() + pause)
        self._wake.set()  # its leads are free again, and a lane is

    async def _take(self) -> tuple[list[OutboxItem] | None, float]:
        """The next batch to send (its leads marked busy), or None and how long to rest."""
        rest = self._rest_until - self._clock()
        if rest > 0:  # throttled or failing: a wake (a new lead) does not cut this short
            return None, rest
        now = self._now()
        await self._refresh(now)
        if self._probe_at is not None and now < self._probe_at:
            return None, (self._probe_at - now).total_seconds()
        await self.sink.ready()
        # Items claimed earlier whose lead was busy then: oldest first, before new ones.
        batch = [item for item in self._held if item.lead_id not in self._busy]
        self._held = [item for item in self._held if item.lead_id in self._busy]
        room = self.settings.batch_size - len(batch)
        if room > 0 and len(self._held) < self.settings.batch_size:
            claimed = await self.store.claim_outbox(
                self._now(),
                room,
                owner=self.owner,
                lease_seconds=self.settings.claim_lease_seconds,
                mark=self.sink.marks_attempts,
                kinds=CRM_KINDS,  # messages to customers are the message worker's
            )
            # A lead already in another lane waits for that lane: its events reach the
            # sink in order, and a merge finds the lead its create made.
            self._held += [item for item in claimed if item.lead_id in self._busy]
            batch += [item for item in claimed if item.lead_id not in self._busy]
        # A lane may have ended while this awaited, asking for a rest (a throttle, refused
        # credentials): what was claimed goes back untouched, to go when the rest is over.
        rest = max(
            self._rest_until - self._clock(),
            (self._probe_at - now).total_seconds() if self._probe_at is not None else 0.0,
        )
        if rest > 0:
            await self._put_back(batch, now + timedelta(seconds=rest))
            return None, rest
        batch = await self._behind_resting(batch, now)
        if not batch:
            if not self._held and not self._busy:
                await self._purge(now)
            return None, self.settings.poll_seconds
        self._busy.update(item.lead_id for item in batch)
        # In the order they were stored: an item held back may be newer than one claimed
        # now (its lead's earlier item came back from a throttle or a halt meanwhile).
        batch.sort(key=lambda item: item.id)
        return batch, 0.0

    async def _behind_resting(self, batch: list[OutboxItem], now: datetime) -> list[OutboxItem]:
        """Put back, until then, the items whose lead has an older item resting until later
        (a retry's backoff, a throttle): an event never overtakes an earlier one of its lead
        that this worker sent back. When both are due they are claimed together, in order."""
        if not self._resting:
            return batch
        ids = {item.id for item in batch}
        go: list[OutboxItem] = []
        back: list[OutboxUpdate] = []
        for item in batch:
            resting = self._resting.get(item.lead_id, {})
            due = max(
                (d for i, d in resting.items() if i < item.id and i not in ids and d > now),
                default=None,
            )
            if due is None:
                go.append(item)
                continue
            back.append(
                OutboxUpdate(
                    item.id,
                    OutboxState.PENDING,
                    error="waits for an earlier event of its lead",
                    next_attempt_at=due,
                    count_attempt=False,
                    attempted=item.attempted,
                )
            )
        if back:
            await self.store.update_outbox(self.sink.name, back, now, owner=self.owner)
        # Forget what is due by now: the rule only ever holds an item until then, so a
        # resting item another worker took over never blocks its lead here for good.
        for lead_id in list(self._resting):
            kept = {i: d for i, d in self._resting[lead_id].items() if d > now}
            if kept:
                self._resting[lead_id] = kept
            else:
                del self._resting[lead_id]
        return go

    def _rests(self, item: OutboxItem, update: OutboxUpdate) -> None:
        """Remember an item this worker sent back to wait, and forget one that is done."""
        if update.state is OutboxState.PENDING and update.next_attempt_at is not None:
            self._resting.setdefault(item.lead_id, {})[item.id] = update.next_attempt_at
        elif (resting := self._resting.get(item.lead_id)) is not None:
            resting.pop(item.id, None)
            if not resting:
                del self._resting[item.lead_id]

    async def _release_held(self) -> None:
        """Items claimed but never sent go back at once, not after their lease."""
        held, self._held = self._held, []
        try:
            await self._put_back(held, self._now())
        except Exception:  # the store is closing too: the lease runs out instead
            log.warning("%d claimed outbox items wait for their lease to end", len(held))

    async def _put_back(self, items: Sequence[OutboxItem], due: datetime) -> None:
        """End our claim on items we did not send: pending, due at `due`, no attempt used."""
        if not items:
            return
        back = [
            OutboxUpdate(
                item.id,
                OutboxState.PENDING,
                error=item.last_error,
                next_attempt_at=due,
                count_attempt=False,
                attempted=item.attempted,
            )
            for item in items
        ]
        await self.store.update_outbox(self.sink.name, back, self._now(), owner=self.owner)

    async def _lane(self, items: list[OutboxItem]) -> float:
        try:
            deliveries, missing = await self._deliveries(items)
            results = await self._deliver(deliveries)
            results += [
                Result(item.id, Status.DEAD, error="its lead is not in the store")
                for item in missing
            ]
            return await self._record(items, results)
        finally:
            self._busy.difference_update(item.lead_id for item in items)

    async def _deliveries(
        self, items: Sequence[OutboxItem]
    ) -> tuple[list[Delivery], list[OutboxItem]]:
        lead_ids = list(dict.fromkeys(item.lead_id for item in items))
        links: dict[str, LeadLink] = await self.store.lead_links(self.sink.name, lead_ids)
        out: list[Delivery] = []
        missing: list[OutboxItem] = []
        for item in items:
            # The lead and this item's event only: a lead with 10,000 merged events costs
            # the same to deliver as a new one.
            view = await self.store.delivery_view(item.lead_id, item.event_id)
            if view is None:
                missing.append(item)
                continue
            link = links.get(item.lead_id)
            out.append(
                Delivery(
                    item=item,
                    lead=view.lead,
                    event=view.event,
                    lead_remote_id=link.remote_id if link else None,
                    lead_state=link.state if link else None,
                    event_count=view.event_count,
                )
            )
        return out, missing

    async def _deliver(self, deliveries: Sequence[Delivery]) -> list[Result]:
        if not deliveries:
            return []
        try:
            results = await self.sink.deliver(deliveries)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a sink bug or an unexpected answer: a transient failure
            log.exception("sink %s failed on a batch of %d", self.sink.name, len(deliveries))
            error = f"{self.sink.name}: {type(exc).__name__}: {exc}"
            results = [Result(d.item.id, Status.RETRY, error=error) for d in deliveries]
        seen = {r.outbox_id for r in results}
        results += [
            Result(d.item.id, Status.RETRY, error=f"{self.sink.name} gave no result")
            for d in deliveries
            if d.item.id not in seen
        ]
        return results

    async def _record(self, items: Sequence[OutboxItem], results: Sequence[Result]) -> float:
        s = self.settings
        by_id = {item.id: item for item in items}
        now = self._now()
        updates: list[OutboxUpdate] = []
        pause = 0.0
        halt: Result | None = None
        counts: dict[str, int] = {}
        for r in results:
            if r.retry_after is not None:
                # Whatever a sink passes on: never a wait that breaks the date arithmetic.
                r = replace(r, retry_after=_bounded_wait(r.retry_after))
            item = by_id[r.outbox_id]
            # Errors are kept and shown (`leadgate outbox`, /readyz): never with a secret.
            error = redact(r.error) if r.error else r.error
            status = r.status
            if status in _DONE:
                updates.append(OutboxUpdate(item.id, OutboxState.DELIVERED, remote_id=r.remote_id))
                self.metrics.latency.observe(max(0.0, (now - item.created_at).total_seconds()))
            elif status is Status.RETRY and item.attempts + 1 >= s.max_attempts:
                status = Status.DEAD
                error = f"gave up after {item.attempts + 1} attempts: {error}"
                updates.append(OutboxUpdate(item.id, OutboxState.DEAD, error=error))
            elif status is Status.RETRY:
                wait = backoff(
                    item.attempts + 1, s.backoff_initial_seconds, s.backoff_max_seconds, self._rng
                )
                wait = max(wait, r.retry_after or 0.0)
                due = now + timedelta(seconds=wait)
                updates.append(
                    OutboxUpdate(item.id, OutboxState.PENDING, error=error, next_attempt_at=due)
                )
            elif status is Status.DEAD:
                updates.append(OutboxUpdate(item.id, OutboxState.DEAD, error=error))
            else:
                # WAIT, THROTTLE, HALT: the sink did nothing with it; no attempt is used up.
                wait = r.retry_after if r.retry_after is not None else 0.0
                if status is Status.WAIT:
                    wait = r.retry_after or s.wait_seconds
                elif status is Status.THROTTLE:
                    pause = max(pause, wait or 1.0)
                else:
                    halt = r
                updates.append(
                    OutboxUpdate(
                        item.id,
                        OutboxState.PENDING,
                        error=error,
                        next_attempt_at=now + timedelta(seconds=wait),
                        count_attempt=False,
                        attempted=item.attempted,
                    )
                )
            counts[status.value] = counts.get(status.value, 0) + 1
            if status is Status.DEAD:
                log.error("outbox item %d (%s) is dead: %s", item.id, item.kind, error)
        for update in updates:
            self._rests(by_id[update.id], update)
        refused = await self.store.update_outbox(self.sink.name, updates, now, owner=self.owner)
        self._refreshed_at = None  # outcomes change the backlog: count it on the next cycle
        if refused:
            # Our claim ran out while the sink worked and another worker took the items
            # over: its outcome stands. Seen here means claim_lease_seconds is too short.
            log.warning(
                "outbox items %s were taken over by another worker before %s answered; "
                "their outcome here is dropped (raise delivery.claim_lease_seconds)",
                ", ".join(map(str, refused)),
                self.sink.name,
            )
        for name, count in counts.items():
            self.metrics.result(name, count)
        self._health(results, halt, now)
        if halt is not None:
            return s.halt_probe_seconds
        return pause

    def _health(self, results: Sequence[Result], halt: Result | None, now: datetime) -> None:
        if halt is not None:
            if self.halted_since is None:
                self.halted_since = now
                log.error(
                    "delivery to %s STOPPED: credentials refused (%s). Fix the webhook, then it "
                    "resumes by itself (next try in %g s); nothing is lost meanwhile.",
                    self.sink.name,
                    halt.error,
                    self.settings.halt_probe_seconds,
                )
            self.halted_reason = redact(halt.error or "refused")
            self._probe_at = now + timedelta(seconds=self.settings.halt_probe_seconds)
            self.metrics.halted.set(1)
            return
        if any(r.status in _DONE for r in results):
            if self.halted_since is not None:
                log.warning("delivery to %s resumed", self.sink.name)
            if self.failing_since is not None:
                log.info("delivery to %s is healthy again", self.sink.name)
            self.halted_since = self.halted_reason = self._probe_at = None
            self.failing_since = None
            self.metrics.halted.set(0)
            self.metrics.failing.set(0)
            return
        failed = [r for r in results if r.status in _FAILED]
        if failed:
            self._failing(failed[0].error or failed[0].status.value)

    def _failing(self, error: str) -> None:
        if self.failing_since is None:
            self.failing_since = self._now()
            log.warning("delivery to %s failing: %s", self.sink.name, error)
        self.last_error = redact(error)
        self.metrics.failing.set(1)

    async def _refresh(self, now: datetime) -> None:
        # Counting the backlog costs a scan of the pending rows; with a wake per stored
        # lead it would run per lead. New rows alone are counted at most once a second;
        # after outcomes, at once.
        if self._refreshed_at is not None and abs(now - self._refreshed_at) < timedelta(seconds=1):
            return
        self._refreshed_at = now
        stats = await self.store.outbox_stats(CRM_KINDS)
        self.metrics.depth.set(stats.pending)
        self.metrics.dead.set(stats.dead)
        oldest = stats.oldest_pending_at
        self.metrics.oldest_age.set(max(0.0, (now - oldest).total_seconds()) if oldest else 0.0)

    async def _purge(self, now: datetime) -> None:
        days = self.settings.keep_delivered_days
        if days <= 0:
            return
        if self._purged_at is not None and now - self._purged_at < timedelta(hours=1):
            return
        self._purged_at = now
        await self.store.purge_outbox(now - timedelta(days=days))
