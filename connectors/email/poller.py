"""Reads one folder of one mailbox forever: exactly once, never marking mail as read.

Exactly once: the folder's position (UIDVALIDITY, last UID) is a checkpoint saved in the
same transaction as the event each message produced (or as its quarantine row), so a crash
at any point either took the message with its position or neither. Messages are fetched
with BODY.PEEK[] on a folder opened read-only (EXAMINE). When UIDVALIDITY changes the
folder is read again from shortly before the last message taken; the store's replay check
on (email, Message-ID) makes what was already taken a no-op.

A first read (or a resync) is a "catch-up": the UIDs that existed at that moment, limited
to mail that arrived since a date, are taken first and the catch-up bounds are part of the
checkpoint, so a restart in the middle goes on with the same bounds. After that, new mail
is UID last+1:*.

Faults: a message that cannot be read goes to quarantine raw and the folder goes on; a
lost connection backs off (exponentially, with jitter) and reconnects; a store that cannot
commit stops the folder the same way, without moving its position.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import date, datetime, timedelta
from typing import Any, TypeVar

from connectors.email.autoreply import AutoReplier, wants_reply
from connectors.email.event import Origin, mail_to_event
from connectors.email.imap import (
    CONNECTION_ERRORS,
    Envelope,
    FolderMissing,
    ImapSession,
    LoginError,
)
from connectors.email.message import Mail, parse_mail
from connectors.email.metrics import EmailMetrics
from connectors.email.position import RESYNC_MARGIN, Backoff, Position
from connectors.email.settings import MailboxSettings
from connectors.email.worker import SerialWorker
from gateway.i18n import N_
from gateway.identity import mask_email, mask_text
from gateway.models import LeadEvent
from gateway.pipeline import Pipeline
from gateway.store.base import StoreUnavailable
from gateway.texts import Text

log = logging.getLogger(__name__)

T = TypeVar("T")
CHANNEL = "email"
FETCH_BYTES = 8 * 1024 * 1024  # bodies fetched in one round trip, at most
QUARANTINE_BYTES = 512 * 1024  # of auto-generated mail, kept for a look, not in full
IDLE_SLICE = 10.0

Clock = Callable[[], datetime]


class FolderPoller:
    def __init__(
        self,
        *,
        mailbox: str,
        settings: MailboxSettings,
        folder: str,
        pipeline: Pipeline,
        metrics: EmailMetrics,
        own_addresses: frozenset[str],
        region: str,
        clock: Clock,
        replier: AutoReplier | None = None,
        session_factory: Callable[[MailboxSettings, str], ImapSession] = ImapSession,
    ) -> None:
        self.mailbox = mailbox
        self.settings = settings
        self.folder = folder
        self.pipeline = pipeline
        self.metrics = metrics
        self.own = own_addresses
        self.region = region
        self.clock = clock
        self.replier = replier
        self.session_factory = session_factory
        self.checkpoint_name = f"email:{mailbox}:{folder}"
        self.label = f"{mailbox}/{folder}"
        self.started_at = clock()
        self.last_success: datetime | None = None
        self.last_error: str | None = None
        # Since when the folder has been without a working connection (None: it has one, or
        # has not tried yet): set by the first fault, cleared by the next good read.
        self.down_since: datetime | None = None
        self.connected = False
        self._executor: SerialWorker | None = None
        self._session: ImapSession | None = None
        self._backoff = Backoff(
            min(1.0, settings.backoff_max_seconds), settings.backoff_max_seconds
        )

    # --- what ops see --------------------------------------------------------------------

    def problem(self) -> str | None:
        """For /readyz: None while the folder is connected and read often enough.

        A lost connection is reported at once (it shows until the next good read), not
        after `stale_minutes`: that limit is for a connection that hangs without failing.
        """
        if self.down_since is not None:
            if self.last_success is None:
                return Text(N_("{box}: ещё не прочитан ({error})"), box=self.label,
                            error=self.last_error or "")  # fmt: skip
            return Text(
                N_("{box}: нет соединения с {since} ({error})"),
                box=self.label,
                since=self.down_since,
                error=self.last_error or "",
            )
        since = self.last_success or self.started_at
        idle = self.clock() - since
        if idle <= timedelta(minutes=self.settings.stale_minutes):
            return None
        if self.last_success is None:
            return Text(N_("{box}: ещё не прочитан"), box=self.label)
        minutes = int(idle.total_seconds() // 60)
        return Text(N_("{box}: не читался {minutes} мин"), box=self.label, minutes=minutes)

    def status(self) -> Text:
        """One line for the /ops page."""
        if self.connected and self.last_success is not None:
            return Text(N_("подключён; прочитан {at}"), at=self.last_success)
        if self.down_since is not None:
            return Text(
                N_("нет соединения с {since}: {error}"),
                since=self.down_since,
                error=self.last_error or "",
            )
        if self.connected:
            return Text(N_("подключён, читает"))
        return Text(N_("подключается"))

    # --- the loop ------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            try:
                await self._connected_loop()
            except asyncio.CancelledError:
                raise
            except StoreUnavailable as exc:
                self._fault("store", f"store unavailable: {exc}")
            except FolderMissing as exc:
                self._fault("folder", str(exc))
            except LoginError as exc:
                self._fault("login", f"login refused: {exc}")
            except CONNECTION_ERRORS as exc:
                self._fault("connection", f"{type(exc).__name__}: {exc}")
            except Exception as exc:
                log.exception("mailbox %s: unexpected error", self.label)
                self._fault("internal", type(exc).__name__)
            finally:
                self._disconnect()
            await asyncio.sleep(self._backoff.next())

    def _fault(self, kind: str, detail: str) -> None:
        self.last_error = mask_text(detail)[:300]
        if self.down_since is None:
            self.down_since = self.clock()
        self.metrics.errors.labels(self.mailbox, kind).inc()
        log.warning("mailbox %s: %s; reconnecting", self.label, self.last_error)

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        assert self._executor is not None
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args))

    def _disconnect(self) -> None:
        self.connected = False
        self.metrics.connected.labels(self.mailbox, self.folder).set(0)
        session, executor = self._session, self._executor
        self._session = self._executor = None
        if session is not None:
            session.abort()  # unblocks a read in progress on the worker thread
            if executor is not None:
                executor.submit(session.close)
        if executor is not None:
            executor.shutdown(wait=False)

    async def _connected_loop(self) -> None:
        self._executor = SerialWorker(f"imap-{self.label}")
        session = self._session = self.session_factory(self.settings, self.folder)
        state = await self._call(session.connect)
        self.metrics.connected.labels(self.mailbox, self.folder).set(1)
        self.connected = True
        pos = await self._start_position(session, state.uidvalidity, state.uidnext)
        use_idle = self.settings.idle and await self._call(lambda: session.has_idle)
        log.info("mailbox %s: connected (%s)", self.label, "IDLE" if use_idle else "polling")
        while True:
            pos = await self._take_new(session, pos)
            self._succeeded()
            if use_idle:
                await self._idle(session)
            else:
                await asyncio.sleep(self.settings.poll_seconds)
                await self._call(session.noop)

    def _succeeded(self) -> None:
        self.last_success = self.clock()
        self.last_error = None
        self.down_since = None
        self._backoff.reset()
        self.metrics.last_fetch.labels(self.mailbox, self.folder).set(self.last_success.timestamp())

    async def _idle(self, session: ImapSession) -> None:
        changed = await self._call(session.idle_start)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.idle_minutes * 60
        while not changed and (left := deadline - loop.time()) > 0:
            changed = await self._call(session.idle_wait, min(IDLE_SLICE, left))
        await self._call(session.idle_end)

    # --- positions -----------------------------------------------------------------------

    def _catchup_since(self, last_date: datetime | None) -> date | None:
        if last_date is not None:
            return (last_date - RESYNC_MARGIN).date()
        days = self.settings.first_sync_days
        if days is None:
            return None
        return (self.clock() - timedelta(days=days)).date()

    async def _start_position(
        self, session: ImapSession, uidvalidity: int, uidnext: int | None
    ) -> Position:
        saved = await self.pipeline.get_checkpoint(self.checkpoint_name)
        old = Position.loads(saved) if saved else None
        if old is not None and old.uidvalidity == uidvalidity:
            return old
        top = uidnext - 1 if uidnext is not None else await self._call(session.highest_uid)
        pos = Position(
            uidvalidity=uidvalidity,
            last_uid=0,
            last_date=old.last_date if old else None,
            catchup_since=self._catchup_since(old.last_date if old else None),
            catchup_until=top,
        )
        if old is not None:
            self.metrics.resyncs.labels(self.mailbox, self.folder).inc()
            log.warning(
                "mailbox %s: UIDVALIDITY changed (%d -> %d); reading again mail since %s,"
                " already taken messages are recognized by Message-ID",
                self.label,
                old.uidvalidity,
                uidvalidity,
                pos.catchup_since,
            )
        await self.pipeline.save_checkpoint(self.checkpoint_name, pos.dumps())
        return pos

    # --- taking messages -----------------------------------------------------------------

    async def _take_new(self, session: ImapSession, pos: Position) -> Position:
        while True:
            if pos.catching_up:
                uids = await self._call(
                    session.uids_after, pos.last_uid, pos.catchup_until, pos.catchup_since
                )
                if not uids:  # the rest of the catch-up range is older than the window
                    assert pos.catchup_until is not None
                    pos = replace(pos, last_uid=pos.catchup_until)
                    await self.pipeline.save_checkpoint(self.checkpoint_name, pos.dumps())
                    continue
            else:
                uids = await self._call(session.uids_after, pos.last_uid)
                if not uids:
                    return pos
            for start in range(0, len(uids), self.settings.batch_size):
                pos = await self._take_batch(
                    session, pos, uids[start : start + self.settings.batch_size]
                )

    async def _take_batch(self, session: ImapSession, pos: Position, uids: list[int]) -> Position:
        envelopes = await self._call(session.envelopes, uids)
        limit = int(self.settings.max_message_mb * 1024 * 1024)
        pending = [envelopes[u] for u in uids if u in envelopes]
        while pending:
            group: list[Envelope] = []
            total = 0
            while pending and (not group or total + pending[0].size <= FETCH_BYTES):
                env = pending.pop(0)
                group.append(env)
                total += env.size if env.size <= limit else 0
            small = [e.uid for e in group if e.size <= limit]
            bodies = await self._call(session.bodies, small)
            for env in group:
                oversize = env.size > limit
                if oversize:
                    raw = (await self._call(session.headers, [env.uid])).get(env.uid)
                else:
                    raw = bodies.get(env.uid)
                if raw is None:
                    continue  # expunged between the search and the fetch
                pos = await self._take_one(pos, env, raw, oversize)
        if pos.last_uid < uids[-1]:
            # The last ones vanished (expunged) or the server sent no body for them: move
            # on, or the same search would find them again forever.
            missing = [u for u in uids if u > pos.last_uid]
            self.metrics.skipped.labels(self.mailbox, "vanished").inc(len(missing))
            log.warning("mailbox %s: no body for UIDs %s; skipped", self.label, missing)
            pos = replace(pos, last_uid=uids[-1])
            await self.pipeline.save_checkpoint(self.checkpoint_name, pos.dumps())
        return pos

    async def _take_one(self, pos: Position, env: Envelope, raw: bytes, oversize: bool) -> Position:
        after = replace(pos, last_uid=env.uid, last_date=env.arrived_at or pos.last_date)
        checkpoint = (self.checkpoint_name, after.dumps())
        where = {"mailbox": self.mailbox, "folder": self.folder, "uid": str(env.uid)}
        now = self.clock()
        origin = Origin(self.mailbox, self.folder, pos.uidvalidity, env.uid)

        def parse() -> tuple[Mail, LeadEvent | None]:
            mail = parse_mail(raw, self.own)
            if mail.not_customer is not None:
                return mail, None
            event = mail_to_event(
                mail,
                origin,
                arrived_at=env.arrived_at,
                received_at=now,
                region=self.region,
                size=env.size,
                oversize=oversize,
            )
            return mail, event

        try:
            # Off the loop: a big HTML mail takes seconds to parse, and every channel's
            # requests would wait for it.
            mail, event = await asyncio.to_thread(parse)
        except Exception as exc:  # whatever the message does to the parser, the folder goes on
            reason = f"malformed: {type(exc).__name__}: {exc}"[:200]
            await self.pipeline.quarantine(CHANNEL, reason, raw, where, checkpoint=checkpoint)
            self.metrics.skipped.labels(self.mailbox, "malformed").inc()
            self.metrics.errors.labels(self.mailbox, "malformed").inc()
            log.warning("mailbox %s uid %d: unreadable, kept in quarantine (%s)",
                        self.label, env.uid, type(exc).__name__)  # fmt: skip
            return after
        if event is None:
            assert mail.not_customer is not None
            try:
                await self._keep(mail, raw, where, checkpoint)
            except (StoreUnavailable, asyncio.CancelledError):
                raise
            except Exception:  # its headers would not store: keep it by location alone
                log.exception("mailbox %s uid %d: keeping it failed", self.label, env.uid)
                reason = f"not a customer: {mail.not_customer}"
                await self.pipeline.quarantine(CHANNEL, reason, raw, where, checkpoint=checkpoint)
            return after
        try:
            accepted = await self.pipeline.accept_detailed(event, checkpoint=checkpoint)
        except (StoreUnavailable, asyncio.CancelledError):
            raise
        except Exception as exc:  # a bug or a value the store refuses: never block the folder
            log.exception("mailbox %s uid %d: could not accept", self.label, env.uid)
            reason = f"not accepted: {type(exc).__name__}"
            await self.pipeline.quarantine(CHANNEL, reason, raw, where, checkpoint=checkpoint)
            self.metrics.skipped.labels(self.mailbox, "not_accepted").inc()
            self.metrics.errors.labels(self.mailbox, "internal").inc()
            return after
        outcome = accepted.receipt.outcome.value
        self.metrics.taken.labels(self.mailbox, outcome).inc()
        log.info("mailbox %s uid %d: %s lead %s from %s", self.label, env.uid, outcome,
                 accepted.receipt.lead_id, mask_email(mail.answer_to.address or ""))  # fmt: skip
        if self.replier is not None:
            job = wants_reply(
                mail,
                accepted,
                self.replier.rules,
                self.own,
                junk=self.pipeline.spam_reason(event) is not None,
                arrived_at=env.arrived_at,
                now=now,
            )
            if job is not None:
                self.replier.submit(job)
        return after

    async def _keep(
        self, mail: Mail, raw: bytes, where: dict[str, str], checkpoint: tuple[str, str]
    ) -> None:
        reason = mail.not_customer or "unknown"
        headers = {**where, **mail.headers}
        body = raw
        if len(raw) > QUARANTINE_BYTES:
            body = raw[:QUARANTINE_BYTES]
            headers["truncated_from_bytes"] = str(len(raw))
        await self.pipeline.quarantine(
            CHANNEL, f"not a customer: {reason}", body, headers, checkpoint=checkpoint
        )
        self.metrics.skipped.labels(self.mailbox, reason).inc()
        log.info("mailbox %s: %s from %s kept for inspection, no lead", self.label, reason,
                 mask_email(mail.sender.address or ""))  # fmt: skip
