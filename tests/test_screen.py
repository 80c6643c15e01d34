from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gateway.identity import normalize_email
from gateway.models import Channel, Contact, LeadEvent
from gateway.screen import Screen

NOW = datetime(2026, 1, 12, 10, 0, tzinfo=UTC)


def screen(*, blocked_domains: list[str]) -> Screen:
    return Screen(
        blocked_phones=[], blocked_emails=[], blocked_domains=blocked_domains, stop_words=[]
    )


def event(email: str) -> LeadEvent:
    normalized = normalize_email(email)
    assert normalized is not None
    return LeadEvent(
        channel=Channel.WEBFORM,
        external_id="e-1",
        occurred_at=NOW,
        received_at=NOW,
        contact=Contact(emails=(normalized,)),
    )


@pytest.mark.parametrize(
    "configured", ["спам.рф", "СПАМ.РФ", "@спам.рф", " спам.рф ", "xn--80ayhh.xn--p1ai"]
)
def test_idn_blocked_domain_matches_the_punycoded_email(configured: str) -> None:
    # Contact emails carry the IDNA form ("bot@xn--80ayhh.xn--p1ai"); the config is Unicode.
    assert normalize_email("bot@спам.рф") == "bot@xn--80ayhh.xn--p1ai"
    assert screen(blocked_domains=[configured]).reason(event("bot@спам.рф")) == "blocked domain"
    assert screen(blocked_domains=[configured]).reason(event("Bot@СПАМ.рф")) == "blocked domain"


def test_idn_blocked_domain_does_not_block_other_domains() -> None:
    blocking = screen(blocked_domains=["спам.рф"])
    assert blocking.reason(event("ivan@почта.рф")) is None
    assert blocking.reason(event("ivan@неспам.рф")) is None
    assert blocking.reason(event("ivan@mail.ru")) is None


def test_ascii_blocked_domain_still_matches_case_insensitively() -> None:
    blocking = screen(blocked_domains=["Spam.Example", "münchen.de"])
    assert blocking.reason(event("boss@SPAM.example")) == "blocked domain"
    assert blocking.reason(event("a@MÜNCHEN.de")) == "blocked domain"
    assert blocking.reason(event("a@example.ru")) is None


def test_unencodable_blocked_domain_is_harmless() -> None:
    # No normalized email can carry these, so they simply never match (and do not crash).
    blocking = screen(blocked_domains=["localhost", "bad..domain", ""])
    assert blocking.reason(event("ivan@mail.ru")) is None
