"""The message worker: sends the queued messages to customers through their channel's
sender, and keeps each transcript line's status.

It claims `message.out` outbox rows only (the CRM worker takes the rest) with an owner and
a lease, like the outbox worker, so replicas never send one row at the same time; the store
hands out a conversation's messages one at a time, in order. Outcomes:
- sent: the line is `sent` with the vendor's message id;
- retry (a rate limit, the vendor down, a network error): `retrying`, backoff with
  jitter, at least the vendor's retry_after; after max_attempts the row goes to the
  dead-letter queue (`leadgate outbox retry` sends it again) and the line is undeliverable;
- undeliverable (blocked, reply window closed, chat gone): final, with the vendor's words;
- halt (our token refused): nothing is sent on that account until a probe succeeds
  (halt_probe_seconds); no attempt is used, /readyz and leadgate_messages_halted say so.

- unknown (the request went out and no answer came: a timeout, a dropped connection; or
  the sender raised): repeated when the sender is idempotent (the vendor deduplicates:
  VK's random_id), else final `unconfirmed` with the reason — never sent blindly twice.

A send interrupted by a crash may have reached the vendor too. The claim flags the row as
attempted before sending; the next try of such a row repeats it when the sender is
idempotent, and otherwise — whoever wrote it — ends it `unconfirmed`: the transcript and
leadgate_messages_total{result="unconfirmed"} show it, and a person decides whether to
write again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from gateway.chat_metrics import ChatMetrics
from gateway.chat_settings import ConversationSettings
from gateway.chats import Chats
from gateway.conversations import (
    MessageStatus,
    MessageView,
    OutboundMessage,
    SendResult,
    SendStatus,
)
from gateway.delivery.worker import _bounded_wait, backoff
from gateway.redact import redact
from gateway.store.base import OutboxItem, OutboxKind, OutboxState, OutboxUpdate, Store
from gateway.supervisor import describe

log = logging.getLogger(__name__)

SINK = "messages"  # the name the outbox knows this worker's outcomes by
KINDS = (OutboxKind.MESSAGE_OUT,)


@dataclass(slots=True)
class Halt:
    since: datetime
    reason: str
    probe_at: datetime


class MessageWorker:
    def __init__(
        self,
        store: Store,
        chats: Chats,
        settings: ConversationSettings,
        metrics: ChatMetrics,
        *,
        owner: str,
        rng: Callable[[], float] = random.random,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.chats = chats
        self.settings = settings
        self.metrics = metrics
        self.owner = owner
        self._rng = rng
        self._now = now
        self._wake = asyncio.Event()
        self.halted: dict[tuple[str, str], Halt] = {}
        self._due: datetime | None = None  # the earliest retry this worker scheduled
        chats.on_queue(self.wake)

    def wake(self) -> None:
        self._wake.set()

    def problem(self) -> str | None:
        """For /readyz: accounts whose credentials were refused."""
        problems = [
            f"{channel}/{account}: credentials refused since {h.since:%Y-%m-%d %H:%M:%S} UTC"
            f" ({h.reason}); messages wait, next try {h.probe_at:%H:%M:%S} UTC"
            for (channel, account), h in sorted(self.halted.items())
        ]
        return "; ".join(problems) or None

    async def run(self) -> None:
        while True:
            try:
                pause = await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # the store hiccuped: keep going, slower
                log.exception("message worker cycle failed")
                pause = self.settings.poll_seconds
            if pause > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), pause)

    async def run_once(self) -> float:
        """One batch; returns how long to rest (0: more may be waiting now)."""
        stats = await self.store.outbox_stats(KINDS)
        self.metrics.messages_pending.set(stats.pending)
        s = self.settings
        items = await self.store.claim_outbox(
            self._now(),
            s.batch_size,
            owner=self.owner,
            lease_seconds=s.claim_lease_seconds,
            mark=True,
            kinds=KINDS,
        )
        if not items:
            return self._until_due()
        # Each conversation has at most one item here (the store's order rule): sending
        # them at once keeps one slow chat from holding up the others.
        updates = await asyncio.gather(*(self._one(item) for item in items))
        refused = await self.store.update_outbox(SINK, updates, self._now(), owner=self.owner)
        if refused:
            log.warning(
                "messages %s were taken over by another worker before their outcome was kept "
                "(raise conversations.claim_lease_seconds)",
                ", ".join(map(str, refused)),
            )
        for update in updates:
            due = update.next_attempt_at
            if due is not None and (self._due is None or due < self._due):
                self._due = due
        # A conversation gives out one message at a time: one that ended (sent or final)
        # may have freed the next (the parts of a long reply), so look again at once —
        # the vendor's pace is the sender's (rate buckets, retry_after), not the poll's.
        ended = any(u.state is not OutboxState.PENDING for u in updates)
        return 0.0 if ended or len(items) == s.batch_size else self._until_due()

    def _until_due(self) -> float:
        """Rest until the first retry we scheduled is due (a 429's retry_after of 1 s must
        not wait for the next poll), at most poll_seconds."""
        poll = self.settings.poll_seconds
        if self._due is None:
            return poll
        wait = (self._due - self._now()).total_seconds()
        if wait <= 0:
            self._due = None
            return 0.0
        return min(poll, wait)

    async def _one(self, item: OutboxItem) -> OutboxUpdate:
        view = await self.store.get_message(item.message_id) if item.message_id else None
        if view is None:
            return OutboxUpdate(item.id, OutboxState.DEAD, error="its message is not in the store")
        conversation, message = view.conversation, view.message
        channel, account = conversation.channel.value, conversation.account
        now = self._now()
        halt = self.halted.get((channel, account))
        if halt is not None and now < halt.probe_at:
            return self._wait(item, halt.probe_at, f"halted: {halt.reason}")
        sender = self.chats.senders.get(conversation.channel)
        if sender is None:
            error = f"no connector sends on {channel} now (is it configured?)"
            self.metrics.message(channel, account, "undeliverable")
            return OutboxUpdate(
                item.id,
                OutboxState.DEAD,
                error=error,
                message_status=MessageStatus.UNDELIVERABLE,
            )
        if item.attempted and not sender.idempotent:
            return self._unconfirmed(
                item,
                channel,
                account,
                "a send was interrupted (the gateway stopped) and may have reached the customer",
            )
        try:
            result = await sender.send(self._outbound(view, item))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning(
                "sending message %s on %s/%s failed: %s",
                message.id,
                channel,
                account,
                describe(exc),
            )
            result = SendResult(SendStatus.UNKNOWN, reason=describe(exc))
        return self._outcome(item, channel, account, result, idempotent=sender.idempotent)

    def _unconfirmed(self, item: OutboxItem, channel: str, account: str, why: str) -> OutboxUpdate:
        self.metrics.message(channel, account, "unconfirmed")
        return OutboxUpdate(
            item.id,
            OutboxState.CLOSED,
            error=f"{why}; {channel} cannot tell, so it is not sent again",
            message_status=MessageStatus.UNCONFIRMED,
        )

    def _outbound(self, view: MessageView, item: OutboxItem) -> OutboundMessage:
        conversation, message = view.conversation, view.message
        return OutboundMessage(
            message_id=message.id,
            channel=conversation.channel,
            account=conversation.account,
            chat=conversation.chat,
            text=message.text or "",
            author=message.author,
            ask_phone=message.ask_phone,
            locale=conversation.locale,
            last_inbound_at=conversation.last_inbound_at,
            attempted=item.attempted,
        )

    def _outcome(
        self,
        item: OutboxItem,
        channel: str,
        account: str,
        result: SendResult,
        *,
        idempotent: bool,
    ) -> OutboxUpdate:
        reason = redact(result.reason)[:500] if result.reason else None
        key = (channel, account)
        if result.status is SendStatus.UNKNOWN:
            if not idempotent:
                return self._unconfirmed(
                    item, channel, account, f"no answer after sending ({reason or 'unknown'})"
                )
            # The vendor drops a repeat itself: try again; the attempted flag stays set.
            return self._retry(
                item, channel, account, reason or "no answer", result.retry_after, reset=False
            )
        if result.status is SendStatus.SENT:
            if self.halted.pop(key, None) is not None:
                self.metrics.sending_halted.labels(channel, account).set(0)
                log.warning("sending on %s/%s resumed", channel, account)
            self.metrics.message(channel, account, "sent")
            return OutboxUpdate(
                item.id,
                OutboxState.DELIVERED,
                remote_id=result.external_id,
                message_status=MessageStatus.SENT,
            )
        if result.status is SendStatus.UNDELIVERABLE:
            self.metrics.message(channel, account, "undeliverable")
            return OutboxUpdate(
                item.id,
                OutboxState.CLOSED,
                error=reason or "undeliverable",
                attempted=False,
                message_status=MessageStatus.UNDELIVERABLE,
            )
        if result.status is SendStatus.HALT:
            now = self._now()
            probe = now + timedelta(seconds=self.settings.halt_probe_seconds)
            if key not in self.halted:
                log.error(
                    "sending on %s/%s STOPPED: credentials refused (%s); messages wait, "
                    "next try in %g s",
                    channel,
                    account,
                    reason,
                    self.settings.halt_probe_seconds,
                )
            self.halted[key] = Halt(
                self.halted[key].since if key in self.halted else now, reason or "refused", probe
            )
            self.metrics.sending_halted.labels(channel, account).set(1)
            self.metrics.message(channel, account, "halted")
            return self._wait(item, probe, f"halted: {reason}")
        # The vendor answered with a passing refusal: nothing went out.
        return self._retry(
            item, channel, account, reason or "retry", result.retry_after, reset=True
        )

    def _retry(
        self,
        item: OutboxItem,
        channel: str,
        account: str,
        error: str,
        retry_after: float | None,
        *,
        reset: bool,
    ) -> OutboxUpdate:
        s = self.settings
        # reset: this try certainly sent nothing, so the flag is what it was before the
        # claim set it (an earlier, interrupted try may still have sent something).
        attempted = item.attempted if reset else None
        if item.attempts + 1 >= s.max_attempts:
            self.metrics.message(channel, account, "undeliverable")
            return OutboxUpdate(
                item.id,
                OutboxState.DEAD,
                error=f"gave up after {item.attempts + 1} attempts: {error}",
                attempted=attempted,
                message_status=MessageStatus.UNDELIVERABLE,
            )
        self.metrics.message(channel, account, "retry")
        wait = backoff(
            item.attempts + 1, s.backoff_initial_seconds, s.backoff_max_seconds, self._rng
        )
        if retry_after is not None:
            wait = max(wait, _bounded_wait(retry_after))
        return OutboxUpdate(
            item.id,
            OutboxState.PENDING,
            error=error,
            next_attempt_at=self._now() + timedelta(seconds=wait),
            attempted=attempted,
            message_status=MessageStatus.RETRYING,
        )

    def _wait(self, item: OutboxItem, until: datetime, error: str) -> OutboxUpdate:
        """Put back without using an attempt (nothing was sent this time)."""
        return OutboxUpdate(
            item.id,
            OutboxState.PENDING,
            error=error,
            next_attempt_at=until,
            count_attempt=False,
            attempted=item.attempted,
        )
