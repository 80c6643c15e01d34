"""The polite answer to a new email lead: "we got it, a manager answers you on Monday".

RFC 3834 etiquette: only new customer leads are answered (never auto-generated mail, lists,
bounces, our own addresses, robots' no-reply addresses, replies on an existing lead or
spam); the answer carries `Auto-Submitted: auto-replied`, In-Reply-To and References; at
most one answer per sender per calendar day (business time zone). That limit is durable:
it lives in the store as a checkpoint per sender (a hash of the address, not the address),
written through the store's commit queue like everything else. The check-then-send is
guarded by a set-if-absent memo in Coordination (the sender and the day as its key), so
two replicas — or two jobs in one — never both send; the checkpoint stays, because the
embedded coordination forgets on restart and the limit must not.

Sending is best-effort and off the poller's path: a queue and a worker, a few retries,
then the reply is given up and counted. The event itself is already safely stored.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, make_msgid
from typing import Protocol
from zoneinfo import ZoneInfo

import aiosmtplib
from babel.dates import format_date, format_time
from babel.dates import format_datetime as babel_datetime

from connectors.email.imap import tls_context
from connectors.email.message import Mail
from connectors.email.metrics import EmailMetrics
from connectors.email.settings import AutoReplySettings, SmtpSettings
from gateway.coordination import Coordination
from gateway.identity import mask_email
from gateway.models import Outcome
from gateway.pipeline import Accepted

log = logging.getLogger(__name__)

_RU_WEEKDAY_AT = (
    "в понедельник", "во вторник", "в среду", "в четверг", "в пятницу", "в субботу",
    "в воскресенье",
)  # fmt: skip
_REPLY_PREFIX = re.compile(r"^\s*(re|ответ|отв|aw|sv)\s*(\[\d+\])?\s*:", re.IGNORECASE)
_ROBOT = re.compile(r"(no-?reply|do-?not-?reply|mailer-daemon|postmaster|bounce)", re.IGNORECASE)
QUEUE_LIMIT = 1000
RETRY_DELAYS = (1.0, 5.0, 30.0)
# The memo outlives its day in every time zone; the day is in its key, so it never
# blocks tomorrow's reply.
MEMO_TTL = 36 * 3600.0

Clock = Callable[[], datetime]
Sender = Callable[[EmailMessage], Awaitable[object]]


def describe_opening(at: datetime, now: datetime, tz: ZoneInfo, locale: str = "ru") -> str:
    """When we answer, as a person says it: «в понедельник, 12 января, после 10:00»."""
    local = at.astimezone(tz)
    today = now.astimezone(tz).date()
    clock = format_time(local, "HH:mm", locale=locale)
    if not locale.startswith("ru"):
        return babel_datetime(local, "EEEE, d MMMM, HH:mm", locale=locale)
    if local.date() == today:
        return f"сегодня после {clock}"
    pattern = "d MMMM" if local.year == today.year else "d MMMM y 'г.'"
    day = format_date(local, pattern, locale=locale)
    return f"{_RU_WEEKDAY_AT[local.weekday()]}, {day}, после {clock}"


def limit_key(address: str) -> str:
    """The store checkpoint holding the day of the last reply to this sender."""
    return "email.autoreply:" + hashlib.sha256(address.encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class ReplyJob:
    to_address: str
    to_name: str | None
    subject: str
    message_id: str | None  # None when the original had none (a derived id is no thread)
    references: tuple[str, ...]  # the original's References, oldest first
    after_hours: bool
    next_open_at: datetime | None


def wants_reply(
    mail: Mail,
    accepted: Accepted,
    rules: AutoReplySettings,
    own_addresses: frozenset[str],
    *,
    junk: bool,
    arrived_at: datetime | None,
    now: datetime,
) -> ReplyJob | None:
    """The reply this mail deserves, or None. Pure: every rule is here."""
    if rules.when == "never" or mail.not_customer is not None or junk:
        return None
    if accepted.receipt.outcome is not Outcome.CREATED:
        return None  # a reply on an existing lead, a replay, a kept event: no new lead
    cls = accepted.classification
    if rules.when == "after_hours" and not cls.after_hours:
        return None
    if cls.after_hours and (cls.next_open_at is None or cls.next_open_at <= now):
        return None  # caught up on old mail: "we answer on Monday" would be wrong by now
    if arrived_at is not None and now - arrived_at > timedelta(hours=rules.max_age_hours):
        return None
    person = mail.answer_to
    address = person.address
    if address is None or address in own_addresses or _ROBOT.search(address.split("@")[0]):
        return None
    return ReplyJob(
        to_address=address,
        to_name=mail.person_name,
        subject=mail.subject,
        message_id=None if mail.message_id_derived else mail.message_id,
        references=mail.references,
        after_hours=cls.after_hours,
        next_open_at=cls.next_open_at,
    )


def compose(
    job: ReplyJob, smtp: SmtpSettings, rules: AutoReplySettings, tz: ZoneInfo, now: datetime
) -> EmailMessage:
    name = job.to_name or ""
    greeting = rules.greeting_named.format(name=name) if name else rules.greeting
    if job.after_hours and job.next_open_at is not None:
        when = describe_opening(job.next_open_at, now, tz, rules.locale)
        template = rules.after_hours_text
    else:
        when = "в ближайшее время"
        template = rules.working_hours_text
    text = template.format(greeting=greeting, name=name, when=when, subject=job.subject)
    if rules.signature:
        text += "\n\n-- \n" + rules.signature
    subject = job.subject.strip() or rules.default_subject
    if not _REPLY_PREFIX.match(subject):
        subject = rules.subject_prefix + subject
    msg = EmailMessage()
    msg["From"] = formataddr((smtp.from_name or "", smtp.from_address))
    msg["To"] = formataddr((job.to_name or "", job.to_address))
    msg["Subject"] = subject
    msg["Date"] = format_datetime(now.astimezone(UTC))
    msg["Message-ID"] = make_msgid(domain=smtp.from_address.split("@")[1])
    if job.message_id is not None:
        msg["In-Reply-To"] = f"<{job.message_id}>"
        chain = [*job.references, job.message_id][-20:]
        msg["References"] = " ".join(f"<{i}>" for i in chain)
    msg["Auto-Submitted"] = "auto-replied"
    # Exchange/Outlook: do not answer this with an out-of-office of their own.
    msg["X-Auto-Response-Suppress"] = "All"
    msg.set_content(text)
    return msg


def smtp_sender(smtp: SmtpSettings) -> Sender:
    context = tls_context(str(smtp.ca_file) if smtp.ca_file else None)

    async def send(message: EmailMessage) -> object:
        return await aiosmtplib.send(
            message,
            hostname=smtp.host,
            port=smtp.effective_port,
            username=smtp.username,
            password=smtp.password.get_secret_value() if smtp.password else None,
            use_tls=smtp.security == "ssl",
            start_tls=smtp.security == "starttls",
            tls_context=context if smtp.security != "plain" else None,
            timeout=smtp.timeout_seconds,
        )

    return send


class Checkpoints(Protocol):
    """Where the one-a-day limit is kept: the pipeline (or, in tests, a store)."""

    async def get_checkpoint(self, name: str) -> str | None: ...

    async def save_checkpoint(self, name: str, value: str) -> None: ...


class AutoReplier:
    def __init__(
        self,
        *,
        smtp: SmtpSettings,
        rules: AutoReplySettings,
        tz: ZoneInfo,
        checkpoints: Checkpoints,
        coordination: Coordination,
        metrics: EmailMetrics,
        clock: Clock,
        sender: Sender | None = None,
        retry_delays: tuple[float, ...] = RETRY_DELAYS,
    ) -> None:
        self.smtp = smtp
        self.rules = rules
        self.tz = tz
        self.checkpoints = checkpoints
        self.coordination = coordination
        self.metrics = metrics
        self.clock = clock
        self.sender = sender or smtp_sender(smtp)
        self.retry_delays = retry_delays
        self.queue: asyncio.Queue[ReplyJob] = asyncio.Queue(QUEUE_LIMIT)

    def submit(self, job: ReplyJob) -> None:
        try:
            self.queue.put_nowait(job)
        except asyncio.QueueFull:
            self.metrics.auto_replies.labels("dropped").inc()
            log.warning("auto-reply queue full; no reply to %s", mask_email(job.to_address))

    async def run(self) -> None:
        while True:
            job = await self.queue.get()
            try:
                await self.reply(job)
            except asyncio.CancelledError:
                raise
            except Exception:
                self.metrics.auto_replies.labels("failed").inc()
                log.exception("auto-reply to %s failed", mask_email(job.to_address))

    async def reply(self, job: ReplyJob) -> bool:
        """Send one reply unless this sender already had one today; True when sent."""
        now = self.clock()
        today = now.astimezone(self.tz).date().isoformat()
        key = limit_key(job.to_address)
        memo = f"autoreply:{key}:{today}"
        coordination = self.coordination
        if await self.checkpoints.get_checkpoint(key) == today or not (
            await coordination.set_if_absent(memo, coordination.owner, MEMO_TTL)
        ):
            self.metrics.auto_replies.labels("limited").inc()
            log.info("auto-reply to %s skipped: one a day", mask_email(job.to_address))
            return False
        try:
            sent = await self._send(job, now)
        except Exception:
            await coordination.delete(memo)  # not sent: a later mail may try again today
            raise
        if not sent:
            await coordination.delete(memo)
            return False
        await self.checkpoints.save_checkpoint(key, today)
        self.metrics.auto_replies.labels("sent").inc()
        log.info("auto-reply sent to %s", mask_email(job.to_address))
        return True

    async def _send(self, job: ReplyJob, now: datetime) -> bool:
        message = compose(job, self.smtp, self.rules, self.tz, now)
        for attempt, delay in enumerate((*self.retry_delays, None)):
            try:
                await self.sender(message)
                return True
            except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                if delay is None:
                    self.metrics.auto_replies.labels("failed").inc()
                    log.warning(
                        "auto-reply to %s not sent after %d attempts: %s",
                        mask_email(job.to_address),
                        attempt + 1,
                        type(exc).__name__,
                    )
                    return False
                await asyncio.sleep(delay)
        return False
