"""The `[vk]` config section: the VK communities whose Callback API posts to /v1/vk.

Declared by connectors.vk.spec; the core assembles it into the settings model. One table
`[[vk.communities]]` per community; secrets are SecretStr (printed as '**********').
"""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from gateway.chat_settings import check_answer_texts
from gateway.secret_rules import check_secret

DEFAULT_API_BASE = "https://api.vk.ru"
# The version every call is made with and the Callback API server should be set to: from
# 5.103 on, message_new carries {message, client_info}; the parser reads the older bare
# message too, for a server left on an old version.
DEFAULT_API_VERSION = "5.199"
_VERSION = re.compile(r"^5\.[0-9]{1,3}$")
WallReplies = Literal["lead", "activity", "off"]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CommunitySettings(_Section):
    """One community (group): its Callback API server settings and its access token."""

    group_id: int = Field(gt=0)
    # Shown to sellers as where the lead came from (source_detail); default "vk:<group_id>".
    name: str | None = Field(None, min_length=1, max_length=100)
    # The string VK shows on the Callback API page («Строка, которую должен вернуть
    # сервер»). It changes whenever a server is added or edited: copy it again then.
    confirmation: str = Field(min_length=1, max_length=100)
    # «Секретный ключ» of the Callback API server: VK puts it in every event's body.
    secret: SecretStr
    # The community's access key (Manage -> API usage -> Access tokens), with rights to
    # messages and to the community's management: names (users.get), lead-form catch-up
    # (leadForms.*), replies (messages.send). Without it events still become leads, named
    # by their handle only, and nothing is sent.
    token: SecretStr | None = None
    api_base: str = DEFAULT_API_BASE  # a local stand-in in tests
    api_version: str = DEFAULT_API_VERSION
    timeout_seconds: float = Field(10.0, gt=0, le=120)
    # Our budget of API calls a second for this token (VK allows a community token 20).
    requests_per_second: float = Field(15.0, gt=0, le=20)
    # What becomes what. message_new / message_edit: a conversation message.
    messages: bool = True
    lead_forms: bool = True
    # wall_reply_new: "lead" (a lead, or an activity on the person's open lead),
    # "activity" (only joins an open lead of the person; otherwise kept on no lead), "off".
    wall_replies: WallReplies = "lead"
    market_orders: bool = True
    # leadForms.getLeads, every catch_up_minutes, for lead-form events VK did not deliver.
    # VK's schema marks leadForms.* as methods for a *user* token (a community token gets
    # error 27): the access token of a community administrator. Unset: no catch-up.
    catch_up_token: SecretStr | None = None
    catch_up_minutes: float = Field(15.0, ge=0.01, le=24 * 60)
    # The forms to catch up; empty: every form of the community (leadForms.list).
    lead_form_ids: list[int] = []
    # The very first catch-up takes leads of the last N days (later ones: all new leads).
    first_sync_days: int = Field(3, ge=0, le=365)
    # The after-hours answer in this community's conversations: None keeps
    # [conversations] after_hours_answer; texts by locale with {when}, empty: that
    # section's text (or the built-in one).
    after_hours_answer: bool | None = None
    after_hours_text: dict[str, str] = {}

    @field_validator("after_hours_text")
    @classmethod
    def _texts(cls, texts: dict[str, str]) -> dict[str, str]:
        return check_answer_texts(texts)

    @field_validator("secret")
    @classmethod
    def _secret(cls, value: SecretStr) -> SecretStr:
        # VK's own check of the "Секретный ключ" field is not documented (the settings page
        # takes latin letters and digits): one worth comparing, as every secret we check.
        return check_secret(value)

    @field_validator("confirmation")
    @classmethod
    def _confirmation(cls, value: str) -> str:
        if value != value.strip() or not value.isprintable():
            raise ValueError("copy the confirmation string exactly, without spaces around it")
        return value

    @field_validator("api_base")
    @classmethod
    def _base(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError("an http(s) URL, e.g. https://api.vk.ru")
        if parts.query or parts.fragment:
            raise ValueError("no query or fragment: the method path is added to it")
        return value.rstrip("/")

    @field_validator("api_version")
    @classmethod
    def _version(cls, value: str) -> str:
        if not _VERSION.match(value):
            raise ValueError("an API version such as 5.199")
        return value

    @property
    def label(self) -> str:
        return self.name or f"vk:{self.group_id}"


class VkSettings(_Section):
    communities: list[CommunitySettings] = []

    @model_validator(mode="after")
    def _unique(self) -> VkSettings:
        seen: set[int] = set()
        for community in self.communities:
            if community.group_id in seen:
                raise ValueError(f"group_id {community.group_id} is listed twice")
            seen.add(community.group_id)
        return self
