"""Meta's messaging window as a pure decision: 24 h, 7 days after an ad click, HUMAN_AGENT
for a person's reply up to 7 days, else closed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from connectors.meta.window import MessagingType, WindowRules, window

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
RULES = WindowRules()


@pytest.mark.parametrize(
    ("age", "via_ad", "by_person", "expected"),
    [
        (timedelta(minutes=1), False, False, ("RESPONSE", None)),
        (timedelta(hours=24), False, False, ("RESPONSE", None)),
        (timedelta(hours=24, seconds=1), False, True, ("MESSAGE_TAG", "HUMAN_AGENT")),
        (timedelta(hours=24, seconds=1), False, False, None),  # the gateway's own answer
        (timedelta(days=3), True, False, ("RESPONSE", None)),  # after an ad click
        (timedelta(days=7), False, True, ("MESSAGE_TAG", "HUMAN_AGENT")),
        (timedelta(days=6, hours=23, minutes=59), True, False, ("RESPONSE", None)),
        (timedelta(days=7, seconds=1), True, True, None),
    ],
)
def test_the_window(
    age: timedelta, via_ad: bool, by_person: bool, expected: tuple[str, str | None] | None
) -> None:
    # The ad click came just before the message (a Click-to-Messenger ad's prefilled text).
    clicked = NOW - age - timedelta(seconds=5) if via_ad else None
    found = window(NOW, NOW - age, rules=RULES, ad_click_at=clicked, by_person=by_person)
    if expected is None:
        assert not found.open
        with pytest.raises(ValueError):
            found.fields()
    else:
        assert found.open
        assert (found.messaging_type, found.tag) == (MessagingType(expected[0]), expected[1])


def test_no_tag_configured_and_never_written() -> None:
    rules = WindowRules(tag=None)
    assert not window(NOW, NOW - timedelta(days=2), rules=rules).open
    assert not window(NOW, None, rules=RULES).open
    tagged = window(NOW, NOW - timedelta(days=2), rules=RULES)
    assert tagged.fields() == {"messaging_type": "MESSAGE_TAG", "tag": "HUMAN_AGENT"}
