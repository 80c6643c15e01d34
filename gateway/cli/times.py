"""The command line's one rule for times: local time of the calendar's time zone, with its
offset, in what it prints and in what it reads.

A seller reads Moscow time, not UTC; printing the offset makes the line unambiguous, and a
time copied from a listing (`2026-11-27 09:56 +03:00`) or typed without an offset
(`2026-11-27T09:56`, read in the calendar's zone) finds the same leads.
"""

from __future__ import annotations

import argparse
import re
from datetime import datetime, tzinfo

# "2026-11-27 09:56 +03:00" as printed: the space before the offset is ours, not ISO's.
_SPACED_OFFSET = re.compile(r"^(.*\d)\s+((?:[+-]\d{2}:?\d{2})|Z)$")


def offset(at: datetime) -> str:
    """+03:00 (Python 3.11 has no %:z)."""
    delta = at.utcoffset()
    if delta is None:
        return ""
    minutes = int(delta.total_seconds() // 60)
    sign = "-" if minutes < 0 else "+"
    hours, mins = divmod(abs(minutes), 60)
    return f"{sign}{hours:02d}:{mins:02d}"


def shown(at: datetime, tz: tzinfo, *, seconds: bool = False) -> str:
    """`2026-11-27 09:56 +03:00`: the moment in the calendar's zone, with the offset."""
    local = at.astimezone(tz)
    stamp = local.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")
    return f"{stamp} {offset(local)}"


def moment(text: str) -> datetime:
    """argparse type: ISO 8601, or a time as the listings print it. A result without an
    offset is naive here; `in_zone` places it in the calendar's zone."""
    cleaned = text.strip()
    if (m := _SPACED_OFFSET.match(cleaned)) is not None:
        cleaned = f"{m.group(1)}{m.group(2)}"
    try:
        return datetime.fromisoformat(cleaned)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"expected ISO 8601 like 2026-11-27T09:56 (the calendar's zone) or "
            f"2026-11-27T06:56Z, or a time as the lists print it (2026-11-27 09:56 +03:00); "
            f"got {text!r}"
        ) from exc


def in_zone(at: datetime | None, tz: tzinfo) -> datetime | None:
    """A time without an offset is read in the calendar's zone."""
    if at is None or at.tzinfo is not None:
        return at
    return at.replace(tzinfo=tz)
