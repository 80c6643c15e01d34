"""The auto-reply: when we answer, RFC 3834 etiquette, and one reply per sender per day,
durably, sent to a real SMTP server (aiosmtpd) through the real SQLite store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from imap_server import SmtpSink, running_smtp

from connectors.email.autoreply import (
    AutoReplier,
    ReplyJob,
    compose,
    describe_opening,
    limit_key,
    wants_reply,
)
from connectors.email.message import parse_mail
from connectors.email.metrics import EmailMetrics
from connectors.email.settings import AutoReplySettings, SmtpSettings
from gateway.calendar import Classification
from gateway.coordination import Coordination, InProcessCoordination
from gateway.metrics import Metrics
from gateway.models import Outcome, Receipt
from gateway.pipeline import Accepted
from gateway.store.sqlite import SQLiteStore

MSK = ZoneInfo("Europe/Moscow")
FIXTURES = Path(__file__).parent / "fixtures" / "email"
OWN = frozenset({"sales@stroymash-market.ru"})
SATURDAY_NIGHT = datetime(2026, 1, 10, 23, 15, tzinfo=MSK)
MONDAY_10 = datetime(2026, 1, 12, 10, 0, tzinfo=MSK)


def smtp_settings(port: int = 25) -> SmtpSettings:
    return SmtpSettings(
        host="127.0.0.1",
        port=port,
        security="plain",
        from_address="sales@stroymash-market.ru",
        from_name="СтройМаш Маркет",
    )


def accepted(
    outcome: Outcome = Outcome.CREATED,
    *,
    after_hours: bool = True,
    next_open: datetime | None = MONDAY_10,
) -> Accepted:
    return Accepted(
        Receipt(event_id="e", lead_id="l", outcome=outcome),
        Classification(
            after_hours=after_hours,
            reason="weekend: суббота" if after_hours else None,
            next_open_at=next_open if after_hours else None,
            sla_due_at=MONDAY_10 + timedelta(minutes=15),
        ),
        None,
    )


def job(address: str = "ivan.petrov@yandex.ru") -> ReplyJob:
    return ReplyJob(
        to_address=address,
        to_name="Иван Петров",
        subject="Погрузчик 3 т — цена?",
        message_id="1768076097.4711@mail.yandex.ru",
        references=(),
        after_hours=True,
        next_open_at=MONDAY_10,
    )


# --- when we answer, in words ------------------------------------------------------------


@pytest.mark.parametrize(
    ("opening", "now", "expected"),
    [
        (MONDAY_10, SATURDAY_NIGHT, "в понедельник, 12 января, после 10:00"),
        (MONDAY_10 + timedelta(days=1), SATURDAY_NIGHT, "во вторник, 13 января, после 10:00"),
        (MONDAY_10 + timedelta(days=2), SATURDAY_NIGHT, "в среду, 14 января, после 10:00"),
        (MONDAY_10 + timedelta(days=4), SATURDAY_NIGHT, "в пятницу, 16 января, после 10:00"),
        (MONDAY_10, MONDAY_10 - timedelta(hours=3), "сегодня после 10:00"),
        (
            datetime(2027, 1, 11, 10, 0, tzinfo=MSK),
            datetime(2026, 12, 31, 20, 0, tzinfo=MSK),
            "в понедельник, 11 января 2027 г., после 10:00",
        ),
    ],
)
def test_describe_opening(opening: datetime, now: datetime, expected: str) -> None:
    assert describe_opening(opening.astimezone(UTC), now.astimezone(UTC), MSK) == expected


def test_describe_opening_other_locale() -> None:
    assert describe_opening(MONDAY_10, SATURDAY_NIGHT, MSK, "en") == "Monday, 12 January, 10:00"


# --- the message ---------------------------------------------------------------------------


def test_compose_follows_rfc_3834() -> None:
    mail = parse_mail((FIXTURES / "thunderbird_reply_utf8.eml").read_bytes(), OWN)
    reply_job = ReplyJob(
        to_address="ivan.petrov@yandex.ru",
        to_name="Иван Петров",
        subject=mail.subject,
        message_id=mail.message_id,
        references=mail.references,
        after_hours=True,
        next_open_at=MONDAY_10,
    )
    msg = compose(reply_job, smtp_settings(), AutoReplySettings(), MSK, SATURDAY_NIGHT)
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["Subject"] == "Re: Погрузчик 3 т — цена?"  # no "Re: Re:"
    assert msg["In-Reply-To"] == f"<{mail.message_id}>"
    assert msg["References"] == (
        "<1768076097.4711@mail.yandex.ru> <20260112101500.77531.sales@stroymash-market.ru>"
        f" <{mail.message_id}>"
    )
    assert msg["To"] == "Иван Петров <ivan.petrov@yandex.ru>"
    assert "sales@stroymash-market.ru" in msg["From"]
    assert msg["Message-ID"].endswith("@stroymash-market.ru>")
    text = msg.get_content()
    assert text.startswith("Здравствуйте, Иван Петров!\n\nСпасибо за письмо")
    assert "менеджер ответит вам в понедельник, 12 января, после 10:00." in text


def test_compose_custom_text_and_signature() -> None:
    rules = AutoReplySettings(
        after_hours_text="{greeting} Ответим {when}. Тема: «{subject}».",
        greeting_named="Добрый вечер, {name}!",
        signature="СтройМаш Маркет, +7 495 000-00-00",
    )
    msg = compose(job(), smtp_settings(), rules, MSK, SATURDAY_NIGHT)
    assert msg.get_content() == (
        "Добрый вечер, Иван Петров! Ответим в понедельник, 12 января, после 10:00."
        " Тема: «Погрузчик 3 т — цена?».\n\n-- \nСтройМаш Маркет, +7 495 000-00-00\n"
    )


def test_unknown_placeholder_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="unknown placeholder"):
        AutoReplySettings(after_hours_text="Ответим {когда}")


# --- who gets one ----------------------------------------------------------------------------


def mail_of(name: str):  # type: ignore[no-untyped-def]
    return parse_mail((FIXTURES / name).read_bytes(), OWN)


def decide(name: str, acc: Accepted | None = None, **kw: object) -> ReplyJob | None:
    rules = kw.pop("rules", AutoReplySettings())
    return wants_reply(
        mail_of(name),
        acc or accepted(),
        rules,  # type: ignore[arg-type]
        OWN,
        junk=bool(kw.get("junk", False)),
        arrived_at=SATURDAY_NIGHT,
        now=SATURDAY_NIGHT + timedelta(minutes=1),
    )


def test_a_new_after_hours_lead_gets_a_reply() -> None:
    reply = decide("yandex_cp1251_qp.eml")
    assert reply is not None and reply.to_address == "ivan.petrov@yandex.ru"
    assert reply.message_id == "1768076097.4711@mail.yandex.ru"


def test_reply_goes_to_reply_to() -> None:
    reply = decide("form_notification_reply_to.eml")
    assert reply is not None and reply.to_address == "katya.podolsk@bk.ru"
    assert reply.to_name == "Екатерина"


@pytest.mark.parametrize(
    "name",
    [
        "auto_reply_vacation.eml",
        "bounce_mailer_daemon.eml",
        "list_newsletter.eml",
        "own_address.eml",
    ],
)
def test_never_to_auto_generated_or_own_mail(name: str) -> None:
    assert decide(name) is None


def test_no_reply_cases() -> None:
    assert decide("yandex_cp1251_qp.eml", accepted(Outcome.MERGED)) is None  # existing lead
    assert decide("yandex_cp1251_qp.eml", accepted(Outcome.REPLAYED)) is None
    assert decide("yandex_cp1251_qp.eml", accepted(after_hours=False)) is None  # working time
    assert decide("yandex_cp1251_qp.eml", junk=True) is None  # spam
    never = AutoReplySettings(when="never")
    assert decide("yandex_cp1251_qp.eml", rules=never) is None
    always = AutoReplySettings(when="always")
    working = decide("yandex_cp1251_qp.eml", accepted(after_hours=False), rules=always)
    assert working is not None and not working.after_hours
    # Mail read long after it came (first sync, outage): no "we answer on Monday" on Tuesday.
    stale = wants_reply(
        mail_of("yandex_cp1251_qp.eml"),
        accepted(),
        AutoReplySettings(),
        OWN,
        junk=False,
        arrived_at=SATURDAY_NIGHT,
        now=MONDAY_10 + timedelta(days=1),
    )
    assert stale is None
    # A robot's address is never answered, even as a customer's only address.
    raw = b"From: no-reply@shop.example.ru\r\nMessage-ID: <r@x>\r\nSubject: x\r\n\r\nhi"
    robot = wants_reply(
        parse_mail(raw), accepted(), AutoReplySettings(), OWN, junk=False,
        arrived_at=SATURDAY_NIGHT, now=SATURDAY_NIGHT,
    )  # fmt: skip
    assert robot is None


def test_working_hours_text_when_always() -> None:
    working = ReplyJob("a@b.ru", None, "", None, (), after_hours=False, next_open_at=None)
    msg = compose(working, smtp_settings(), AutoReplySettings(when="always"), MSK, MONDAY_10)
    assert msg.get_content().startswith("Здравствуйте!\n\nСпасибо за письмо")
    assert "в ближайшее время" in msg.get_content()
    assert msg["Subject"] == "Re: Ваше обращение"
    assert msg["In-Reply-To"] is None  # no Message-ID to answer (a derived id is no thread)


# --- one a day, durable, over real SMTP ---------------------------------------------------------


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    with running_smtp() as sink:
        yield sink


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / "leadgate.db")
    await s.open()
    yield s
    await s.close()


def replier(
    store: SQLiteStore,
    port: int,
    now: list[datetime],
    coordination: Coordination | None = None,
) -> tuple[AutoReplier, Metrics]:
    """A replier as one process runs it; pass one `coordination` to several for replicas
    that share it (a new process with the embedded coordination starts with none)."""
    metrics = Metrics()
    return (
        AutoReplier(
            smtp=smtp_settings(port),
            rules=AutoReplySettings(),
            tz=MSK,
            checkpoints=store,
            coordination=coordination or InProcessCoordination(),
            metrics=EmailMetrics(metrics.registry),
            clock=lambda: now[0],
            retry_delays=(0.01, 0.01),
        ),
        metrics,
    )


async def test_one_reply_per_sender_per_day_survives_a_restart(
    smtp: SmtpSink, store: SQLiteStore
) -> None:
    now = [SATURDAY_NIGHT.astimezone(UTC)]
    first, _ = replier(store, smtp.port, now)
    assert await first.reply(job()) is True
    assert await first.reply(job()) is False  # same day
    assert await first.reply(job("other@example.ru")) is True  # someone else

    # A new process, the same store: its embedded coordination starts empty, the store's
    # checkpoint still says "answered today".
    restarted, metrics = replier(store, smtp.port, now)
    assert await restarted.reply(job()) is False
    assert (
        metrics.registry.get_sample_value(
            "leadgate_email_auto_replies_total", {"result": "limited"}
        )
        == 1
    )

    now[0] += timedelta(hours=1)  # 00:15 Moscow: a new day
    assert await restarted.reply(job()) is True
    assert [r.recipients for r in smtp.received] == [
        ["ivan.petrov@yandex.ru"],
        ["other@example.ru"],
        ["ivan.petrov@yandex.ru"],
    ]
    stored = await store.get_checkpoint(limit_key("ivan.petrov@yandex.ru"))
    assert stored == "2026-01-11"
    assert "ivan" not in limit_key("ivan.petrov@yandex.ru")  # the store keeps no address here


async def test_smtp_down_retries_then_gives_up_without_using_the_day(store: SQLiteStore) -> None:
    now = [SATURDAY_NIGHT.astimezone(UTC)]
    shared = InProcessCoordination()
    with running_smtp() as gone:
        port = gone.port
    down, metrics = replier(store, port, now, shared)  # nothing listens there any more
    assert await down.reply(job()) is False
    assert (
        metrics.registry.get_sample_value("leadgate_email_auto_replies_total", {"result": "failed"})
        == 1
    )
    assert await store.get_checkpoint(limit_key("ivan.petrov@yandex.ru")) is None
    with running_smtp() as back:
        # The same coordination: the failed reply gave its memo back.
        up, _ = replier(store, back.port, now, shared)
        assert await up.reply(job()) is True  # the day's one reply was not used up


async def test_two_replicas_never_both_reply(smtp: SmtpSink, store: SQLiteStore) -> None:
    """Both see no checkpoint (neither has sent yet): the coordination memo decides."""
    now = [SATURDAY_NIGHT.astimezone(UTC)]
    shared = InProcessCoordination()
    a, metrics_a = replier(store, smtp.port, now, shared)
    b, metrics_b = replier(store, smtp.port, now, shared)
    results = await asyncio.gather(a.reply(job()), b.reply(job()))
    assert sorted(results) == [False, True]
    assert [r.recipients for r in smtp.received] == [["ivan.petrov@yandex.ru"]]
    limited = [
        m.registry.get_sample_value("leadgate_email_auto_replies_total", {"result": "limited"})
        for m in (metrics_a, metrics_b)
    ]
    assert sorted(v or 0 for v in limited) == [0, 1]
    assert await store.get_checkpoint(limit_key("ivan.petrov@yandex.ru")) == "2026-01-10"
    # The memo carries the day: the next day both may answer again (one of them will).
    now[0] += timedelta(hours=5)
    results = await asyncio.gather(b.reply(job()), a.reply(job()))
    assert sorted(results) == [False, True]
    assert len(smtp.received) == 2


async def test_without_the_memo_both_would_reply(smtp: SmtpSink, store: SQLiteStore) -> None:
    """The race the memo closes is real: two replicas that do not share coordination (each
    its own embedded one) both pass the store check and both send."""
    now = [SATURDAY_NIGHT.astimezone(UTC)]
    a, _ = replier(store, smtp.port, now)
    b, _ = replier(store, smtp.port, now)
    assert await asyncio.gather(a.reply(job()), b.reply(job())) == [True, True]
    assert len(smtp.received) == 2


async def test_worker_sends_in_the_background(smtp: SmtpSink, store: SQLiteStore) -> None:
    now = [SATURDAY_NIGHT.astimezone(UTC)]
    worker, _ = replier(store, smtp.port, now)
    task = asyncio.create_task(worker.run())
    worker.submit(job())
    worker.submit(job())
    for _ in range(200):
        if worker.queue.empty() and smtp.received:
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.1)
    task.cancel()
    assert len(smtp.received) == 1
