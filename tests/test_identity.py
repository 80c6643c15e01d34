from __future__ import annotations

import json
import logging
import random
import re
import time
from datetime import UTC, datetime

import pytest

from gateway.identity import (
    MaskingFilter,
    find_phones,
    identity_keys,
    mask_email,
    mask_phone,
    mask_text,
    normalize_email,
    normalize_phone,
)
from gateway.models import Contact


@pytest.mark.parametrize(
    "raw",
    [
        "8 (916) 123-45-67",
        "+7 916 1234567",
        "79161234567",
        "9161234567",
        "+7(916)123-45-67 доб. 12",
        "89161234567",
        "  +79161234567  ",
    ],
)
def test_russian_phone_forms_normalize_to_one_e164(raw: str) -> None:
    assert normalize_phone(raw) == "+79161234567"


def test_foreign_numbers_keep_their_country() -> None:
    assert normalize_phone("+44 20 7946 0958") == "+442079460958"
    assert normalize_phone("+1 650 253 0000") == "+16502530000"
    assert normalize_phone("0044 20 7946 0958") == "+442079460958"


def test_moscow_landline_with_trunk_prefix() -> None:
    assert normalize_phone("8 (495) 123-45-67") == "+74951234567"


@pytest.mark.parametrize("raw", ["", "   ", "123", "abc", "1234567", "+7 916", "8" * 300])
def test_junk_is_not_a_phone(raw: str) -> None:
    assert normalize_phone(raw) is None


def test_email_is_stripped_and_lowercased() -> None:
    assert normalize_email("  Ivan.Petrov@Example.RU ") == "ivan.petrov@example.ru"


def test_idn_email_domain_is_punycoded() -> None:
    assert normalize_email("Иван@Пример.РФ") == "иван@xn--e1afmkfd.xn--p1ai"
    assert normalize_email("a@münchen.de") == "a@xn--mnchen-3ya.de"
    # Already-encoded input stays the same key.
    assert normalize_email("иван@xn--e1afmkfd.xn--p1ai") == "иван@xn--e1afmkfd.xn--p1ai"


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "ivan",
        "ivan@",
        "@example.ru",
        "ivan@localhost",
        "iv an@example.ru",
        "ivan@exa mple.ru",
        "a@b@example.ru",
        "ivan@.example.ru",
        "ivan@example..ru",
        "ivan@example.ru.",
        "ivan@-bad.ru",
    ],
)
def test_not_an_email(raw: str) -> None:
    assert normalize_email(raw) is None


def test_identity_keys_order_and_dedup() -> None:
    contact = Contact(
        phones=("+79161234567", "8 (916) 123-45-67", "+74951234567", "123"),
        emails=("Ivan@Example.ru", "ivan@example.ru", "not-an-email"),
        handles=("vk:123", "tg:456", "vk:123"),
    )
    assert identity_keys(contact) == (
        "phone:+79161234567",
        "phone:+74951234567",
        "email:ivan@example.ru",
        "vk:123",
        "tg:456",
    )


def test_identity_keys_of_empty_contact() -> None:
    assert identity_keys(Contact()) == ()


def test_find_phones_in_russian_signature() -> None:
    text = "С уважением, Иван\nтел. 8 (495) 123-45-67, моб. +7 916 765-43-21"
    assert find_phones(text) == ("+74951234567", "+79167654321")


def test_find_phones_deduplicates_and_ignores_dates() -> None:
    text = "Звоните +7 916 123-45-67 или 8 916 123 45 67. Заказ от 12.01.2026, счёт 42."
    assert find_phones(text) == ("+79161234567",)


def test_mask_phone_shows_at_most_half_the_digits() -> None:
    assert mask_phone("+79161234567") == "+7******4567"
    assert mask_phone("+442079460958") == "+44******0958"
    for phone in ("+79161234567", "+442079460958", "+380441234567", "+16502530000"):
        masked = mask_phone(phone)
        shown = len(re.sub(r"\D", "", masked))
        assert shown <= len(phone[1:]) // 2
        assert masked.startswith("+") and masked != phone


def test_mask_email() -> None:
    assert mask_email("ivan.petrov@example.ru") == "i***@example.ru"
    assert mask_email("garbage") == "***"


def test_mask_text_masks_phones_and_emails() -> None:
    text = (
        "Лид от Ivan.Petrov@Example.ru, тел:8 (916) 123-45-67; "
        "моб. +7 916 765-43-21, ещё 79031112233."
    )
    masked = mask_text(text)
    assert masked == (
        "Лид от I***@Example.ru, тел:*******4567; моб. +7******4321, ещё *******2233."
    )
    for secret in ("Ivan.Petrov", "123-45-67", "765-43-21", "79031112233"):
        assert secret not in masked


def test_mask_text_keeps_timestamps_and_ids() -> None:
    text = (
        "at 2026-01-12T10:00:00+03:00 lead 01HQZX3M5K8V9N2P4R6T8W0Y2A "
        "req 550e8400-e29b-41d4-a716-446655440000 from 192.168.100.200 on 2026-01-12 10:00"
    )
    assert mask_text(text) == text


def test_mask_text_is_idempotent() -> None:
    once = mask_text("call +79161234567 or mail ivan@example.ru")
    assert once == "call +7******4567 or mail i***@example.ru"
    assert mask_text(once) == once


def test_masking_filter_on_logger(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("leadgate.test.masking")
    masking = MaskingFilter()
    logger.addFilter(masking)
    try:
        with caplog.at_level(logging.INFO, logger=logger.name):
            logger.info("new lead from %s <%s>", "+79161234567", "ivan.petrov@example.ru")
            try:
                raise ValueError("bad phone 8 (916) 123-45-67")
            except ValueError:
                logger.exception("parse failed for %s", "ivan.petrov@example.ru")
    finally:
        logger.removeFilter(masking)
    assert [r.getMessage() for r in caplog.records] == [
        "new lead from +7******4567 <i***@example.ru>",
        "parse failed for i***@example.ru",
    ]
    assert "+79161234567" not in caplog.text
    assert "ivan.petrov@example.ru" not in caplog.text
    assert "123-45-67" not in caplog.text
    assert "*******4567" in caplog.text  # the traceback was masked too


def test_masking_filter_survives_bad_format_args() -> None:
    record = logging.LogRecord(
        "x", logging.INFO, __file__, 1, "%d leads %s", ("+79161234567",), None
    )
    assert MaskingFilter().filter(record) is True
    assert "+79161234567" not in str(record.msg)
    assert record.args is None


# --- masking: every spelling a log line may carry ---------------------------------------------

_EMAIL_JSON = json.dumps({"email": "иван@почта.рф"})  # {"email": "\u0438\u0432...@..."}


def _log_through_mask(caplog: pytest.LogCaptureFixture, value: str) -> str:
    """What a real logger with the MaskingFilter emits for log.info("x %s", value)."""
    logger = logging.getLogger("leadgate.test.masking.spellings")
    masking = MaskingFilter()
    logger.addFilter(masking)
    try:
        with caplog.at_level(logging.INFO, logger=logger.name):
            caplog.clear()
            logger.info("x %s", value)
    finally:
        logger.removeFilter(masking)
    [record] = caplog.records
    return record.getMessage()


def _digits_outside_escapes(text: str) -> str:
    # The digits a reader could piece together, separators and %XX / \uXXXX escapes ignored.
    return re.sub(r"%[0-9A-Fa-f]{2}|\\u[0-9A-Fa-f]{4}|\D", "", text)


@pytest.mark.parametrize(
    "spelling",
    [
        "тел.89161234567",
        "Tel.+79161234567",
        "т.8-916-123-45-67",
        "https://ex.ru/cb/79161234567",
        "https://ex.ru/cb?phone=%2B79161234567",
        "+7.916.123.45.67",
        "+7\t916\t123\t45\t67",
        "phone_79161234567",
        "89161234567abc",
        "ф79161234567",
        "9161234567",
        "phone=8+916+123+45+67",  # form-encoded body
        "phone=8%20916%20123-45-67",
        json.dumps({"phone": "+7\u00a0916\u00a0123-45-67"}),  # \u00a0 escapes
        "+7&nbsp;916&nbsp;1234567",
        "\\u002b79161234567",
        "1.89161234567",
    ],
)
def test_masking_filter_hides_every_phone_spelling(
    caplog: pytest.LogCaptureFixture, spelling: str
) -> None:
    message = _log_through_mask(caplog, spelling)
    assert spelling not in message
    assert "9161234567" not in _digits_outside_escapes(message)
    assert "4567" in message  # still tells numbers apart


@pytest.mark.parametrize(
    ("spelling", "secrets"),
    [
        ("?email=ivan%40mail.ru", ("ivan%40", "ivan@", "van")),
        ("?email=ivan%2540mail.ru", ("ivan%2540", "van")),  # encoded twice
        ("?email=%D0%B8%D0%B2%D0%B0%D0%BD%40mail.ru", ("%D0%B8%D0%B2", "иван")),
        (_EMAIL_JSON, ("\\u0438\\u0432", "иван")),
        ("ivan&#64;mail.ru", ("ivan",)),
        ("\\u0069van\\u0040mail.ru", ("van",)),
    ],
)
def test_masking_filter_hides_every_email_spelling(
    caplog: pytest.LogCaptureFixture, spelling: str, secrets: tuple[str, ...]
) -> None:
    message = _log_through_mask(caplog, spelling)
    for secret in secrets:
        assert secret not in message
    assert "***" in message


def test_encoded_spellings_stay_encoded_around_the_mask() -> None:
    assert mask_text("?phone=%2B79161234567&x=1") == "?phone=%2B7******4567&x=1"
    assert mask_text("?email=ivan%40mail.ru&x=1") == "?email=i***%40mail.ru&x=1"
    assert mask_text(_EMAIL_JSON) == (
        '{"email": "и***@\\u043f\\u043e\\u0447\\u0442\\u0430.\\u0440\\u0444"}'
    )
    assert mask_text("тел.89161234567, Tel.+79161234567") == "тел.*******4567, Tel.+7******4567"


@pytest.mark.parametrize(
    "text",
    [
        '{"timestamp": 1736930000, "uid": 1234567}',
        "uid 1234567",
        "mailbox main: no body for UIDs [1234567, 1234568, 999999999]; skipped",
        "10:00:00 2025-01-15",
        "2025-01-15 10:00:00 1234567",
        "at 2026-01-12T10:00:00.123456+03:00 and 2026-01-12T07:00:00Z",
        str(datetime(2026, 1, 12, 10, 0, 0)),
        str(datetime(2026, 1, 12, 10, 0, 0, 123456, tzinfo=UTC)),
        "12.01.2026 10:00, 15-01-2025",
        "lead 01HQZX3M5K8V9N2P4R6T8W0Y2A",
        "req 550e8400-e29b-41d4-a716-446655440000",
        "attempt 3 550e8400-e29b-41d4-a716-446655440000",
        "from 192.168.100.200:8080 and 10.0.0.1",
        "from 2001:db8:85a3::8a2e:370:7334 and ::ffff:192.168.1.1 and fe80::1234:5678%eth0",
        "t=1736930000.123456 took 0.30000000000000004 s",
        "+03:00 +7 916",
    ],
)
def test_mask_text_leaves_non_personal_numbers_alone(text: str) -> None:
    assert mask_text(text) == text


def test_ten_digit_runs_are_phones_unless_they_look_like_unix_time() -> None:
    # A 10-digit run is a national number without its prefix (9xx mobile, 4xx Moscow...)
    # unless it starts with 1: Unix seconds from 2001 to 2033 all do, no RU/NANP number does.
    assert mask_text("ts 1736930000") == "ts 1736930000"
    assert mask_text("n 9161234567") == "n ******4567"
    assert mask_text("n 4951234567") == "n ******4567"
    assert mask_text("ms 1736930000123") == "ms *********0123"  # 11+ digits: always masked


def test_masking_filter_keeps_timestamps_and_uids(caplog: pytest.LogCaptureFixture) -> None:
    value = '"timestamp": 1736930000, uid 1234567, 10:00:00 2025-01-15'
    assert _log_through_mask(caplog, value) == f"x {value}"


@pytest.mark.parametrize(
    "line",
    [
        "".join(random.Random(7).choice("0123456789 -.()+\t") for _ in range(100_000)),
        "".join(
            random.Random(8).choice(["1", "23", " ", "-", ".", "(", "%20", "%2B", "\\u00a0", "@"])
            for _ in range(40_000)
        )[:100_000],
        "1-" * 50_000,
        "1." * 50_000,
        "12:30 " * 16_000,
        "2026-01-12-" * 9_000,
        "1234567a" * 12_500,
        "7" * 100_000,
        "%2B" * 33_000,
        "a" + "%40" * 33_000,
        "a@" * 50_000,
        "\\u0438" * 16_000,
        "a@" + "b." * 50_000,
    ],
    ids=lambda line: repr(line[:12]),
)
def test_mask_text_is_linear_on_hostile_lines(line: str) -> None:
    started = time.perf_counter()
    masked = mask_text(line)
    elapsed = time.perf_counter() - started
    assert elapsed < 0.5, f"{elapsed:.2f}s for a {len(line)}-char line"
    assert re.search(r"\d{11}", masked) is None  # and it still masked what it had to
