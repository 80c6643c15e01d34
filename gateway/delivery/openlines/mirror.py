"""The Open Lines worker: customers' messages into the line, delivery reports back to it.

It claims the outbox rows of kinds message.mirror and message.status only (with an owner
and a lease, like the CRM and message workers), so every replica may run one and no row
is sent twice at once; the store hands out a conversation's rows one at a time per kind,
so the line sees a customer's messages in the order they came.
- message.mirror: one imconnector.send.messages for the claimed rows (one per
  conversation), each row delivered when its element of the answer says SUCCESS;
- message.status: the seller's answer it is about waits until the customer's channel sent
  it; then one imconnector.send.status.delivery for all that are sent. An answer that
  could not be delivered is not reported: Open Lines then shows it as not delivered.
Every request takes its token from the portal's bucket, shared with the CRM delivery.
Outcomes as the CRM worker's: a throttle waits (no attempt used), a transient failure
backs off, a refusal of the whole request that names no culprit is retried one row at a
time, and credentials refused (or the connector switched off on the line) stop the work
with a /readyz problem, probing every halt_probe_seconds; nothing is lost meanwhile.

A request that may have reached Bitrix24 before its answer was lost is sent again:
Bitrix24 documents no idempotency key for send.messages, so after such a failure the
seller may see a message twice rather than never.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway import channels
from gateway.conversations import Direction, MessageStatus, MessageView
from gateway.delivery.b24client import B24Error
from gateway.delivery.openlines.client import AppClient
from gateway.delivery.openlines.links import CrmLinks
from gateway.delivery.openlines.metrics import OpenLinesMetrics
from gateway.delivery.openlines.payload import (
    ReplyRef,
    message_item,
    reply_checkpoint,
    status_item,
)
from gateway.delivery.openlines.settings import OpenLinesSettings
from gateway.delivery.openlines.tokens import AppState, TokenKeeper
from gateway.delivery.settings import DeliverySettings
from gateway.delivery.worker import _bounded_wait, backoff
from gateway.redact import redact
from gateway.store.base import (
    MIRROR_KINDS,
    OutboxItem,
    OutboxKind,
    OutboxState,
    OutboxUpdate,
    Store,
)

log = logging.getLogger(__name__)

SINK = "openlines"  # the name the outbox knows this worker's outcomes by
# Refusals that mean the connector is not (or no longer) set up on the line.
SETUP_CODES = frozenset({"NOT_ACTIVE_LINE", "IMCONNECTOR_NO_CORRECT_PROVIDER"})
FINAL_UNSENT = (MessageStatus.UNDELIVERABLE, MessageStatus.UNCONFIRMED)


@dataclass(slots=True)
class Prepared:
    item: OutboxItem
    payload: dict[str, Any]
    view: MessageView
    crm_id: str | None = None


class MirrorWorker:
    def __init__(
        self,
        store: Store,
        client: AppClient,
        keeper: TokenKeeper,
        links: CrmLinks,
        settings: OpenLinesSettings,
        delivery: DeliverySettings,
        metrics: OpenLinesMetrics,
        *,
        owner: str,
        rng: Callable[[], float] = random.random,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.client = client
        self.keeper = keeper
        self.links = links
        self.settings = settings
        self.delivery = delivery
        self.metrics = metrics
        self.owner = owner
        self._rng = rng
        self._now = now
        self._wake = asyncio.Event()
        self.halted_since: datetime | None = None
        self.halted_reason: str | None = None
        self.failing_since: datetime | None = None
        self.last_error: str | None = None
        self._probe_at: datetime | None = None

    def wake(self) -> None:
        self._wake.set()

    def problem(self) -> str | None:
        """For /readyz (the application's own state is the keeper's problem)."""
        if self.halted_since is not None:
            return (
                f"Open Lines refused since {self.halted_since:%Y-%m-%d %H:%M:%S} UTC "
                f"({self.halted_reason}); messages wait in the outbox, next try "
                f"{self._probe_at:%H:%M:%S} UTC"
            )
        if self.failing_since is not None:
            return (
                f"mirroring into Open Lines failing since {self.failing_since:%Y-%m-%d %H:%M:%S}"
                f" UTC: {self.last_error}; messages wait in the outbox"
            )
        return None

    # --- the loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            try:
                pause = await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the store hiccuped: keep going, slower
                log.exception("Open Lines worker cycle failed")
                self._failing(f"{type(exc).__name__}: {exc}")
                pause = max(self.delivery.poll_seconds, 1.0)
            if pause > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), pause)

    async def run_once(self) -> float:
        """One batch; returns how long to rest (0: more may be waiting now)."""
        stats = await self.store.outbox_stats(MIRROR_KINDS)
        self.metrics.pending.set(stats.pending)
        now = self._now()
        if self._probe_at is not None and now < self._probe_at:
            return (self._probe_at - now).total_seconds()
        if self.keeper.state is not AppState.READY and await self.keeper.load() is None:
            # Not installed or refused: rows wait (no attempt used); the keeper says why,
            # and an installation wakes this worker.
            return min(self.delivery.halt_probe_seconds, 30.0)
        await self.client.bucket.wait_ready()
        items = await self.store.claim_outbox(
            self._now(),
            self.settings.batch_size,
            owner=self.owner,
            lease_seconds=self.delivery.claim_lease_seconds,
            mark=True,
            kinds=MIRROR_KINDS,
        )
        if not items:
            return self.delivery.poll_seconds
        mirror = [i for i in items if i.kind is OutboxKind.MESSAGE_MIRROR]
        status = [i for i in items if i.kind is OutboxKind.MESSAGE_STATUS]
        updates = await self._mirror(mirror) + await self._report(status)
        refused = await self.store.update_outbox(SINK, updates, self._now(), owner=self.owner)
        if refused:
            log.warning(
                "Open Lines rows %s were taken over by another worker before their outcome "
                "was kept (raise delivery.claim_lease_seconds)",
                ", ".join(map(str, refused)),
            )
        return self._health(updates)

    # --- customers' messages ------------------------------------------------------------

    async def _mirror(self, items: Sequence[OutboxItem]) -> list[OutboxUpdate]:
        if not items:
            return []
        updates: list[OutboxUpdate] = []
        prepared: list[Prepared] = []
        crm_ids = await self.links.crm_ids([i.lead_id for i in items])
        for item in items:
            view = await self.store.get_message(item.message_id) if item.message_id else None
            if view is None or view.message.direction is not Direction.IN:
                updates.append(self._dead(item, "its message is not in the store"))
                continue
            lead = await self.store.delivery_view(item.lead_id, item.event_id)
            crm_id = crm_ids.get(item.lead_id)
            payload = message_item(
                view.conversation,
                view.message,
                lead.lead.contact if lead is not None else None,
                channel_label=channels.label(view.conversation.channel),
                crm_url=self.links.lead_url(crm_id) if crm_id else None,
                disable_crm=not self.settings.crm_tracker,
            )
            prepared.append(Prepared(item, payload, view, crm_id))
        updates += await self._send(prepared)
        return updates

    async def _send(self, prepared: Sequence[Prepared]) -> list[OutboxUpdate]:
        if not prepared:
            return []
        params = {
            "CONNECTOR": self.settings.connector_id,
            "LINE": self.settings.line,
            "MESSAGES": [p.payload for p in prepared],
        }
        try:
            result = await self.client.call("imconnector.send.messages", params)
        except B24Error as exc:
            if exc.kind == "permanent" and exc.code not in SETUP_CODES and len(prepared) > 1:
                # The request as a whole was refused: find the culprit one by one.
                out: list[OutboxUpdate] = []
                for one in prepared:
                    out += await self._send([one])
                return out
            return [self._failed(p.item, exc) for p in prepared]
        rows = _result_rows(result)
        updates = []
        for i, p in enumerate(prepared):
            row = rows[i] if i < len(rows) else None
            if isinstance(row, dict) and row.get("SUCCESS") is True:
                session = row.get("session")
                found = session.get("CHAT_ID") if isinstance(session, dict) else None
                im_chat = str(found) if found else None
                updates.append(OutboxUpdate(p.item.id, OutboxState.DELIVERED, remote_id=im_chat))
                self.metrics.mirrored("delivered")
                if p.crm_id and im_chat:
                    who = p.payload["chat"]["name"]
                    await self.links.comment(p.view.conversation.id, p.crm_id, im_chat, who)
                continue
            errors = row.get("ERRORS") if isinstance(row, dict) else None
            reason = f"Open Lines did not take it: {errors or 'no result for it'}"
            updates.append(self._retry(p.item, reason, None))
        return updates

    # --- delivery reports of sellers' answers -------------------------------------------

    async def _report(self, items: Sequence[OutboxItem]) -> list[OutboxUpdate]:
        if not items:
            return []
        updates: list[OutboxUpdate] = []
        ready: list[tuple[OutboxItem, dict[str, Any]]] = []
        now = self._now()
        for item in items:
            view = await self.store.get_message(item.message_id) if item.message_id else None
            if view is None:
                updates.append(self._dead(item, "its message is not in the store"))
                continue
            status = view.message.status
            if status in FINAL_UNSENT:
                # Not reported: Open Lines shows the answer as not delivered.
                reason = f"not delivered to the customer: {view.message.status_reason or status}"
                updates.append(OutboxUpdate(item.id, OutboxState.CLOSED, error=reason))
                self.metrics.reported("undelivered")
                continue
            if status is not MessageStatus.SENT:
                wait = now + timedelta(seconds=self.delivery.wait_seconds)
                updates.append(self._later(item, wait, f"the answer is {status.value}"))
                continue
            raw = await self.store.get_checkpoint(reply_checkpoint(view.message.id))
            ref = ReplyRef.loads(raw) if raw else None
            if ref is None:
                updates.append(self._dead(item, "the answer's place in the line is not known"))
                continue
            ready.append((item, status_item(ref, now)))
        if ready:
            params = {
                "CONNECTOR": self.settings.connector_id,
                "LINE": self.settings.line,
                "MESSAGES": [payload for _, payload in ready],
            }
            try:
                await self.client.call("imconnector.send.status.delivery", params)
            except B24Error as exc:
                return updates + [self._failed(item, exc) for item, _ in ready]
            for item, _ in ready:
                updates.append(OutboxUpdate(item.id, OutboxState.DELIVERED))
                self.metrics.reported("delivered")
        return updates

    # --- outcomes ---------------------------------------------------------------------------

    def _failed(self, item: OutboxItem, exc: B24Error) -> OutboxUpdate:
        error = redact(str(exc))
        if exc.kind == "halt" or exc.code in SETUP_CODES:
            self._halt(
                error if exc.code not in SETUP_CODES else f"{error}; run `leadgate openlines setup`"
            )
            assert self._probe_at is not None
            self.metrics.mirrored("halted")
            return self._later(item, self._probe_at, error)
        if exc.kind == "throttle":
            self.metrics.mirrored("throttled")
            wait = _bounded_wait(exc.retry_after or 1.0)
            return self._later(item, self._now() + timedelta(seconds=wait), error)
        if exc.kind == "permanent":
            return self._dead(item, error)
        return self._retry(item, error, exc.retry_after)

    def _retry(self, item: OutboxItem, error: str, retry_after: float | None) -> OutboxUpdate:
        d = self.delivery
        if item.attempts + 1 >= d.max_attempts:
            return self._dead(item, f"gave up after {item.attempts + 1} attempts: {error}")
        self.metrics.mirrored("retry")
        wait = backoff(
            item.attempts + 1, d.backoff_initial_seconds, d.backoff_max_seconds, self._rng
        )
        if retry_after is not None:
            wait = max(wait, _bounded_wait(retry_after))
        due = self._now() + timedelta(seconds=wait)
        return OutboxUpdate(item.id, OutboxState.PENDING, error=error, next_attempt_at=due)

    def _later(self, item: OutboxItem, due: datetime, error: str) -> OutboxUpdate:
        """Back to pending without using an attempt: nothing reached Bitrix24 this time."""
        return OutboxUpdate(
            item.id,
            OutboxState.PENDING,
            error=error,
            next_attempt_at=due,
            count_attempt=False,
            attempted=item.attempted,
        )

    def _dead(self, item: OutboxItem, error: str) -> OutboxUpdate:
        log.error("Open Lines row %d (%s) is dead: %s", item.id, item.kind, error)
        self.metrics.mirrored("dead")
        return OutboxUpdate(item.id, OutboxState.DEAD, error=error)

    def _halt(self, reason: str) -> None:
        now = self._now()
        if self.halted_since is None:
            self.halted_since = now
            log.error("Open Lines STOPPED: %s; messages wait in the outbox", reason)
        self.halted_reason = reason
        self._probe_at = now + timedelta(seconds=self.delivery.halt_probe_seconds)

    def _failing(self, error: str) -> None:
        if self.failing_since is None:
            self.failing_since = self._now()
            log.warning("mirroring into Open Lines failing: %s", error)
        self.last_error = redact(error)

    def _health(self, updates: Sequence[OutboxUpdate]) -> float:
        # Failures: attempts used up or given up; a report waiting for its answer is not one.
        failed = [
            u.error or "failed"
            for u in updates
            if u.state is OutboxState.DEAD or (u.state is OutboxState.PENDING and u.count_attempt)
        ]
        if any(u.state is OutboxState.DELIVERED for u in updates):
            if self.halted_since is not None:
                log.warning("Open Lines resumed")
            self.halted_since = self.halted_reason = self._probe_at = None
            self.failing_since = self.last_error = None
        elif self.halted_since is None and failed:
            self._failing(failed[0])
        if self._probe_at is not None:
            return max(0.0, (self._probe_at - self._now()).total_seconds())
        # Something went through: the next message of its conversation may be claimable
        # now, so look again at once rather than at the next poll.
        delivered = any(u.state is OutboxState.DELIVERED for u in updates)
        return 0.0 if delivered else self.delivery.poll_seconds


def _result_rows(result: Any) -> list[Any]:
    """DATA.RESULT of a send.messages answer: one element per message sent, in order."""
    if not isinstance(result, dict):
        return []
    data = result.get("DATA")
    rows = data.get("RESULT") if isinstance(data, dict) else None
    return rows if isinstance(rows, list) else []
