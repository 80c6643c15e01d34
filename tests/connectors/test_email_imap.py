"""The mailbox against a real IMAP server (Dovecot, started by these tests) and a real SMTP
server (aiosmtpd): leads exactly once, nothing marked read, threads joined, auto-generated
mail kept aside, poison survived, kills and UIDVALIDITY changes survived, IDLE, TLS.

Dovecot must be installed (Debian's dovecot-imapd; .ci/run installs it): without it these
tests fail with that message, they never skip.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from conftest import make_settings
from imap_server import PASSWORD, Dovecot, SmtpSink, free_port, running_dovecot, running_smtp
from store_view import all_events, all_quarantine, read

from connectors.email.autoreply import describe_opening
from connectors.email.connector import EmailConnector
from connectors.email.imap import ImapSession
from connectors.email.position import Position
from gateway.channels import ConnectorContext
from gateway.config import ConfigError, Settings
from gateway.coordination import InProcessCoordination
from gateway.keys import METRICS, STORE
from gateway.metrics import Metrics
from gateway.models import Channel, Lead, Outcome
from gateway.pipeline import Accepted, Pipeline
from gateway.store.base import LeadQuery, StoredEvent
from gateway.store.sqlite import SQLiteStore, StoreUnavailable
from gateway.web import create_app, make_pipeline

FIXTURES = Path(__file__).parent / "fixtures" / "email"
DOMAIN = "stroymash-market.ru"
OUR_ADDRESS = f"sales@{DOMAIN}"
MOSCOW = ZoneInfo("Europe/Moscow")
CUSTOMER_MAIL = (
    "yandex_cp1251_qp.eml",
    "thebat_8bit_no_message_id.eml",
    "mailru_koi8r_base64.eml",
    "mailru_reply_html.eml",
    "thunderbird_reply_utf8.eml",
    "gmail_utf8_mixed.eml",
    "form_notification_reply_to.eml",
    "outlook_html_only_cp1251.eml",
    "outlook_reply_cp1251.eml",
)
OTHER_MAIL = {
    "auto_reply_vacation.eml": "not a customer: auto_submitted",
    "bounce_mailer_daemon.eml": "not a customer: delivery_report",
    "list_newsletter.eml": "not a customer: precedence",
    "own_address.eml": "not a customer: own_address",
    "poison_binary_garbage.eml": "malformed: MalformedMail: no message headers",
    "poison_nested_multipart.eml": "malformed: MalformedMail: MIME nesting deeper than 20",
}


# --- servers and helpers -------------------------------------------------------------------


@pytest.fixture(scope="module")
def dovecot() -> Iterator[Dovecot]:
    with running_dovecot() as server:
        yield server


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    with running_smtp() as sink:
        yield sink


@pytest.fixture
def user(request: pytest.FixtureRequest) -> str:
    """A mailbox of this test's own on the shared server."""
    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40]
    return f"{name}-{time.monotonic_ns() % 10**6}@{DOMAIN}"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def date_of(raw: bytes) -> datetime | None:
    m = re.search(rb"^Date: (.+?)\r?$", raw, re.MULTILINE)
    return parsedate_to_datetime(m.group(1).decode()) if m else None


def mailbox(dovecot: Dovecot, user: str, **overrides: Any) -> dict[str, Any]:
    return {
        "host": "127.0.0.1",
        "port": dovecot.port,
        "security": "plain",
        "username": user,
        "password": PASSWORD,
        "first_sync_days": None,
        "poll_seconds": 0.2,
        "backoff_max_seconds": 0.5,
        "timeout_seconds": 10,
        **overrides,
    }


def email_settings(box: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    return {"mailboxes": {"sales": box}, "own_addresses": [OUR_ADDRESS], **overrides}


def smtp_settings(sink: SmtpSink) -> dict[str, Any]:
    return {
        "host": "127.0.0.1",
        "port": sink.port,
        "security": "plain",
        "from_address": OUR_ADDRESS,
        "from_name": "СтройМаш Маркет",
    }


async def until(
    check: Callable[[], bool | Awaitable[bool]], what: str, within: float = 20.0
) -> None:
    deadline = time.monotonic() + within
    while True:
        done = check()
        if not isinstance(done, bool):
            done = await done
        if done:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def email_events(db: Path) -> list[StoredEvent]:
    """The stored email events, through the Store protocol (a client store on the file)."""
    return await read(db, lambda store: all_events(store, channel=Channel.EMAIL))


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


@dataclass
class Gateway:
    """The store, pipeline and email connector of one gateway process, without HTTP."""

    settings: Settings
    store: SQLiteStore
    pipeline: Pipeline
    metrics: Metrics
    connector: EmailConnector
    ctx: ConnectorContext
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def db(self) -> Path:
        return self.store.path

    def start(self) -> None:
        self.tasks = [asyncio.create_task(job.run()) for job in self.connector.tasks()]

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks = []

    async def close(self) -> None:
        await self.stop()
        await self.store.close()

    async def events(self) -> int:
        return len(await email_events(self.db))

    async def quarantined(self) -> int:
        return len(await read(self.db, lambda store: all_quarantine(store, "email")))

    async def has(
        self,
        events: int,
        quarantined: int | None = None,
        also: Callable[[Gateway], bool] | None = None,
    ) -> bool:
        return (
            await self.events() == events
            and (quarantined is None or await self.quarantined() == quarantined)
            and (also is None or also(self))
        )

    async def position(self, folder: str = "INBOX") -> Position | None:
        saved = await self.store.get_checkpoint(f"email:sales:{folder}")
        return Position.loads(saved) if saved else None

    async def leads(self) -> list[Lead]:
        found = await self.store.list_leads(LeadQuery(channel=Channel.EMAIL, limit=500))
        return [lead for x in found if (lead := await self.store.get_lead(x.id)) is not None]


GatewayFactory = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[GatewayFactory]:
    built: list[Gateway] = []

    async def build(email: dict[str, Any], *, start: bool = True, **kw: Any) -> Gateway:
        connector_kw = {k: kw.pop(k) for k in ("clock", "sender", "retry_delays") if k in kw}
        settings = make_settings(tmp_path, email=email, **kw)
        store = SQLiteStore(settings.store.path)
        await store.open()
        metrics = Metrics()
        pipeline = make_pipeline(settings, store, metrics)
        ctx = ConnectorContext(
            settings=settings,
            pipeline=pipeline,
            metrics=metrics,
            coordination=InProcessCoordination(),
        )
        connector = EmailConnector(ctx, settings.email, **connector_kw)
        gw = Gateway(settings, store, pipeline, metrics, connector, ctx)
        built.append(gw)
        if start:
            gw.start()
        return gw

    yield build
    for gw in built:
        await gw.stop()
        if gw.store._writer is not None:
            await gw.store.close()


# --- the whole mailbox, end to end through the app -----------------------------------------


async def test_mailbox_becomes_leads_exactly_once(
    dovecot: Dovecot, user: str, smtp: SmtpSink, aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    names = [*CUSTOMER_MAIL[:5], "poison_binary_garbage.eml", *CUSTOMER_MAIL[5:]]
    names += [n for n in OTHER_MAIL if n != "poison_binary_garbage.eml"]
    for name in names:
        raw = fixture(name)
        dovecot.deliver(user, raw, at=date_of(raw) or datetime(2026, 1, 13, 12, tzinfo=UTC))

    today = datetime.now(MOSCOW).date()
    settings = make_settings(
        tmp_path,
        email=email_settings(mailbox(dovecot, user), smtp=smtp_settings(smtp)),
        # A zero window: only the thread (In-Reply-To/References) can join a reply to its lead.
        dedup={"window_days": 0},
        # Today off, whatever the clock says: fresh mail below is after hours.
        calendar={"extra_holidays": {today.isoformat(): "Санитарный день"}},
    )
    client = await aiohttp_client(create_app(settings))
    app = client.server.app
    store = app[STORE]
    total = len(names)

    async def every_message_taken() -> bool:
        return len(await all_events(store)) + len(await all_quarantine(store)) == total

    await until(
        every_message_taken,
        "every message taken",
    )

    leads = await store.list_leads(LeadQuery(channel=Channel.EMAIL))
    full = {lead.id: await store.get_lead(lead.id) for lead in leads}
    assert len(leads) == 6  # six customers; three replies joined their threads
    by_email = {lead.contact.emails[0]: lead for lead in full.values() if lead}
    ivan = by_email["ivan.petrov@yandex.ru"]
    assert [e.outcome for e in ivan.events] == [Outcome.CREATED, Outcome.MERGED]
    assert ivan.events[1].matched_on == "reply"
    assert ivan.events[1].text is not None and "кабиной и отопителем" in ivan.events[1].text
    assert ivan.contact.phones == ("+79161234567",)
    assert ivan.after_hours  # Saturday 23:14
    volkova = by_email["snab@zavodmash.ru"]  # the reply came From another address
    assert [e.matched_on for e in volkova.events] == [None, "reply"]
    assert "volkova@zavodmash.ru" in volkova.contact.emails
    olga = by_email["o.smirnova@mail.ru"]
    assert len(olga.events) == 2
    assert ivan.events[0].occurred_at == datetime(
        2026, 1, 10, 20, 14, 57, tzinfo=UTC
    )  # INTERNALDATE
    assert (
        ivan.events[0].meta["folder"] == "INBOX" and ivan.events[0].source_detail == "sales/INBOX"
    )

    kept = await all_quarantine(store)
    assert sorted(q.reason for q in kept) == sorted(OTHER_MAIL.values())
    assert all(q.headers["mailbox"] == "sales" for q in kept)

    flags = dovecot.flags(user)
    assert len(flags) == total and not any(b"\\Seen" in f for f in flags.values())

    # Old mail gets no auto-reply: "we answer on Monday" about January would be wrong now.
    assert smtp.received == []

    # A new customer mail, after hours: taken at once (IDLE) and answered politely.
    fresh = (
        "From: =?UTF-8?B?0J/RkdGC0YAg0KHQuNC00L7RgNC+0LI=?= <petr.sidorov@inbox.ru>\r\n"
        f"To: {OUR_ADDRESS}\r\nSubject: =?UTF-8?B?0JDRgNC10L3QtNCwINC60YDQsNC90LA=?=\r\n"
        "Message-ID: <fresh-1@inbox.ru>\r\nReferences: <older-thread@inbox.ru>\r\n"
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        "Нужен кран на один день.\r\n"
    ).encode()
    dovecot.deliver(user, fresh)
    await until(lambda: len(smtp.received) == 1, "the auto-reply")
    reply = smtp.received[0]
    assert reply.recipients == ["petr.sidorov@inbox.ru"]
    msg = reply.message
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["In-Reply-To"] == "<fresh-1@inbox.ru>"
    assert msg["References"] == "<older-thread@inbox.ru> <fresh-1@inbox.ru>"
    subject = str(msg["Subject"])
    assert "Re:" in subject or "=?utf-8?" in subject.lower()
    body = msg.get_payload(decode=True).decode("utf-8")  # type: ignore[union-attr]
    lead = next(x for x in await store.list_leads(LeadQuery()) if x.contact.name == "Пётр Сидоров")
    assert lead.after_hours and lead.next_open_at is not None
    when = describe_opening(lead.next_open_at, datetime.now(UTC), MOSCOW)
    assert "Здравствуйте, Пётр Сидоров!" in body and f"ответит вам {when}." in body
    assert re.search(r"(в|во) \w+, \d+ \w+, после 10:00", when)

    # The same person again, a new thread: a second lead (zero window) but no second reply.
    again = fresh.replace(b"fresh-1@", b"fresh-2@").replace(b"References", b"X-R")
    dovecot.deliver(user, again, at=datetime.now(UTC) + timedelta(seconds=5))  # past the window

    async def second_taken() -> bool:
        return len(await all_events(store, external_id="fresh-2@inbox.ru")) == 1

    await until(second_taken, "the second mail")
    await until(
        lambda: sample(app[METRICS], "leadgate_email_auto_replies_total", result="limited") == 1,
        "the one-a-day limit",
    )
    assert len(smtp.received) == 1

    metrics = await client.get("/metrics")
    text = await metrics.text()
    assert 'leadgate_email_messages_total{mailbox="sales",outcome="created"} 8.0' in text
    assert 'leadgate_email_messages_total{mailbox="sales",outcome="merged"} 3.0' in text
    assert 'leadgate_email_skipped_total{mailbox="sales",reason="delivery_report"} 1.0' in text
    assert 'leadgate_email_skipped_total{mailbox="sales",reason="malformed"} 2.0' in text
    assert 'leadgate_email_last_fetch_timestamp_seconds{folder="INBOX",mailbox="sales"}' in text
    assert 'leadgate_email_auto_replies_total{result="sent"} 1.0' in text
    ready = await (await client.get("/readyz")).json()
    assert not any(p.startswith("email") for p in ready["problems"])


# --- exactly once through kills, cuts and restarts -----------------------------------------


def numbered(i: int) -> bytes:
    return (
        f"From: Клиент {i} <client{i}@example.ru>\r\nTo: {OUR_ADDRESS}\r\n"
        f"Subject: Заявка {i}\r\nMessage-ID: <bulk-{i}@example.ru>\r\n"
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        f"Нужна техника, заявка номер {i}.\r\n"
    ).encode()


async def assert_each_once(db: Path, n: int) -> None:
    ids = [e.record.external_id for e in await email_events(db)]
    assert sorted(ids) == sorted(f"bulk-{i}@example.ru" for i in range(n))


@pytest.mark.parametrize("kill_after", [10, 12], ids=["at-a-fetch", "mid-batch"])
async def test_kill_during_fetch_takes_nothing_twice_and_skips_nothing(
    dovecot: Dovecot, user: str, gateway: GatewayFactory, kill_after: int
) -> None:
    n = 30
    for i in range(n):
        dovecot.deliver(user, numbered(i))
    box = mailbox(dovecot, user, batch_size=5)
    first = await gateway(email_settings(box), start=False)
    original = first.pipeline.accept_detailed
    taken = 0
    reached = asyncio.Event()

    async def counting(event: Any, checkpoint: Any = None) -> Accepted:
        nonlocal taken
        result = await original(event, checkpoint)
        taken += 1
        if taken == kill_after:
            reached.set()
        return result

    first.pipeline.accept_detailed = counting  # type: ignore[method-assign]
    first.start()
    await asyncio.wait_for(reached.wait(), 20)
    await first.close()  # the process goes away mid-batch
    done_before = await first.events()
    assert kill_after <= done_before < n

    second = await gateway(email_settings(box))
    await until(lambda: second.has(n), "the rest of the mailbox")
    await asyncio.sleep(0.3)
    await assert_each_once(second.db, n)
    replayed = sample(
        second.metrics, "leadgate_email_messages_total", mailbox="sales", outcome="replayed"
    )
    assert replayed == 0  # the checkpoint, not the replay check, kept it exactly once
    position = await second.position()
    assert position is not None and position.last_uid == n


async def test_connection_cut_mid_batch_reconnects(
    dovecot: Dovecot, user: str, gateway: GatewayFactory
) -> None:
    n = 25
    for i in range(n):
        dovecot.deliver(user, numbered(i))
    gw = await gateway(email_settings(mailbox(dovecot, user, batch_size=4)), start=False)
    original = gw.pipeline.accept_detailed
    taken = 0

    async def cutting(event: Any, checkpoint: Any = None) -> Accepted:
        nonlocal taken
        result = await original(event, checkpoint)
        taken += 1
        if taken == 6:
            await asyncio.to_thread(dovecot.kick, user)  # the server drops us mid-batch
        return result

    gw.pipeline.accept_detailed = cutting  # type: ignore[method-assign]
    gw.start()
    await until(lambda: gw.has(n), "all mail after the reconnect")
    await assert_each_once(gw.db, n)
    assert (
        sample(gw.metrics, "leadgate_email_errors_total", mailbox="sales", kind="connection") >= 1
    )
    assert (
        sample(gw.metrics, "leadgate_email_messages_total", mailbox="sales", outcome="replayed")
        == 0
    )


async def test_restart_takes_only_new_mail(
    dovecot: Dovecot, user: str, gateway: GatewayFactory
) -> None:
    for i in range(3):
        dovecot.deliver(user, numbered(i))
    box = mailbox(dovecot, user)
    first = await gateway(email_settings(box))
    await until(lambda: first.has(3), "the first three")
    await first.close()
    dovecot.deliver(user, numbered(3))
    second = await gateway(email_settings(box))
    await until(lambda: second.has(4), "the new one")
    await asyncio.sleep(0.3)
    await assert_each_once(second.db, 4)
    assert (
        sample(second.metrics, "leadgate_email_messages_total", mailbox="sales", outcome="created")
        == 1
    )


async def test_uidvalidity_change_resyncs_and_dedupes_by_message_id(
    dovecot: Dovecot, user: str, gateway: GatewayFactory
) -> None:
    folder = "Заявки"  # not ASCII: modified UTF-7 on the wire
    for i in range(3):
        dovecot.deliver(user, numbered(i), folder=folder)
    no_id = fixture("thebat_8bit_no_message_id.eml")
    dovecot.deliver(user, no_id, folder=folder)
    gw = await gateway(email_settings(mailbox(dovecot, user, folders=[folder])))
    await until(lambda: gw.has(4), "the first read")
    before = await gw.position(folder)
    assert before is not None and before.last_uid == 4

    # The admin recreates the folder (a migration, a restore): the server drops the poller's
    # session, the folder gets a new UIDVALIDITY, and the same messages come back with new UIDs.
    new_validity = await asyncio.to_thread(dovecot.recreate, user, folder)
    assert new_validity != before.uidvalidity
    for i in range(3):
        dovecot.deliver(user, numbered(i), folder=folder)
    dovecot.deliver(user, no_id, folder=folder)  # no Message-ID: the derived id dedupes it
    dovecot.deliver(user, numbered(3), folder=folder)

    await until(lambda: gw.has(5), "the one new message after the resync")
    await until(
        lambda: (
            sample(gw.metrics, "leadgate_email_messages_total", mailbox="sales", outcome="replayed")
            == 4
        ),
        "the old four recognized",
    )
    after = await gw.position(folder)
    assert after is not None and after.uidvalidity == new_validity and after.last_uid == 5
    assert sample(gw.metrics, "leadgate_email_resyncs_total", mailbox="sales", folder=folder) == 1
    assert len(await gw.leads()) == 5


async def test_store_outage_retries_and_a_failing_message_is_kept_aside(
    dovecot: Dovecot, user: str, gateway: GatewayFactory
) -> None:
    for i in range(4):
        dovecot.deliver(user, numbered(i))
    gw = await gateway(email_settings(mailbox(dovecot, user)), start=False)
    original = gw.pipeline.accept_detailed
    calls: list[str] = []

    async def flaky(event: Any, checkpoint: Any = None) -> Accepted:
        calls.append(event.external_id)
        if event.external_id == "bulk-1@example.ru" and calls.count(event.external_id) == 1:
            raise StoreUnavailable("disk full")  # nothing stored: must be taken again later
        if event.external_id == "bulk-2@example.ru":
            raise ValueError("a bug somewhere in the pipeline")  # must not block the folder
        return await original(event, checkpoint)

    gw.pipeline.accept_detailed = flaky  # type: ignore[method-assign]
    gw.start()
    await until(lambda: gw.has(3, quarantined=1), "the folder to go on")
    ids = [e.record.external_id for e in await read(gw.db, all_events)]
    assert sorted(ids) == ["bulk-0@example.ru", "bulk-1@example.ru", "bulk-3@example.ru"]
    kept = await read(gw.db, all_quarantine)
    assert [q.reason for q in kept] == ["not accepted: ValueError"]
    assert sample(gw.metrics, "leadgate_email_errors_total", mailbox="sales", kind="store") == 1
    position = await gw.position()
    assert position is not None and position.last_uid == 4


# --- IDLE and polling ----------------------------------------------------------------------


def connected(gw: Gateway, folder: str = "INBOX") -> bool:
    return (
        sample(gw.metrics, "leadgate_email_connected", mailbox="sales", folder=folder) == 1
        and sample(
            gw.metrics,
            "leadgate_email_last_fetch_timestamp_seconds",
            mailbox="sales",
            folder=folder,
        )
        > 0
    )


async def test_idle_picks_up_new_mail_at_once(
    dovecot: Dovecot, user: str, gateway: GatewayFactory
) -> None:
    dovecot.deliver(user, numbered(0))
    gw = await gateway(email_settings(mailbox(dovecot, user, poll_seconds=600)))
    await until(lambda: gw.has(1, also=connected), "the first read")
    await asyncio.sleep(0.5)  # now in IDLE; polling would take ten minutes
    started = time.monotonic()
    dovecot.deliver(user, numbered(1))
    await until(lambda: gw.has(2), "IDLE to report the new mail", within=10)
    assert time.monotonic() - started < 5


async def test_mail_arriving_as_idle_starts_is_not_left_for_the_next_cycle(
    dovecot: Dovecot, user: str, gateway: GatewayFactory
) -> None:
    """The server may announce a new message (EXISTS) before it accepts IDLE: that news must
    be read, not left until the next IDLE cycle (up to idle_minutes, half an hour)."""
    gw = await gateway(email_settings(mailbox(dovecot, user, poll_seconds=600)), start=False)
    delivered: list[float] = []

    class RacingSession(ImapSession):
        def idle_start(self) -> bool:
            if not delivered:  # right after the first fetch, just before IDLE
                dovecot.deliver(user, numbered(0))
                delivered.append(time.monotonic())
                self._live().noop()  # the server now knows; its EXISTS rides on IDLE's answer
            return super().idle_start()

    for poller in gw.connector.pollers:
        poller.session_factory = RacingSession
    gw.start()
    await until(lambda: gw.has(1), "the mail that came as IDLE started", within=10)
    assert time.monotonic() - delivered[0] < 5


async def test_idle_is_reissued_and_keeps_working(
    dovecot: Dovecot, user: str, gateway: GatewayFactory
) -> None:
    gw = await gateway(email_settings(mailbox(dovecot, user, idle_minutes=0.01, poll_seconds=600)))
    await until(lambda: connected(gw), "the first read")
    first = sample(
        gw.metrics, "leadgate_email_last_fetch_timestamp_seconds", mailbox="sales", folder="INBOX"
    )
    await asyncio.sleep(2.5)  # several IDLE periods of 0.6 s, each ended and re-issued
    later = sample(
        gw.metrics, "leadgate_email_last_fetch_timestamp_seconds", mailbox="sales", folder="INBOX"
    )
    assert later > first  # a fetch between IDLEs proves the quiet connection alive
    dovecot.deliver(user, numbered(0))
    await until(lambda: gw.has(1), "mail after re-issued IDLEs")
    assert (
        sample(gw.metrics, "leadgate_email_errors_total", mailbox="sales", kind="connection") == 0
    )


def test_idle_must_be_reissued_before_29_minutes() -> None:
    box = {"host": "h", "username": "u", "password": "p", "idle_minutes": 30}
    with pytest.raises(ConfigError, match="idle_minutes"):
        make_settings(Path("/tmp"), email={"mailboxes": {"sales": box}})
    box = {"host": "h", "username": "u", "password": "p", "stale_minutes": 5}
    with pytest.raises(ConfigError, match="longer than one read cycle"):
        make_settings(Path("/tmp"), email={"mailboxes": {"sales": box}})


async def test_polling_when_idle_is_off(
    dovecot: Dovecot, user: str, gateway: GatewayFactory
) -> None:
    gw = await gateway(email_settings(mailbox(dovecot, user, idle=False, poll_seconds=0.2)))
    await until(lambda: connected(gw), "the first read")
    dovecot.deliver(user, numbered(0))
    await until(lambda: gw.has(1), "polling to find the mail", within=10)


# --- TLS, logins, readiness ----------------------------------------------------------------


@pytest.mark.parametrize("security", ["ssl", "starttls"])
async def test_tls_and_starttls(
    dovecot: Dovecot, user: str, gateway: GatewayFactory, security: str
) -> None:
    dovecot.deliver(user, numbered(0))
    port = dovecot.tls_port if security == "ssl" else dovecot.port
    box = mailbox(dovecot, user, security=security, port=port, ca_file=str(dovecot.ca_file))
    gw = await gateway(email_settings(box))
    await until(lambda: gw.has(1), f"a message over {security}")


async def test_untrusted_certificate_is_refused(
    dovecot: Dovecot, user: str, gateway: GatewayFactory
) -> None:
    dovecot.deliver(user, numbered(0))
    box = mailbox(dovecot, user, security="ssl", port=dovecot.tls_port)  # no ca_file
    gw = await gateway(email_settings(box))
    await until(
        lambda: (
            sample(gw.metrics, "leadgate_email_errors_total", mailbox="sales", kind="connection")
            >= 1
        ),
        "the refusal",
    )
    assert await gw.events() == 0
    poller = gw.connector.pollers[0]
    assert poller.last_error is not None and "CERTIFICATE_VERIFY_FAILED" in poller.last_error


async def test_wrong_password_degrades_readiness_and_never_logs_it(
    dovecot: Dovecot,
    user: str,
    gateway: GatewayFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = "wrong-secret-9d8c7b"
    now = [datetime(2026, 3, 2, 12, 0, tzinfo=UTC)]
    box = mailbox(dovecot, user, password=secret, stale_minutes=5, idle_minutes=1)
    gw = await gateway(email_settings(box), clock=lambda: now[0])
    await until(
        lambda: (
            sample(gw.metrics, "leadgate_email_errors_total", mailbox="sales", kind="login") >= 2
        ),
        "login attempts with backoff",
    )
    # Reported at once, not after stale_minutes: a refused login is a lost connection.
    problem = gw.connector.readiness()
    assert problem is not None
    assert problem.startswith("sales/INBOX not read yet (login refused")
    now[0] += timedelta(minutes=6)
    assert gw.connector.readiness() == problem
    assert secret not in caplog.text and secret not in problem
    assert "**********" in repr(gw.settings.email.mailboxes["sales"].password)


async def test_readyz_degrades_through_the_app(
    dovecot: Dovecot, user: str, aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    box = mailbox(
        dovecot,
        user,
        folders=["Нет такой папки"],
        idle=False,
        poll_seconds=0.05,
        stale_minutes=0.01,
    )
    app = create_app(make_settings(tmp_path, email=email_settings(box)))
    client = await aiohttp_client(app)
    metrics = app[METRICS]
    await until(
        lambda: sample(metrics, "leadgate_email_errors_total", mailbox="sales", kind="folder") >= 1,
        "the folder to be found missing",
    )
    await asyncio.sleep(0.7)  # stale_minutes: 0.6 s
    resp = await client.get("/readyz")
    body = await resp.json()
    assert resp.status == 200 and body["status"] == "degraded"  # leads still accepted
    (problem,) = [p for p in body["problems"] if p.startswith("email:")]
    assert "sales/Нет такой папки not read yet" in problem and "does not exist" in problem


# --- what is taken ---------------------------------------------------------------------------


async def test_first_sync_takes_only_recent_mail(
    dovecot: Dovecot, user: str, gateway: GatewayFactory
) -> None:
    old = fixture("yandex_cp1251_qp.eml")
    dovecot.deliver(user, old, at=date_of(old))  # January: years of history stay untouched
    dovecot.deliver(user, numbered(0))  # today
    gw = await gateway(email_settings(mailbox(dovecot, user, first_sync_days=3)))
    await until(lambda: gw.has(1), "the recent one")
    await asyncio.sleep(0.3)
    await assert_each_once(gw.db, 1)
    position = await gw.position()
    assert position is not None and position.last_uid == 2 and not position.catching_up
    dovecot.deliver(user, old)  # an old message arriving now is new mail: taken
    await until(lambda: gw.has(2), "new mail after the first sync")


async def test_oversize_mail_becomes_a_lead_from_its_headers(
    dovecot: Dovecot, user: str, gateway: GatewayFactory
) -> None:
    dovecot.deliver(user, fixture("gmail_utf8_mixed.eml"))
    gw = await gateway(email_settings(mailbox(dovecot, user, max_message_mb=0.002)))
    await until(lambda: gw.has(1), "the big one")
    (lead,) = await gw.leads()
    (event,) = lead.events
    assert event.meta["oversize"] is True
    assert lead.contact.name == "Андрей Кузнецов"
    assert event.text is not None and event.text.startswith("Тема: Счёт на Bobcat S70")
    assert "слишком большое" in event.text


# --- a real process, killed -----------------------------------------------------------------


def _serve(config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "LEADGATE_EMAIL__MAILBOXES__SALES__PASSWORD": PASSWORD}
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "-c", str(config)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


@pytest.mark.slow
async def test_sigkill_of_the_server_mid_mailbox(
    dovecot: Dovecot, user: str, tmp_path: Path
) -> None:
    """`leadgate serve` reading a mailbox is killed with SIGKILL twice while it takes mail;
    after the restarts every message is exactly one event, and none was marked read.
    The mailbox is large enough that a busy machine's slow polling of the store still
    lands both kills mid-mailbox."""
    n = 300
    for i in range(n):
        dovecot.deliver(user, numbered(i))
    db = tmp_path / "leadgate.db"
    config = tmp_path / "leadgate.toml"
    config.write_text(
        f'[server]\nport = {free_port()}\n[store]\npath = "{db}"\n'
        f'[email.mailboxes.sales]\nhost = "127.0.0.1"\nport = {dovecot.port}\n'
        f'security = "plain"\nusername = "{user}"\nbatch_size = 7\nfirst_sync_days = 3650\n'
    )
    log = tmp_path / "serve.log"

    async def taken() -> int:
        try:
            return len(await read(db, all_events))
        except StoreUnavailable:  # no file yet, or the server has not made its tables
            return 0

    async def taken_at_least(count: int) -> bool:
        return await taken() >= count

    async def taken_all() -> bool:
        return await taken() == n

    for kill_at in (15, 45):
        proc = _serve(config, log)
        try:
            await until(lambda k=kill_at: taken_at_least(k), f"{kill_at} messages", within=60)
        finally:
            proc.kill()  # SIGKILL: no cleanup of any kind
            proc.wait()
        assert await taken() < n, "too fast to be killed mid-mailbox; raise n"
    proc = _serve(config, log)
    try:
        await until(taken_all, "the whole mailbox after two kills", within=180)
        await asyncio.sleep(0.5)
    finally:
        proc.terminate()
        proc.wait(30)
    await assert_each_once(db, n)
    assert not any(b"\\Seen" in f for f in dovecot.flags(user).values())
    assert "Traceback" not in log.read_text(errors="replace")


async def test_robot_mail_with_an_unstorable_header_does_not_block_the_folder(
    dovecot: Dovecot, user: str, gateway: GatewayFactory
) -> None:
    """Found in review: a lone surrogate decoded from a raw 8-bit Subject could not be
    stored, so the robot mail was retried forever and the customer behind it never read."""
    at = datetime(2026, 1, 13, 12, tzinfo=UTC)
    poison = (
        b"From: Robot <robot@example.ru>\r\nTo: sales@stroymash-market.ru\r\n"
        b"Message-ID: <s1@x>\r\nDate: Tue, 13 Jan 2026 12:00:00 +0300\r\n"
        b"Auto-Submitted: auto-replied\r\n"
        b"Subject: =?utf-8?q?Re?= \\udc80 x\r\n\r\nbody\r\n"
    )
    dovecot.deliver(user, poison, at=at)
    dovecot.deliver(user, fixture("gmail_utf8_mixed.eml"), at=at)
    gw = await gateway(email_settings(mailbox(dovecot, user)))
    await until(lambda: gw.has(1, quarantined=1), "both messages taken")
    position = await gw.position()
    assert position is not None and position.last_uid == 2
