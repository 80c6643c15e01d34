"""Messages for people that are read in more than one place and language.

A readiness problem or a connector's status line is written once, as a Russian msgid with
parameters (`Text(N_("{box}: нет соединения с {since}"), box=..., since=...)`). It is a
`str`: its value is the English text, which is what /readyz, logs and tests read (English
is the API's language). The /ops page shows it in the reader's language with `localized`.
Parameters that are datetimes are written in the reader's time zone on the page, in UTC
in the English value; parameters that are Texts are localized with it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, tzinfo
from typing import Any

from gateway.i18n import gettext_for


def _param(value: Any, locale: str, tz: tzinfo | None) -> Any:
    if isinstance(value, Text):
        return value.localized(locale, tz)
    if isinstance(value, datetime):
        if tz is None:
            return f"{value.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"
        return f"{value.astimezone(tz):%Y-%m-%d %H:%M:%S}"
    return value


class Text(str):
    """A translatable message whose str value is its English text."""

    msgid: str
    params: Mapping[str, Any]

    def __new__(cls, msgid: str, **params: Any) -> Text:
        english = gettext_for("en")(msgid).format(
            **{k: _param(v, "en", None) for k, v in params.items()}
        )
        made = super().__new__(cls, english)
        made.msgid = msgid
        made.params = params
        return made

    def localized(self, locale: str, tz: tzinfo | None = None) -> str:
        values = {k: _param(v, locale, tz) for k, v in self.params.items()}
        return gettext_for(locale)(self.msgid).format(**values)


def localized(text: str, locale: str, tz: tzinfo | None = None) -> str:
    """A Text in the reader's language; any other string as it is."""
    return text.localized(locale, tz) if isinstance(text, Text) else text


class Joined(Text):
    """Several messages as one ("a; b"), each localized on its own."""

    parts: tuple[str, ...]
    sep: str

    def __new__(cls, parts: Sequence[str], sep: str = "; ") -> Joined:
        made = str.__new__(cls, sep.join(parts))
        made.msgid, made.params, made.parts, made.sep = "", {}, tuple(parts), sep
        return made

    def localized(self, locale: str, tz: tzinfo | None = None) -> str:
        return self.sep.join(localized(part, locale, tz) for part in self.parts)


def joined(parts: Sequence[str], sep: str = "; ") -> str | None:
    """The parts as one message, or None when there are none."""
    return Joined(parts, sep) if parts else None
