from __future__ import annotations

import logging
import re

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
