"""The `[telegram]` config section: the bots, how each gets its updates, and its texts.

Declared by connectors.telegram.spec; the core assembles it into the settings model.
Tokens and secrets are SecretStr: they print as '**********' and never reach a log.
"""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from gateway.chat_settings import check_answer_texts, check_locale_texts
from gateway.secret_rules import check_optional_secret

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
# Telegram's own rule for setWebhook's secret_token: 1-256 of A-Z, a-z, 0-9, _ and -.
SECRET_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
# "<bot id>:<secret>", as BotFather hands it out.
_TOKEN = re.compile(r"^\d{1,20}:[A-Za-z0-9_-]{20,100}$")
# What a bot asks Telegram for: the rest (channel posts, polls, ...) is never a lead.
DEFAULT_UPDATES = ["message", "edited_message", "my_chat_member"]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class BotSettings(_Section):
    """One bot from @BotFather."""

    token: SecretStr
    # webhook: Telegram posts updates to POST /v1/telegram/NAME (needs a public HTTPS URL
    # and secret_token). polling: leadgate asks for them (getUpdates), for installations
    # without a public URL; one replica polls (a singleton task).
    mode: Literal["webhook", "polling"] = "webhook"
    # Sent back by Telegram in X-Telegram-Bot-Api-Secret-Token on every update; the
    # webhook refuses updates without it. Required in webhook mode.
    secret_token: SecretStr | None = None
    # The public URL `leadgate telegram set-webhook NAME` registers when --url is not given,
    # e.g. https://leads.example.ru/v1/telegram/shop
    webhook_url: str | None = None
    # A self-hosted Bot API server (https://github.com/tdlib/telegram-bot-api) instead of
    # https://api.telegram.org.
    api_base: str | None = None
    allowed_updates: list[str] = Field(default_factory=lambda: list(DEFAULT_UPDATES))
    max_connections: int = Field(40, ge=1, le=100)
    # Long polling: how long one getUpdates waits for news (Telegram keeps it open).
    poll_timeout_seconds: int = Field(25, ge=0, le=50)
    request_timeout_seconds: float = Field(30.0, gt=0, le=300)
    # Answer to /start, by locale ({ ru = "...", en = "..." }); empty: the built-in text.
    start_text: dict[str, str] = {}
    # None: [conversations] decides; a bot may switch the answer off or word it itself.
    after_hours_answer: bool | None = None
    after_hours_text: dict[str, str] = {}
    # Messages per second this bot sends at most (Telegram: about 30 overall).
    send_rate: float = Field(25.0, gt=0, le=1000)

    @field_validator("token")
    @classmethod
    def _token_shape(cls, value: SecretStr) -> SecretStr:
        if not _TOKEN.match(value.get_secret_value()):
            raise ValueError("not a bot token (BotFather gives '123456789:AA...')")
        return value

    @field_validator("secret_token")
    @classmethod
    def _secret_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not SECRET_TOKEN.match(value.get_secret_value()):
            raise ValueError("1 to 256 characters of A-Z, a-z, 0-9, _ and - (Telegram's rule)")
        return check_optional_secret(value)

    @field_validator("webhook_url", "api_base")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("an http(s) URL")
        return value.rstrip("/")

    @field_validator("after_hours_text")
    @classmethod
    def _texts(cls, texts: dict[str, str]) -> dict[str, str]:
        return check_answer_texts(texts)

    @field_validator("start_text")
    @classmethod
    def _start_texts(cls, texts: dict[str, str]) -> dict[str, str]:
        return check_locale_texts(texts)  # sent as written: no placeholders

    @model_validator(mode="after")
    def _webhook_needs_a_secret(self) -> BotSettings:
        # Telegram signs nothing: without the secret anyone who finds the URL can post
        # "updates" that become leads.
        if self.mode == "webhook" and self.secret_token is None:
            raise ValueError(
                "webhook mode needs secret_token (1-256 of A-Za-z0-9_-): Telegram sends it "
                "back with every update, and it is the only proof an update is Telegram's"
            )
        return self


class TelegramSettings(_Section):
    bots: dict[str, BotSettings] = {}

    @field_validator("bots")
    @classmethod
    def _names(cls, bots: dict[str, BotSettings]) -> dict[str, BotSettings]:
        for name in bots:
            if not _NAME.match(name):
                raise ValueError(f"bot name {name!r}: use lower-case letters, digits, '-' and '_'")
        tokens = [b.token.get_secret_value() for b in bots.values()]
        if len(set(tokens)) != len(tokens):
            raise ValueError("two bots have the same token")
        return bots
