"""`leadgate calendar --at ISO [--channel C] [--json]`: what the gateway decides at a moment."""

from __future__ import annotations

import argparse
import json
from datetime import datetime

from gateway.calendar import WEEKDAYS_RU, BusinessCalendar, CalendarSettings
from gateway.cli.times import moment
from gateway.models import Channel


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "calendar",
        help="show whether the gateway is open at a moment, and when it opens next",
        description="Classify a moment with the configured business calendar.",
    )
    parser.add_argument(
        "--at",
        type=moment,
        default=None,
        metavar="ISO",
        help="moment to check (ISO 8601; without an offset it is read in the calendar "
        "time zone; default: now)",
    )
    channels = [c.value for c in Channel]
    parser.add_argument(
        "--channel",
        choices=channels,
        default=None,
        metavar="CHANNEL",
        help="use this channel's hours if [calendar.channels] overrides them "
        f"({', '.join(channels)})",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _stamp(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M} ({WEEKDAYS_RU[moment.weekday()]})"


def run(args: argparse.Namespace, calendar_settings: CalendarSettings) -> int:
    calendar = BusinessCalendar(calendar_settings)
    at: datetime | None = args.at
    if at is None:
        at = datetime.now(calendar.tz)
    elif at.tzinfo is None:
        at = at.replace(tzinfo=calendar.tz)
    at = at.astimezone(calendar.tz)
    channel: str | None = args.channel
    result = calendar.classify(at, channel)

    if args.json:
        payload = {
            "at": at.isoformat(),
            "open": not result.after_hours,
            "reason": result.reason,
            "next_open_at": result.next_open_at.isoformat() if result.next_open_at else None,
            "sla_due_at": result.sla_due_at.isoformat(),
            "channel": channel,
            "timezone": calendar_settings.timezone,
        }
        print(json.dumps(payload, ensure_ascii=False))
        return 0

    head = f"{at:%Y-%m-%d %H:%M} {at.tzname()} ({WEEKDAYS_RU[at.weekday()]})"
    if channel:
        head += f" [{channel}]"
    if result.next_open_at is None:
        until = calendar.open_until(at, channel)
        state = f"открыто до {until:%H:%M}" if until is not None else "открыто"
    else:
        state = f"закрыто — {result.reason}; откроется {_stamp(result.next_open_at)}"
    print(f"{head}: {state}; реакция до {_stamp(result.sla_due_at)}")
    return 0
