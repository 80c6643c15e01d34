"""What chat connectors register with the core, and the after-hours answer's words.

A chat connector registers, through its ConnectorContext:
- its channel's MessageSender: `ctx.chats.register_sender(Channel.X, sender)`;
- per account (a bot, a community), optionally, its own after-hours policy:
  `ctx.chats.register_account(Channel.X, "shop", ChatAccount(after_hours_text={...}))`;
- its inbox handler: `ctx.inbox.register("x", handler)` (gateway.inbox).

The pipeline asks `after_hours_text` when it plans a chat message that came after hours;
the message worker asks `senders` who sends a queued message.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from gateway.chat_settings import ConversationSettings, check_answer_texts
from gateway.conversations import MessageSender
from gateway.i18n import DEFAULT_LOCALE, N_, chat_locale, describe_opening, gettext_for
from gateway.models import Channel

DEFAULT_AFTER_HOURS = N_(
    "Здравствуйте! Спасибо за сообщение. Сейчас у нас нерабочее время — менеджер ответит "
    "вам {when}."
)


@dataclass(frozen=True, slots=True)
class ChatAccount:
    """One account's own after-hours policy; None keeps [conversations]' setting."""

    after_hours_answer: bool | None = None
    after_hours_text: Mapping[str, str] | None = None  # locale -> text with {when}

    def __post_init__(self) -> None:
        if self.after_hours_text is not None:
            check_answer_texts(dict(self.after_hours_text))


class Chats:
    def __init__(self, settings: ConversationSettings, tz: str) -> None:
        self.settings = settings
        self.tz = tz
        self.senders: dict[Channel, MessageSender] = {}
        self.accounts: dict[tuple[Channel, str], ChatAccount] = {}
        self._on_queue: list[Callable[[], None]] = []

    def register_sender(self, channel: Channel, sender: MessageSender) -> None:
        if channel in self.senders:
            raise ValueError(f"channel {channel.value!r} has a message sender already")
        self.senders[channel] = sender

    def register_account(self, channel: Channel, account: str, policy: ChatAccount) -> None:
        self.accounts[(channel, account)] = policy

    def on_queue(self, callback: Callable[[], None]) -> None:
        """Called whenever messages were queued (the message worker wakes up)."""
        self._on_queue.append(callback)

    def queued(self) -> None:
        for callback in self._on_queue:
            callback()

    def after_hours_text(
        self,
        channel: Channel,
        account: str,
        locale: str | None,
        next_open_at: datetime,
        now: datetime,
    ) -> str | None:
        """The after-hours answer for a customer writing to `account` in `locale`, or None
        when it is switched off there. Pure: the same arguments give the same text."""
        policy = self.accounts.get((channel, account), ChatAccount())
        enabled = policy.after_hours_answer
        if enabled is None:
            enabled = self.settings.after_hours_answer
        if not enabled:
            return None
        texts = policy.after_hours_text or self.settings.after_hours_text
        if texts:
            chosen = pick_locale(texts, locale)
            when = describe_opening(next_open_at, now, self.tz, chosen)
            return texts[chosen].format(when=when)
        catalog = chat_locale(locale)
        when = describe_opening(next_open_at, now, self.tz, catalog)
        return gettext_for(catalog)(DEFAULT_AFTER_HOURS).format(when=when)


def pick_locale(texts: Mapping[str, str], locale: str | None) -> str:
    """The configured text's locale for a customer: theirs (or its language), else Russian,
    else the first configured."""
    if locale:
        wanted = locale.replace("_", "-").lower()
        for key in texts:
            if key.replace("_", "-").lower() == wanted:
                return key
        language = wanted.split("-")[0]
        for key in texts:
            if key.replace("_", "-").lower().split("-")[0] == language:
                return key
    if DEFAULT_LOCALE in texts:
        return DEFAULT_LOCALE
    return next(iter(texts))
