"""What the widget promises a visitor, against the calendar (finding F02): the real next
working day (holidays and transferred days included) in the visitor's language and time
zone, also for a request made in the last minutes before closing, whose reaction time
runs into the next working day."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from widget_support import ORIGIN, Clock, msk, settings_with_widget, specs_with_clock, widget_config

from gateway.web import create_app

Client = TestClient[Any, Any]
NNBSP = "\u202f"  # babel (CLDR) writes «2027 г.» with a narrow no-break space

CASES = [
    # New Year: 31 December 2026 is a transferred day off, 1-8 January 2027 are holidays,
    # 9-10 January a weekend: the first working day is Monday 11 January 2027.
    (
        msk(2026, 12, 31, 20, 0),
        "ru",
        "callback",
        f"Спасибо! Мы сейчас не на связи и перезвоним в понедельник, 11 января 2027{NNBSP}г.,"
        " после 10:00.",
    ),
    (
        msk(2026, 12, 30, 19, 0),
        "ru",
        "form",
        f"Спасибо! Заявка принята. Мы ответим в понедельник, 11 января 2027{NNBSP}г., после 10:00.",
    ),
    # Still open at 18:50 on the last working day: 10 minutes today, 5 after the holidays.
    (
        msk(2026, 12, 30, 18, 50),
        "ru",
        "callback",
        f"Спасибо! Перезвоним в понедельник, 11 января 2027{NNBSP}г., до 10:05.",
    ),
    (
        msk(2026, 12, 30, 18, 50),
        "en",
        "callback",
        "Thank you! We will call you back on Monday, January 11, 2027, by 10:05.",
    ),
    # An ordinary Friday at the 19:00 switch, one second before and at it.
    (
        msk(2026, 1, 16, 18, 59, 59),
        "ru",
        "callback",
        "Спасибо! Перезвоним в понедельник, 19 января, до 10:14.",
    ),
    (
        msk(2026, 1, 16, 19, 0),
        "ru",
        "callback",
        "Спасибо! Мы сейчас не на связи и перезвоним в понедельник, 19 января, после 10:00.",
    ),
    (
        msk(2026, 1, 16, 19, 0),
        "en",
        "form",
        "Thank you! Your request has been received. We will answer on Monday, January 19,"
        " after 10:00.",
    ),
    # 9 January 2026 is a Friday, but a day off (transferred from Saturday 3 January).
    (
        msk(2026, 1, 9, 12, 0),
        "ru",
        "callback",
        "Спасибо! Мы сейчас не на связи и перезвоним в понедельник, 12 января, после 10:00.",
    ),
    (msk(2026, 1, 12, 12, 0), "ru", "callback", "Спасибо! Перезвоним до 12:15."),
    (
        msk(2026, 1, 12, 7, 30),
        "ru",
        "callback",
        "Спасибо! Мы сейчас не на связи и перезвоним сегодня после 10:00.",
    ),
]


@pytest.mark.parametrize(("at", "lang", "tab", "expected"), CASES)
async def test_the_promise_names_the_real_next_working_moment(
    aiohttp_client: Callable[..., Any],
    tmp_path: Path,
    at: datetime,
    lang: str,
    tab: str,
    expected: str,
) -> None:
    widget = widget_config(off_hours="form_and_callback")
    app = create_app(settings_with_widget(tmp_path, widget), specs=specs_with_clock(Clock(at)))
    client: Client = await aiohttp_client(app)
    body = {"phone": "+79161234567", "name": "Анна", "consent": True, "lang": lang}
    body |= {"tz": "Europe/Moscow", "email": "anna@example.ru", "comment": "Нужен станок"}
    resp = await client.post(f"/v1/widget/site/{tab}", json=body, headers={"Origin": ORIGIN})
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["message"] == expected
