"""Mail as real clients and servers send it: the corpus in fixtures/vendor/mail/ (public test
corpora of mailgun/talon, mailgun/flanker, the Ruby mail gem, imap_tools, Thunderbird; see
its SOURCES.md). Every message must become what a seller needs: the person, their own new
text without quoted history, their phone and no one else's, and no lead from robots."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from connectors.email.event import Origin, mail_to_event
from connectors.email.html_text import html_to_text
from connectors.email.message import MalformedMail, parse_mail
from connectors.email.quotes import trim_quoted
from gateway.identity import find_phones

MAIL = Path(__file__).parent / "fixtures" / "vendor" / "mail"
BODIES = MAIL / "bodies"
OWN = frozenset({"sales@stroymash-market.ru"})
ORIGIN = Origin("sales", "INBOX", 1, 1)
NOW = datetime(2026, 1, 20, 12, 0, tzinfo=UTC)

# Robots: never a lead, whatever they say. (file, reason)
ROBOTS = {
    "flanker__bounce_broken-mime.eml": "delivery_report",
    "flanker__bounce_delayed.eml": "delivery_report",
    "flanker__bounce_gmail-invalid-address.eml": "delivery_report",
    "flanker__bounce_gmail-no-dns.eml": "delivery_report",
    "flanker__bounce_mailbox-full.eml": "delivery_report",
    "flanker__bounce_no-mx.eml": "delivery_report",
    "flanker__bounce_office365.eml": "delivery_report",
    "flanker__bounce_zed.eml": "delivery_report",
    "flanker__complaint_aol.eml": "delivery_report",
    "flanker__complaint_yahoo.eml": "delivery_report",
    "flanker__disposition_notification.eml": "delivery_report",
    "mail__multi_address_bounce1.eml": "delivery_report",
    "mail__multi_address_bounce2.eml": "delivery_report",
    "mail__multipart_report_multiple_status.eml": "delivery_report",
    "mail__report_422.eml": "delivery_report",
    "mail__report_530.eml": "delivery_report",
    # Exchange 2013's rule auto-reply, headers as received (X-Auto-Response-Suppress,
    # X-MS-Exchange-Inbox-Rules-Loop, ...Generated-Message-Source, auto-submitted) ...
    "utilus__exchange_autoreply.eml": "auto_submitted",
    # ... and the same without Auto-Submitted: Exchange's own marks decide alone.
    "derived__exchange_autoreply_no_auto_submitted.eml": "auto_submitted",
}
# A bounce whose headers were lost: not even mail, kept raw for a person (no lead either).
MALFORMED = {"flanker__bounce_delayed-broken.eml"}

# Customers: (file) -> what the lead must carry. "body" is the exact new text; "in"/"out"
# are fragments that must (not) be in the lead's text.
CUSTOMERS: dict[str, dict[str, Any]] = {
    "talon__android.eml": {"email": "bob@example.com", "body": "Hello"},
    "talon__aol.eml": {"email": "xxx@aol.com", "body": "Hello"},
    "talon__apple_mail.eml": {"email": "xxx@gmail.com", "body": "Hello"},
    "talon__apple_mail_2.eml": {"email": "adam@tictail.com", "body": "Hello"},
    "talon__comcast.eml": {"email": "xxx@comcast.net", "body": "Hello"},
    "talon__gmail.eml": {"email": "xxx@gmail.com", "name": "Megan One", "body": "Hello"},
    "talon__hotmail.eml": {"email": "xxx@hotmail.com", "name": "Alexey Q", "body": "Hello"},
    "talon__iphone.eml": {"email": "xxx@gmail.com", "body": "Hello\n\nSent from my iPhone"},
    "talon__outlook.eml": {"email": "me@example.com", "body": "Hello"},
    "talon__share_block.eml": {
        "email": "xxx@example.com",
        "in": ["Hi Katharine.", "Joe XXX"],
        "out": ["New Booking Inquiry", "wrote:"],
    },
    "talon__sparrow.eml": {"email": "xxx@gmail.com", "in": ["Hello", "Sent with Sparrow"]},
    "talon__thunderbird.eml": {"email": "bob@xxx.mailgun.org", "body": "Hello"},
    "talon__yahoo.eml": {"email": "xxx@yahoo.com", "body": "Hello"},
    "flanker__bilingual_simple.eml": {
        "email": "hello@example.com",
        "subject": "Simple text. How are you? Как ты поживаешь?",
        "body": "This line is in English\nА эта линия по-русски.",
    },
    "flanker__iphone.eml": {"email": "someone@somewhere.com", "body": "Hello\n\n~Danielle"},
    "flanker__russian_attachment_yahoo.eml": {
        "email": "mailboxaddr1234567@yahoo.com",
        "body": "Hello",
        "attachment": "Картинка с очень, очень длинным предлинным именем преименем таким чт",
    },
    "mail__raw_email_reply.eml": {"email": "xxxxxxxx@xxx.org", "body": "Message body"},
    "imap_tools__thunderbird_cp1251_forward.eml": {
        "email": "k1@yandex.ru",
        "name": "Каукин Владимир",
        "in": ["S19", "отдел расписания"],
        "phones": ("+73430720000",),  # «тел. (343) 072-00-00 (вн.18-59)», windows-1251 8bit
    },
    "imap_tools__thunderbird_forward.eml": {
        "email": "i.kor@company.ru",
        "subject": "статус",
        "in": ["Пересланное сообщение", "От: group@company.ru", "Новый заказ №28922"],
        "phones": (),
    },
    # Yandex web mail with Reply-To given twice (two people each): the first one answers.
    "imap_tools__yandex_web.eml": {
        "email": "foma1@company.ru",
        "name": "привет",
        "body": "double_fields",
    },
    "thunderbird__sample04_koi8r.eml": {
        "email": "new@thunderbird.bug",
        "subject": "Алфавит",
        "body": "Вопрос",
    },
    "thunderbird__sample05_cp1251.eml": {
        "email": "new@thunderbird.bug",
        "subject": "Алфавит",
        "body": "Вопрос",
    },
}


def test_the_corpus_is_complete_and_every_file_has_a_verdict() -> None:
    files = {p.name for p in MAIL.glob("*.eml")}
    assert files == set(ROBOTS) | MALFORMED | set(CUSTOMERS)
    assert len(files) >= 40


@pytest.mark.parametrize("name", sorted(ROBOTS))
def test_robots_make_no_lead(name: str) -> None:
    mail = parse_mail((MAIL / name).read_bytes(), OWN)
    assert mail.not_customer == ROBOTS[name]


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_unreadable_robot_mail_is_malformed(name: str) -> None:
    with pytest.raises(MalformedMail):
        parse_mail((MAIL / name).read_bytes(), OWN)


@pytest.mark.parametrize("name", sorted(CUSTOMERS))
def test_customer_mail_becomes_what_a_seller_needs(name: str) -> None:
    want = CUSTOMERS[name]
    mail = parse_mail((MAIL / name).read_bytes(), OWN)
    assert mail.not_customer is None
    event = mail_to_event(mail, ORIGIN, arrived_at=None, received_at=NOW)
    text = event.text or ""
    assert event.contact.emails == (want["email"],)
    if "name" in want:
        assert event.contact.name == want["name"]
    if "subject" in want:
        assert mail.subject == want["subject"]
    if "body" in want:
        assert mail.body == want["body"]
    for fragment in want.get("in", []):
        assert fragment in text, fragment
    for fragment in want.get("out", []):
        assert fragment not in text, fragment
    assert event.contact.phones == want.get("phones", ())
    if "attachment" in want:
        (attachment,) = mail.attachments
        assert attachment.name is not None and attachment.name.startswith(want["attachment"])
        assert "\ufffd" not in attachment.name[:-1]  # only the character Yahoo cut in two


def test_format_flowed_bottom_posting_is_not_glued_into_the_quote() -> None:
    """Thunderbird's reply below the quote; the quoted line ends in a space (flowed), the
    reply is at depth 0: RFC 3676 4.5 forbids joining them."""
    mail = parse_mail((MAIL / "talon__thunderbird.eml").read_bytes(), OWN)
    assert mail.body == "Hello"


def test_wrapped_android_attribution_leaves_nothing_of_the_quote() -> None:
    """Android Gmail in Russian: «02.04.2012 14:20 пользователь "bob@…" <» / «bob@…>
    написал:», wrapped over two lines: our address was left in the customer's text."""
    mail = parse_mail((MAIL / "talon__android.eml").read_bytes(), OWN)
    assert mail.body == "Hello"
    assert "mailgun" not in mail.body


# --- HTML reply histories of real clients (talon's recorded bodies) ----------------------


@pytest.mark.parametrize(
    "name",
    [
        "talon__yandex_ru.html",  # «26.06.2014, 14:41, "Alexander L" <…>:» + <blockquote>
        "talon__mail_ru.html",  # «Thu, 26 Jun 2014 14:00:51 +0400 от Alexander L <…>:»
        "talon__hotmail.html",  # Outlook.com: <hr id="stopSpelling">Date/Subject/From/To
        "talon__gmail.html",  # gmail_quote
        "talon__ms_outlook_2003.html",
        "talon__ms_outlook_2007.html",
        "talon__ms_outlook_2010.html",  # From: … On Behalf Of … Sent: … To: … Cc: … Subject:
        "talon__windows_mail.html",  # «От: / Отправлено: / Кому:» in Russian
        "talon__thunderbird.html",  # moz-cite-prefix + blockquote
    ],
)
def test_html_reply_history_is_cut(name: str) -> None:
    html = (BODIES / name).read_text("utf-8", errors="replace")
    text = trim_quoted(html_to_text(html))
    assert text.startswith("Hi. I am fine.")
    assert text.rstrip().endswith("Alex")
    assert "How are you" not in text and "Sasha" not in text


def test_gmail_russian_attribution_with_a_narrow_no_break_space() -> None:
    """Gmail writes «ср, 30 апр. 2025\u202fг. в 15:19, John Doe <doe@example.com>:» (a
    narrow no-break space before «г.»); the quoted «привет» below it is history."""
    body = (BODIES / "crisp__email_russian.txt").read_text("utf-8")
    assert "\u202fг." in body
    text = trim_quoted(body)
    assert text.endswith("nec nec nibh.")
    assert "привет" not in text and "John Doe" not in text


# Our own signature's phone inside the quoted history must never become the customer's.
OUR_SIGNATURE = "СтройМаш Маркет, тел. +7 (495) 123-45-67"


@pytest.mark.parametrize(
    "name",
    [
        "talon__yandex_ru.html",
        "talon__mail_ru.html",
        "talon__hotmail.html",
        "talon__windows_mail.html",
        "talon__thunderbird.html",
        "talon__gmail.html",
    ],
)
def test_our_signature_in_a_real_html_quote_is_not_the_customers_phone(name: str) -> None:
    # Derived: the real reply bodies, with our signature put where our mail was quoted.
    html = (BODIES / name).read_text("utf-8", errors="replace")
    quoted = html.replace("Sasha.", f"Sasha.<br>{OUR_SIGNATURE}")
    assert OUR_SIGNATURE in html_to_text(quoted)
    assert find_phones(trim_quoted(html_to_text(quoted))) == ()


@pytest.mark.parametrize(
    ("client", "attribution"),
    [
        # Formats named in issue 15 for which no public artifact was found: the attribution
        # lines as these clients write them in Russian.
        ("Android Gmail", "пт, 12 янв. 2024\u202fг., 10:00 Иван Петров <ivan@mail.ru>:"),
        ("Android Gmail", "пт, 12 янв. 2024 г., 10:00 Иван Петров <ivan@mail.ru>:"),
        ("Apple Mail", "12 янв. 2024 г., в 10:00, Иван Петров <ivan@mail.ru> написал(а):"),
        ("Gmail", "ср, 30 апр. 2025 г. в 15:19, Иван Петров <ivan@mail.ru>:"),
        ("Yandex", '12.01.2024, 10:00, "Иван Петров" <ivan@mail.ru>:'),
        ("Mail.ru", "Пятница, 12 января 2024, 10:00 +03:00 от Иван Петров <ivan@mail.ru>:"),
        ("Gmail, wrapped", "ср, 30 апр. 2025 г. в 15:19, Иван Петров <\nivan@mail.ru>:"),
    ],
)
def test_russian_attributions_are_cut(client: str, attribution: str) -> None:
    text = f"Спасибо, берём два.\nИван\n\n{attribution}\n> Цена 100 000 руб.\n> {OUR_SIGNATURE}"
    assert trim_quoted(text) == "Спасибо, берём два.\nИван", client
    assert find_phones(trim_quoted(text)) == ()


def test_answers_between_quoted_lines_are_kept() -> None:
    # Bottom-posting and inline answers (talon's thunderbird.eml shape, plain text).
    text = "On 04/02/2012 06:26 PM, Megan One wrote:\n> Hi\n> Price?\n120 000\n> Delivery?\nMay"
    assert trim_quoted(text) == "120 000\nMay"
