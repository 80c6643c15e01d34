"""BusinessCalendar against the real 2025–2026 Russian production calendar."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from gateway.calendar import BusinessCalendar, CalendarSettings, Classification
from gateway.cli import calendar as calendar_cli
from gateway.hours import WeeklyHours

MSK = ZoneInfo("Europe/Moscow")
CAL = BusinessCalendar(CalendarSettings())


def msk(year: int, month: int, day: int, hour: int = 0, minute: int = 0, sec: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, sec, tzinfo=MSK)


def off_days(start: date, end: date) -> list[date]:
    days = [start + timedelta(days=i) for i in range((end - start).days + 1)]
    return [d for d in days if CAL.day_off_reason(d) is not None]


# --- days off -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("day", "reason"),
    [
        (date(2025, 1, 1), "holiday: Новогодние каникулы"),
        (date(2025, 1, 7), "holiday: Рождество Христово"),
        (date(2025, 2, 23), "holiday: День защитника Отечества"),
        (date(2025, 3, 8), "holiday: Международный женский день"),
        (date(2025, 5, 2), "holiday: Выходной (перенесено с 04.01.2025)"),
        (date(2025, 5, 8), "holiday: Выходной (перенесено с 23.02.2025)"),
        (date(2025, 6, 13), "holiday: Выходной (перенесено с 08.03.2025)"),
        (date(2025, 11, 3), "holiday: Выходной (перенесено с 01.11.2025)"),
        (date(2025, 12, 31), "holiday: Выходной (перенесено с 05.01.2025)"),
        (date(2026, 1, 9), "holiday: Выходной (перенесено с 03.01.2026)"),
        (date(2026, 2, 23), "holiday: День защитника Отечества"),
        (date(2026, 3, 9), "holiday: Международный женский день (выходной)"),
        (date(2026, 5, 11), "holiday: День Победы (выходной)"),
        (date(2026, 11, 4), "holiday: День народного единства"),
        (date(2026, 12, 31), "holiday: Выходной (перенесено с 04.01.2026)"),
        (date(2026, 1, 10), "weekend: суббота"),
        (date(2026, 1, 11), "weekend: воскресенье"),
        (date(2026, 1, 12), None),
        (date(2026, 3, 10), None),
        (date(2025, 12, 30), None),
    ],
)
def test_day_off_reason(day: date, reason: str | None) -> None:
    assert CAL.day_off_reason(day) == reason


def test_2025_off_periods_match_production_calendar() -> None:
    assert off_days(date(2025, 1, 1), date(2025, 1, 12)) == [
        date(2025, 1, d) for d in (1, 2, 3, 4, 5, 6, 7, 8, 11, 12)
    ]
    assert off_days(date(2025, 4, 30), date(2025, 5, 12)) == [
        date(2025, 5, d) for d in (1, 2, 3, 4, 8, 9, 10, 11)
    ]
    assert off_days(date(2025, 6, 11), date(2025, 6, 16)) == [
        date(2025, 6, d) for d in (12, 13, 14, 15)
    ]
    assert off_days(date(2025, 10, 31), date(2025, 11, 5)) == [date(2025, 11, d) for d in (2, 3, 4)]


def test_2026_off_periods_match_production_calendar() -> None:
    assert off_days(date(2026, 1, 1), date(2026, 1, 12)) == [date(2026, 1, d) for d in range(1, 12)]
    assert off_days(date(2026, 3, 6), date(2026, 3, 10)) == [date(2026, 3, d) for d in (7, 8, 9)]
    assert off_days(date(2026, 4, 30), date(2026, 5, 12)) == [
        date(2026, 5, d) for d in (1, 2, 3, 9, 10, 11)
    ]
    assert off_days(date(2026, 6, 11), date(2026, 6, 15)) == [
        date(2026, 6, d) for d in (12, 13, 14)
    ]
    assert off_days(date(2026, 12, 28), date(2026, 12, 31)) == [date(2026, 12, 31)]


def test_transferred_working_saturday_2025_11_01_is_open_with_weekday_hours() -> None:
    assert CAL.day_off_reason(date(2025, 11, 1)) is None
    assert CAL.is_open(msk(2025, 11, 1, 12, 0))
    assert not CAL.is_open(msk(2025, 11, 1, 19, 0))
    assert CAL.next_open(msk(2025, 11, 1, 9, 0)) == msk(2025, 11, 1, 10, 0)
    # The next Saturday is an ordinary weekend again.
    assert CAL.day_off_reason(date(2025, 11, 8)) == "weekend: суббота"


# --- hours ----------------------------------------------------------------------------------


def test_window_edges() -> None:
    assert not CAL.is_open(msk(2026, 1, 13, 9, 59, 59))
    assert CAL.is_open(msk(2026, 1, 13, 10, 0))
    assert CAL.is_open(msk(2026, 1, 13, 18, 59, 59))
    assert not CAL.is_open(msk(2026, 1, 13, 19, 0))
    assert CAL.open_until(msk(2026, 1, 13, 12, 0)) == msk(2026, 1, 13, 19, 0)
    assert CAL.open_until(msk(2026, 1, 13, 19, 0)) is None


def test_classify_open() -> None:
    result = CAL.classify(msk(2026, 1, 13, 12, 0))
    assert result == Classification(
        after_hours=False, reason=None, next_open_at=None, sla_due_at=msk(2026, 1, 13, 12, 15)
    )


def test_classify_before_opening() -> None:
    result = CAL.classify(msk(2026, 1, 13, 8, 30))
    assert result.after_hours
    assert result.reason == "outside hours: 10:00–19:00"
    assert result.next_open_at == msk(2026, 1, 13, 10, 0)
    assert result.sla_due_at == msk(2026, 1, 13, 10, 15)


def test_classify_exactly_closing_time_opens_next_working_day() -> None:
    result = CAL.classify(msk(2026, 1, 16, 19, 0))  # Friday
    assert result.after_hours
    assert result.reason == "outside hours: 10:00–19:00"
    assert result.next_open_at == msk(2026, 1, 19, 10, 0)
    assert result.sla_due_at == msk(2026, 1, 19, 10, 15)


def test_classify_weekend() -> None:
    result = CAL.classify(msk(2026, 1, 17, 11, 0))
    assert result.reason == "weekend: суббота"
    assert result.next_open_at == msk(2026, 1, 19, 10, 0)


def test_next_open_across_new_year_break() -> None:
    at = msk(2025, 12, 30, 19, 30)
    assert CAL.next_open(at) == msk(2026, 1, 12, 10, 0)
    result = CAL.classify(at)
    assert result.reason == "outside hours: 10:00–19:00"
    assert result.next_open_at == msk(2026, 1, 12, 10, 0)
    assert result.sla_due_at == msk(2026, 1, 12, 10, 15)
    holiday = CAL.classify(msk(2026, 1, 5, 12, 0))
    assert holiday.reason == "holiday: Новогодние каникулы"
    assert holiday.next_open_at == msk(2026, 1, 12, 10, 0)


def test_next_open_is_at_itself_when_open() -> None:
    at = datetime(2026, 1, 13, 9, 0, tzinfo=UTC)
    assert CAL.next_open(at) == msk(2026, 1, 13, 12, 0)
    assert CAL.next_open(at).tzinfo == MSK


def test_sla_rolls_over_day_boundary() -> None:
    result = CAL.classify(msk(2026, 1, 13, 18, 50))
    assert not result.after_hours
    assert result.sla_due_at == msk(2026, 1, 14, 10, 5)
    # Friday evening rolls over the weekend; 2025-11-01 (working Saturday) does not.
    assert CAL.add_business_minutes(msk(2026, 1, 16, 18, 50), 15) == msk(2026, 1, 19, 10, 5)
    assert CAL.add_business_minutes(msk(2025, 10, 31, 18, 50), 15) == msk(2025, 11, 1, 10, 5)


def test_add_business_minutes() -> None:
    assert CAL.add_business_minutes(msk(2026, 1, 13, 18, 45), 15) == msk(2026, 1, 13, 19, 0)
    assert CAL.add_business_minutes(msk(2026, 1, 13, 10, 0), 9 * 60 + 1) == msk(2026, 1, 14, 10, 1)
    assert CAL.add_business_minutes(msk(2026, 1, 13, 7, 0), 0) == msk(2026, 1, 13, 10, 0)
    with pytest.raises(ValueError, match="minutes must be >= 0"):
        CAL.add_business_minutes(msk(2026, 1, 13, 12, 0), -1)


def test_reaction_minutes_setting() -> None:
    cal = BusinessCalendar(CalendarSettings(reaction_minutes=0))
    assert cal.classify(msk(2026, 1, 13, 12, 0)).sla_due_at == msk(2026, 1, 13, 12, 0)
    cal = BusinessCalendar(CalendarSettings(reaction_minutes=120))
    assert cal.classify(msk(2026, 1, 13, 18, 0)).sla_due_at == msk(2026, 1, 14, 11, 0)
    with pytest.raises(ValidationError, match="reaction_minutes"):
        CalendarSettings(reaction_minutes=-5)


# --- time zones -----------------------------------------------------------------------------


def test_non_moscow_input_is_converted() -> None:
    # 09:30 in Yekaterinburg (UTC+5) is 07:30 in Moscow: closed.
    ekb = datetime(2026, 1, 13, 9, 30, tzinfo=ZoneInfo("Asia/Yekaterinburg"))
    result = CAL.classify(ekb)
    assert result.after_hours
    assert result.next_open_at == msk(2026, 1, 13, 10, 0)
    # 07:30 UTC is 10:30 MSK: open.
    assert CAL.is_open(datetime(2026, 1, 13, 7, 30, tzinfo=UTC))
    # 2026-01-11 22:00 UTC is already Monday 2026-01-12 01:00 in Moscow.
    late = CAL.classify(datetime(2026, 1, 11, 22, 0, tzinfo=UTC))
    assert late.reason == "outside hours: 10:00–19:00"
    assert late.next_open_at == msk(2026, 1, 12, 10, 0)


def test_other_calendar_timezone() -> None:
    cal = BusinessCalendar(CalendarSettings(timezone="Asia/Novosibirsk"))
    assert str(cal.tz) == "Asia/Novosibirsk"
    # 10:00 MSK is 14:00 in Novosibirsk.
    assert cal.is_open(msk(2026, 1, 13, 10, 0))
    assert not cal.is_open(msk(2026, 1, 13, 15, 30))  # 19:30 local
    assert cal.next_open(msk(2026, 1, 13, 15, 30)).isoformat() == "2026-01-14T10:00:00+07:00"


def test_naive_datetime_rejected() -> None:
    naive = datetime(2026, 1, 13, 12, 0)
    for call in (CAL.is_open, CAL.next_open, CAL.classify):
        with pytest.raises(ValueError, match="naive datetime"):
            call(naive)
    with pytest.raises(ValueError, match="naive datetime"):
        CAL.add_business_minutes(naive, 5)


def test_unknown_timezone_rejected() -> None:
    with pytest.raises(ValidationError, match="unknown IANA time zone 'Europe/Moskow'"):
        CalendarSettings(timezone="Europe/Moskow")


# --- overrides ------------------------------------------------------------------------------


def test_extra_holidays_and_workdays() -> None:
    cal = BusinessCalendar(
        CalendarSettings(
            extra_holidays={date(2026, 12, 30): "Корпоратив"},
            extra_workdays=[date(2026, 1, 9), date(2026, 12, 26)],
        )
    )
    assert cal.day_off_reason(date(2026, 12, 30)) == "holiday: Корпоратив"
    result = cal.classify(msk(2026, 12, 30, 12, 0))
    assert result.reason == "holiday: Корпоратив"
    assert result.next_open_at == msk(2027, 1, 11, 10, 0)
    # An official transferred day off made a working day by the company.
    assert cal.day_off_reason(date(2026, 1, 9)) is None
    assert cal.is_open(msk(2026, 1, 9, 12, 0))
    assert cal.next_open(msk(2026, 1, 5, 12, 0)) == msk(2026, 1, 9, 10, 0)
    # A Saturday made a working day takes ordinary weekday hours.
    assert cal.is_open(msk(2026, 12, 26, 10, 0))
    assert not cal.is_open(msk(2026, 12, 26, 19, 0))
    # The default calendar is untouched.
    assert CAL.day_off_reason(date(2026, 1, 9)) is not None


def test_date_in_both_override_lists_is_rejected() -> None:
    with pytest.raises(ValidationError, match="both in extra_holidays and extra_workdays"):
        CalendarSettings(extra_holidays={date(2026, 6, 1): "x"}, extra_workdays=[date(2026, 6, 1)])


def test_unknown_country_rejected() -> None:
    with pytest.raises(ValidationError, match="Country XX not available"):
        CalendarSettings(country="XX")


# --- per-channel hours and personal schedules ----------------------------------------------

PHONE = WeeklyHours(
    mon=["09:00-21:00"],
    tue=["09:00-21:00"],
    wed=["09:00-21:00"],
    thu=["09:00-21:00"],
    fri=["09:00-21:00"],
    sat=["11:00-16:00"],
)


def test_channel_hours_override() -> None:
    cal = BusinessCalendar(CalendarSettings(channels={"phone": PHONE}))
    at = msk(2026, 1, 13, 20, 0)
    assert cal.is_open(at, "phone")
    assert not cal.is_open(at, "chat")
    assert not cal.is_open(at)
    assert cal.classify(at, "chat").reason == "outside hours: 10:00–19:00"
    assert cal.classify(msk(2026, 1, 13, 21, 0), "phone").reason == "outside hours: 09:00–21:00"
    # Saturday hours for the phone only: ordinary Saturdays open, holidays still close it.
    assert cal.is_open(msk(2026, 1, 17, 12, 0), "phone")
    assert not cal.is_open(msk(2026, 1, 17, 12, 0))
    assert cal.is_open(msk(2026, 1, 10, 12, 0), "phone")
    assert cal.classify(msk(2026, 1, 10, 12, 0)).reason == "weekend: суббота"
    assert cal.classify(msk(2026, 1, 10, 16, 0), "phone").reason == "outside hours: 11:00–16:00"
    assert cal.classify(msk(2026, 1, 3, 12, 0), "phone").reason == ("holiday: Новогодние каникулы")
    assert cal.next_open(msk(2026, 1, 3, 12, 0), "phone") == msk(2026, 1, 10, 11, 0)
    assert cal.next_open(msk(2026, 1, 3, 12, 0)) == msk(2026, 1, 12, 10, 0)


def test_unknown_channel_in_settings_rejected() -> None:
    with pytest.raises(ValidationError, match="unknown channel"):
        CalendarSettings(channels={"phnoe": PHONE})


def test_with_hours_personal_schedule() -> None:
    base = BusinessCalendar(CalendarSettings(channels={"phone": PHONE}))
    seller = base.with_hours(WeeklyHours(tue=["12:00-14:00", "15:00-20:00"], thu=["12:00-20:00"]))
    assert seller.tz == base.tz
    assert not seller.is_open(msk(2026, 1, 12, 12, 0))  # Monday: not this seller's day
    assert seller.classify(msk(2026, 1, 12, 12, 0)).reason == (
        "outside hours: нерабочий день по графику (понедельник)"
    )
    assert seller.is_open(msk(2026, 1, 13, 19, 30))
    assert not seller.is_open(msk(2026, 1, 13, 14, 30))
    assert seller.classify(msk(2026, 1, 13, 14, 30)).reason == (
        "outside hours: 12:00–14:00, 15:00–20:00"
    )
    # Business minutes skip the lunch gap, then the Wednesday off.
    assert seller.add_business_minutes(msk(2026, 1, 13, 13, 50), 20) == msk(2026, 1, 13, 15, 10)
    assert seller.add_business_minutes(msk(2026, 1, 13, 19, 50), 20) == msk(2026, 1, 15, 12, 10)
    # Holidays are shared; the channel override is not (the schedule is the seller's own).
    assert seller.next_open(msk(2026, 1, 1, 0, 0), "phone") == msk(2026, 1, 13, 12, 0)
    assert base.is_open(msk(2026, 1, 12, 12, 0))


def test_calendar_without_working_time_is_refused_by_config() -> None:
    with pytest.raises(ValidationError, match="no working hours on any day"):
        CalendarSettings(hours=WeeklyHours())
    with pytest.raises(ValidationError, match="have no working hours"):
        CalendarSettings(channels={"chat": WeeklyHours()})


def test_calendar_without_working_time_raises() -> None:
    # Only reachable through with_hours (a seller's schedule): the roster skips such sellers.
    cal = BusinessCalendar(CalendarSettings()).with_hours(WeeklyHours())
    at = msk(2026, 1, 13, 12, 0)
    assert not cal.is_open(at)
    for call in (cal.next_open, cal.classify):
        with pytest.raises(ValueError, match="no working time in the next 366 days"):
            call(at)
    with pytest.raises(ValueError, match="no working time in the next 366 days"):
        cal.add_business_minutes(at, 15)


def test_round_the_clock_windows_are_contiguous() -> None:
    always = ["00:00-24:00"]
    cal = BusinessCalendar(
        CalendarSettings(hours=WeeklyHours(mon=always, tue=always, wed=always, thu=always))
    )
    assert cal.is_open(msk(2026, 1, 13, 23, 59, 59))
    assert cal.add_business_minutes(msk(2026, 1, 13, 23, 50), 20) == msk(2026, 1, 14, 0, 10)


# --- CLI ------------------------------------------------------------------------------------


def cli_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="leadgate")
    calendar_cli.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["calendar", *argv])


def test_cli_text_closed(capsys: pytest.CaptureFixture[str]) -> None:
    code = calendar_cli.run(cli_args("--at", "2026-01-05T12:00"), CalendarSettings())
    assert code == 0
    assert capsys.readouterr().out == (
        "2026-01-05 12:00 MSK (понедельник): закрыто — holiday: Новогодние каникулы; "
        "откроется 2026-01-12 10:00 (понедельник); реакция до 2026-01-12 10:15 (понедельник)\n"
    )


def test_cli_text_open_with_offset_input(capsys: pytest.CaptureFixture[str]) -> None:
    code = calendar_cli.run(cli_args("--at", "2026-01-13T09:00:00Z"), CalendarSettings())
    assert code == 0
    assert capsys.readouterr().out == (
        "2026-01-13 12:00 MSK (вторник): открыто до 19:00; реакция до 2026-01-13 12:15 (вторник)\n"
    )


def test_cli_text_channel(capsys: pytest.CaptureFixture[str]) -> None:
    settings = CalendarSettings(channels={"phone": PHONE})
    calendar_cli.run(cli_args("--at", "2026-01-13 20:00", "--channel", "phone"), settings)
    assert capsys.readouterr().out.startswith(
        "2026-01-13 20:00 MSK (вторник) [phone]: открыто до 21:00;"
    )


def test_cli_json(capsys: pytest.CaptureFixture[str]) -> None:
    args = cli_args("--at", "2025-12-30T19:30", "--channel", "chat", "--json")
    assert calendar_cli.run(args, CalendarSettings()) == 0
    assert json.loads(capsys.readouterr().out) == {
        "at": "2025-12-30T19:30:00+03:00",
        "open": False,
        "reason": "outside hours: 10:00–19:00",
        "next_open_at": "2026-01-12T10:00:00+03:00",
        "sla_due_at": "2026-01-12T10:15:00+03:00",
        "channel": "chat",
        "timezone": "Europe/Moscow",
    }


def test_cli_json_open_and_default_now(capsys: pytest.CaptureFixture[str]) -> None:
    assert calendar_cli.run(cli_args("--json"), CalendarSettings()) == 0
    payload = json.loads(capsys.readouterr().out)
    at = datetime.fromisoformat(payload["at"])
    assert abs(at - datetime.now(MSK)) < timedelta(minutes=1)
    assert payload["open"] is CAL.is_open(at)
    assert payload["channel"] is None


def test_cli_rejects_bad_iso(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli_args("--at", "yesterday")
    assert "expected ISO 8601" in capsys.readouterr().err


def test_a_window_from_midnight_does_not_make_closed_moments_open() -> None:
    """Found in review: on a later day the walk's cursor is midnight, so a window opening at
    00:00 looked like "open now" at a closed moment (a Saturday, a holiday)."""
    days = {d: ["00:00-24:00"] for d in ("mon", "tue", "wed", "thu", "fri")}
    cal = BusinessCalendar(CalendarSettings(channels={"chat": WeeklyHours(**days)}))
    saturday = cal.classify(msk(2025, 3, 15, 12, 0), "chat")
    assert saturday.after_hours
    assert saturday.next_open_at == msk(2025, 3, 17, 0, 0)
    holiday = cal.classify(msk(2026, 1, 1, 12, 0), "chat")
    assert holiday.after_hours and holiday.next_open_at == msk(2026, 1, 12, 0, 0)
    assert not cal.is_open(msk(2025, 3, 15, 12, 0), "chat")
    assert cal.next_open(msk(2025, 3, 17, 5, 0), "chat") == msk(2025, 3, 17, 5, 0)


def test_windows_with_offsets_are_refused() -> None:
    with pytest.raises(ValidationError, match="without an offset"):
        WeeklyHours(mon=["10:00Z-19:00"])
