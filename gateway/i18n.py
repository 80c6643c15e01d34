"""Customer-facing text: Russian first (the msgids are Russian), other languages by catalog.

Catalogs are gettext .po files under gateway/locale/<lang>/LC_MESSAGES/leadgate.po, compiled
in memory at first use so no build step is needed. The strings marked with `_()`/`N_()`
are collected by (tests/test_i18n.py checks it was run):
    pybabel extract -F babel.cfg -k N_ -k _ --no-location --omit-header \
        -o gateway/locale/leadgate.pot .
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from babel import Locale, UnknownLocaleError
from babel.dates import format_datetime, format_skeleton, format_time
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations

LOCALE_DIR = Path(__file__).parent / "locale"
DOMAIN = "leadgate"
DEFAULT_LOCALE = "ru"


def N_(message: str) -> str:
    """Mark a string for extraction where it is translated later."""
    return message


@functools.cache
def available() -> tuple[str, ...]:
    found = [p.name for p in LOCALE_DIR.iterdir() if (p / "LC_MESSAGES" / f"{DOMAIN}.po").exists()]
    return (DEFAULT_LOCALE, *sorted(found))


@functools.cache
def translations(locale: str) -> NullTranslations:
    po = LOCALE_DIR / locale / "LC_MESSAGES" / f"{DOMAIN}.po"
    if locale == DEFAULT_LOCALE or not po.exists():
        return NullTranslations()
    with po.open("rb") as fh:
        catalog = read_po(fh, locale=locale)
    buf = io.BytesIO()
    write_mo(buf, catalog)
    buf.seek(0)
    return Translations(fp=buf, domain=DOMAIN)


@functools.lru_cache(maxsize=1024)
def negotiate(accept_language: str | None) -> str:
    """The best locale we have for an Accept-Language header; Russian when unsure.

    Cached: browsers repeat the same header verbatim, and negotiating costs ~4 us a form post.
    """
    if not accept_language:
        return DEFAULT_LOCALE
    wanted = []
    for part in accept_language.split(","):
        tag, _, q = part.strip().partition(";q=")
        try:
            weight = float(q) if q else 1.0
        except ValueError:
            weight = 0.0
        if tag and tag != "*":
            wanted.append((weight, tag.replace("-", "_")))
    wanted.sort(key=lambda pair: -pair[0])
    found = Locale.negotiate([tag for _, tag in wanted], list(available()), sep="_")
    return str(found) if found else DEFAULT_LOCALE


def gettext_for(locale: str) -> Callable[[str], str]:
    return translations(locale).gettext


def format_when(at: datetime, locale: str, tz: str) -> str:
    """A moment as a person reads it in their language: «понедельник, 12 января, 10:00»."""
    return format_datetime(at, "EEEE, d MMMM, HH:mm", tzinfo=ZoneInfo(tz), locale=locale)


# «в понедельник», «во вторник»: the preposition changes with the day, so each is a string.
WEEKDAYS_AT = (
    N_("в понедельник"),
    N_("во вторник"),
    N_("в среду"),
    N_("в четверг"),
    N_("в пятницу"),
    N_("в субботу"),
    N_("в воскресенье"),
)


def chat_locale(tag: str | None) -> str:
    """The catalog locale for a language tag a chat vendor gives ("en-US", "uk", None):
    ours when we have it, else Russian."""
    return negotiate(tag) if tag else DEFAULT_LOCALE


def describe_opening(at: datetime, now: datetime, tz: str, locale: str) -> str:
    """When we open, as a person says it: «в понедельник, 12 января, после 10:00»,
    «сегодня после 10:00»; words from the `locale` catalog, the date by babel."""
    return _describe(at, now, tz, locale, _OPENING)


def describe_deadline(at: datetime, now: datetime, tz: str, locale: str) -> str:
    """By when we act, as a person says it: «сегодня до 12:15», «в понедельник, 11 января
    2027 г., до 10:14» (a promise made just before closing falls on the next working day,
    and a bare «до 10:14» would read as tomorrow)."""
    return _describe(at, now, tz, locale, _DEADLINE)


# (the same day, another day): «после» for when we open, «до» for a deadline.
_OPENING = (N_("сегодня после {time}"), N_("{weekday}, {date}, после {time}"))
_DEADLINE = (N_("сегодня до {time}"), N_("{weekday}, {date}, до {time}"))


def _describe(at: datetime, now: datetime, tz: str, locale: str, words: tuple[str, str]) -> str:
    fmt = chat_locale(locale)
    zone = ZoneInfo(tz)
    local = at.astimezone(zone)
    language = locale.replace("-", "_").split("_")[0].lower()
    if fmt.split("_")[0] != language:
        # No catalog of ours (an operator's German text): babel's own words, all German.
        try:
            return format_datetime(local, "EEEE, d MMMM, HH:mm", locale=language)
        except (ValueError, UnknownLocaleError):
            pass  # not a language babel knows either: Russian, as for no locale at all
    _ = gettext_for(fmt)
    today = now.astimezone(zone).date()
    clock = format_time(local, "HH:mm", locale=fmt)
    same_day, other_day = words
    if local.date() == today:
        return _(same_day).format(time=clock)
    skeleton = "MMMMd" if local.year == today.year else "yMMMMd"
    day = format_skeleton(skeleton, local, locale=fmt)
    weekday = _(WEEKDAYS_AT[local.weekday()])
    return _(other_day).format(weekday=weekday, date=day, time=clock)
