"""The `[inbox]` and `[conversations]` config sections: how pushed input is handled and
how messages to customers are sent, and the after-hours answer of chat channels.

Free of gateway.config imports (gateway.config imports this module).
"""

from __future__ import annotations

import string

from babel import Locale, UnknownLocaleError
from pydantic import BaseModel, ConfigDict, Field, field_validator

ANSWER_PLACEHOLDERS = frozenset({"when"})


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class InboxSettings(_Section):
    """Pushed input (webhooks) is stored first, then handled by the inbox worker."""

    # Tries of one entry before it is dead (kept, shown by `leadgate inbox list`).
    max_attempts: int = Field(10, ge=1, le=1000)
    backoff_initial_seconds: float = Field(1.0, gt=0, le=3600)
    backoff_max_seconds: float = Field(300.0, gt=0, le=86_400)
    # How long a worker holds the entries it took: a worker that died leaves them to
    # another after this long.
    claim_lease_seconds: float = Field(120.0, ge=5, le=3600)
    # A put wakes the worker at once; this is how often it looks anyway (retries due).
    poll_seconds: float = Field(5.0, gt=0, le=3600)
    batch_size: int = Field(10, ge=1, le=500)
    # Handled entries are forgotten after this many days (0: kept for good). A vendor's
    # repeat after that is handled again, which replays its events and makes nothing new.
    keep_done_days: int = Field(30, ge=0)


def check_answer_text(text: str) -> str:
    try:
        used = {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
    except ValueError as exc:
        raise ValueError(f"bad braces in text: {exc}") from None
    unknown = sorted(used - ANSWER_PLACEHOLDERS)
    if unknown:
        raise ValueError(
            f"unknown placeholder(s) {unknown}; use {{when}} (write {{{{ and }}}} for braces)"
        )
    return text


def check_locale_texts(texts: dict[str, str]) -> dict[str, str]:
    """Texts by locale ("ru", "en"): known locales, none empty."""
    for locale, text in texts.items():
        try:
            Locale.parse(locale.replace("-", "_"))
        except (ValueError, UnknownLocaleError) as exc:
            raise ValueError(f"unknown locale {locale!r}") from exc
        if not text.strip():
            raise ValueError(f"the {locale!r} text is empty")
    return texts


def check_answer_texts(texts: dict[str, str]) -> dict[str, str]:
    """Answer texts by locale: known locales, not empty, only the {when} placeholder."""
    for text in check_locale_texts(texts).values():
        check_answer_text(text)
    return texts


class ConversationSettings(_Section):
    """Chat channels: the after-hours answer, and how messages to customers are sent."""

    # Outside working time the first message of a conversation gets one answer per closed
    # period saying when we open. A channel account may switch it off for itself.
    after_hours_answer: bool = True
    # The answer by locale, with {when} («в понедельник, 12 января, после 10:00»); the
    # customer's locale is used when given, else "ru", else the first. Empty: the built-in
    # text, translated where a catalog exists.
    after_hours_text: dict[str, str] = {}
    # Sending (the message worker): tries of a message before it is given up.
    max_attempts: int = Field(8, ge=1, le=1000)
    backoff_initial_seconds: float = Field(2.0, gt=0, le=3600)
    backoff_max_seconds: float = Field(600.0, gt=0, le=86_400)
    claim_lease_seconds: float = Field(60.0, ge=5, le=3600)
    poll_seconds: float = Field(5.0, gt=0, le=3600)
    batch_size: int = Field(20, ge=1, le=500)
    # When a channel refuses our credentials, sending on that account stops; it tries
    # again this often.
    halt_probe_seconds: float = Field(300.0, gt=0, le=86_400)

    @field_validator("after_hours_text")
    @classmethod
    def _texts(cls, texts: dict[str, str]) -> dict[str, str]:
        return check_answer_texts(texts)
