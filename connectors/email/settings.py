"""The `[email]` config section: mailboxes to read, the SMTP server to answer through, and
the auto-reply text.

Declared by connectors.email.spec; the core assembles it into the settings model.
Passwords are SecretStr: they print as '**********' and never reach a log or an error.
"""

from __future__ import annotations

import re
import string
from pathlib import Path
from typing import Annotated, Literal

from babel import Locale, UnknownLocaleError
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from gateway.identity import normalize_email

Security = Literal["ssl", "starttls", "plain"]

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
_PLACEHOLDERS = frozenset({"greeting", "name", "when", "subject"})

DEFAULT_AFTER_HOURS_TEXT = """{greeting}

Спасибо за письмо, мы его получили. Сейчас у нас нерабочее время: менеджер ответит вам {when}.

Это автоматический ответ, отвечать на него не нужно. Если хотите что-то добавить к своему \
обращению, просто напишите нам ещё раз."""

DEFAULT_WORKING_HOURS_TEXT = """{greeting}

Спасибо за письмо, мы его получили. Менеджер ответит вам в ближайшее время.

Это автоматический ответ, отвечать на него не нужно."""


def _readable_file(path: Path) -> Path:
    # Checked when the config is read (check-config names the key): otherwise a mistyped
    # path shows up only as a failing TLS handshake, retried forever.
    if not path.is_file():
        raise ValueError(f"file not found: {path}")
    try:
        path.open("rb").close()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    return path


CaFile = Annotated[Path, AfterValidator(_readable_file)]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class MailboxSettings(_Section):
    """One IMAP account; each folder is read over its own connection (IDLE watches one)."""

    host: str = Field(min_length=1)
    port: int | None = Field(None, ge=1, le=65535)  # default: 993 for ssl, else 143
    security: Security = "ssl"
    username: str = Field(min_length=1)
    password: SecretStr
    folders: list[str] = Field(default_factory=lambda: ["INBOX"], min_length=1)
    # A private CA for your own server; public servers are checked against the system store.
    ca_file: CaFile | None = None
    idle: bool = True  # use IDLE when the server offers it; otherwise poll
    # RFC 2177: servers may drop an IDLE after 30 minutes, so it is re-issued before that.
    # Re-issued sooner, with a fetch in between: that also proves a quiet connection alive.
    idle_minutes: float = Field(10.0, gt=0, le=29)
    poll_seconds: float = Field(60.0, ge=0.05)
    timeout_seconds: float = Field(60.0, gt=0)
    batch_size: int = Field(25, ge=1, le=1000)
    # On the very first read of a folder, take mail received in the last N days (by the
    # server's arrival date); None takes the whole folder. Later reads take all new mail.
    first_sync_days: int | None = Field(3, ge=0)
    # Bigger messages become a lead from their headers only (the body stays in the mailbox).
    max_message_mb: float = Field(50.0, gt=0)
    # /readyz degrades when a folder has not been read successfully for this long.
    stale_minutes: float = Field(30.0, gt=0)
    backoff_max_seconds: float = Field(300.0, ge=0.05)

    @property
    def effective_port(self) -> int:
        if self.port is not None:
            return self.port
        return 993 if self.security == "ssl" else 143

    @model_validator(mode="after")
    def _stale_after_a_read_cycle(self) -> MailboxSettings:
        # A healthy folder is read once per IDLE period (or poll): /readyz would flap if
        # that cycle were longer than what it calls stale.
        cycle = max(self.idle_minutes if self.idle else 0.0, self.poll_seconds / 60)
        if self.stale_minutes <= cycle:
            raise ValueError(
                f"stale_minutes ({self.stale_minutes:g}) must be longer than one read cycle"
                f" (idle_minutes / poll_seconds: {cycle:g} min)"
            )
        return self

    @field_validator("folders")
    @classmethod
    def _unique_folders(cls, folders: list[str]) -> list[str]:
        if len(set(folders)) != len(folders):
            raise ValueError("a folder is listed twice")
        if any(not f.strip() for f in folders):
            raise ValueError("a folder name is empty")
        return folders


class SmtpSettings(_Section):
    """Where auto-replies are sent through: usually the same account's SMTP server."""

    host: str = Field(min_length=1)
    port: int | None = Field(None, ge=1, le=65535)  # default: 465 ssl, 587 starttls, 25 plain
    security: Security = "ssl"
    username: str | None = None
    password: SecretStr | None = None
    from_address: str
    from_name: str | None = None
    ca_file: CaFile | None = None
    timeout_seconds: float = Field(30.0, gt=0)

    @property
    def effective_port(self) -> int:
        if self.port is not None:
            return self.port
        return {"ssl": 465, "starttls": 587, "plain": 25}[self.security]

    @field_validator("from_address")
    @classmethod
    def _address(cls, value: str) -> str:
        normalized = normalize_email(value)
        if normalized is None:
            raise ValueError("not an email address")
        return normalized


class AutoReplySettings(_Section):
    """The polite answer to a new lead. Placeholders: {greeting} («Здравствуйте, Иван!»),
    {name} (the sender's name or empty), {when} («в понедельник, 12 января, после 10:00»),
    {subject} (the customer's subject)."""

    # after_hours: only when the mail arrived outside working time; always: every new lead.
    when: Literal["after_hours", "always", "never"] = "after_hours"
    after_hours_text: str = DEFAULT_AFTER_HOURS_TEXT
    working_hours_text: str = DEFAULT_WORKING_HOURS_TEXT
    signature: str | None = None  # appended below a "-- " line
    subject_prefix: str = "Re: "
    default_subject: str = "Ваше обращение"
    greeting: str = "Здравствуйте!"
    greeting_named: str = "Здравствуйте, {name}!"
    locale: str = "ru"  # how {when} is written (babel)
    # Mail older than this when read (a first sync, a long outage) gets no auto-reply.
    max_age_hours: float = Field(12.0, gt=0)

    @field_validator("locale")
    @classmethod
    def _known_locale(cls, value: str) -> str:
        try:
            Locale.parse(value)
        except (ValueError, UnknownLocaleError) as exc:
            raise ValueError(f"unknown locale {value!r}") from exc
        return value

    @field_validator("after_hours_text", "working_hours_text", "greeting", "greeting_named")
    @classmethod
    def _known_placeholders(cls, text: str) -> str:
        try:
            used = {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
        except ValueError as exc:
            raise ValueError(f"bad braces in text: {exc}") from exc
        unknown = sorted(used - _PLACEHOLDERS)
        if unknown:
            raise ValueError(
                f"unknown placeholder(s) {unknown}; use {sorted(_PLACEHOLDERS)}"
                " (write {{ and }} for literal braces)"
            )
        return text


class EmailSettings(_Section):
    mailboxes: dict[str, MailboxSettings] = {}
    # Mail from these never becomes a lead (our own sellers, the auto-reply sender); every
    # mailbox username that is an address and the SMTP from_address are added automatically.
    own_addresses: list[str] = []
    smtp: SmtpSettings | None = None
    auto_reply: AutoReplySettings = AutoReplySettings()

    @field_validator("mailboxes")
    @classmethod
    def _names(cls, mailboxes: dict[str, MailboxSettings]) -> dict[str, MailboxSettings]:
        for name in mailboxes:
            if not _NAME.match(name):
                raise ValueError(
                    f"mailbox name {name!r}: use lower-case letters, digits, '-' and '_'"
                )
        return mailboxes

    @field_validator("own_addresses")
    @classmethod
    def _own(cls, addresses: list[str]) -> list[str]:
        out = []
        for raw in addresses:
            normalized = normalize_email(raw)
            if normalized is None:
                raise ValueError(f"{raw!r} is not an email address")
            out.append(normalized)
        return out

    def all_own_addresses(self) -> frozenset[str]:
        found = set(self.own_addresses)
        for box in self.mailboxes.values():
            if (addr := normalize_email(box.username)) is not None:
                found.add(addr)
        if self.smtp is not None:
            found.add(self.smtp.from_address)
        return frozenset(found)
