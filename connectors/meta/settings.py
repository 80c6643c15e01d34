"""The `[meta]` config section: the Meta app's secrets, the Pages and Instagram accounts it
serves, and how the Graph API is called.

Declared by connectors.meta.spec; the core assembles it into the settings model. Tokens
and the app secret are SecretStr: they print as '**********' and never reach a log.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from gateway.secret_rules import check_optional_secret

# Meta's object ids are decimal digits (pages, Instagram accounts, PSIDs, leads).
_ID = re.compile(r"^[0-9]{1,32}$")
_VERSION = re.compile(r"^v[0-9]{1,3}\.[0-9]{1,2}$")


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _check_id(value: str) -> str:
    if not _ID.fullmatch(value):
        raise ValueError(f"{value!r} is not a Meta id (decimal digits)")
    return value


def _int_as_text(value: Any) -> Any:
    # `id = 153125381133` in TOML is an integer; the id is the same written as a string.
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


MetaId = Annotated[str, BeforeValidator(_int_as_text), AfterValidator(_check_id)]


class PageSettings(_Section):
    """A Facebook Page: its Messenger conversations and its Lead Ads forms."""

    id: MetaId
    # A Page access token with pages_messaging (and leads_retrieval for Lead Ads).
    token: SecretStr
    # Ask the Graph API for the names of people who write (User Profile API).
    fetch_names: bool = True


class InstagramApi(StrEnum):
    """The two ways Meta lets an app message for an Instagram professional account."""

    # Instagram Messaging through the linked Facebook Page: graph.facebook.com, Page token,
    # POST /me/messages.
    PAGE = "page"
    # Instagram API with Instagram Login (since July 2024, no Page needed):
    # graph.instagram.com, Instagram user token, POST /{account id}/messages.
    INSTAGRAM_LOGIN = "instagram_login"


class InstagramSettings(_Section):
    """An Instagram professional account: its Direct conversations."""

    id: MetaId
    token: SecretStr
    api: InstagramApi = InstagramApi.PAGE
    fetch_names: bool = True


class MetaSettings(_Section):
    # App Dashboard -> App settings -> Basic -> App secret: the key of X-Hub-Signature-256.
    app_secret: SecretStr | None = None
    # The string typed into the Verify Token field when the webhook URL is set up.
    verify_token: SecretStr | None = None
    graph_api_version: str = "v25.0"
    # Where the Graph API answers; tests point these at a local stand-in.
    graph_base: str = "https://graph.facebook.com"
    instagram_graph_base: str = "https://graph.instagram.com"
    graph_timeout_seconds: float = Field(20.0, gt=0, le=300)
    # The longest a message waits for its sender's name (the lead goes on without it).
    name_timeout_seconds: float = Field(3.0, gt=0, le=60)
    pages: list[PageSettings] = []
    instagram: list[InstagramSettings] = []
    # Meta's messaging window: a reply goes as RESPONSE within window_hours of the
    # customer's last message (ad_window_days after they came from a Click-to-Messenger
    # ad); later only a seller's reply, with reply_tag, up to reply_tag_days ("": never).
    # Anything later ends «окно ответа закрыто» in the lead instead of being retried.
    window_hours: float = Field(24.0, gt=0, le=24 * 30)
    ad_window_days: float = Field(7.0, ge=0, le=30)
    reply_tag: str = Field("HUMAN_AGENT", pattern=r"^([A-Z][A-Z_]{0,63})?$")
    reply_tag_days: float = Field(7.0, ge=0, le=30)
    # Meta names no wait with its rate-limit errors (4, 17, 32, 613): a send refused with
    # one is tried again after at least this long.
    rate_limit_seconds: float = Field(60.0, gt=0, le=3600)
    # Names of Messenger/Instagram senders: kept in memory this long, at most this many.
    name_cache_size: int = Field(10_000, ge=0, le=1_000_000)
    name_cache_hours: float = Field(24.0, gt=0, le=24 * 30)

    @field_validator("graph_api_version")
    @classmethod
    def _version(cls, value: str) -> str:
        if not _VERSION.fullmatch(value):
            raise ValueError(f"{value!r} is not a Graph API version such as 'v25.0'")
        return value

    @field_validator("graph_base", "instagram_graph_base")
    @classmethod
    def _base(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value.rstrip("/")

    @field_validator("verify_token", "app_secret")
    @classmethod
    def _not_blank(cls, value: SecretStr | None) -> SecretStr | None:
        # Meta's app secret is 32 hex digits; the verify token is ours to choose.
        return check_optional_secret(value)

    @model_validator(mode="after")
    def _complete(self) -> MetaSettings:
        accounts = [p.id for p in self.pages] + [i.id for i in self.instagram]
        if accounts and (self.app_secret is None or self.verify_token is None):
            raise ValueError("pages or instagram accounts need app_secret and verify_token")
        seen: set[str] = set()
        for account in accounts:
            if account in seen:
                raise ValueError(f"account {account} is configured twice")
            seen.add(account)
        return self

    @property
    def enabled(self) -> bool:
        return self.app_secret is not None and self.verify_token is not None
