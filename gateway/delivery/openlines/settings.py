"""The `[openlines]` config section: the portal, the local application, the line.

Deliberately free of gateway.config imports (gateway.config imports this module).
"""

from __future__ import annotations

import re
from urllib.parse import quote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

# imconnector.register: "ID" is lower-cased by Bitrix24; letters, digits and "_" only
# ("The . character is prohibited": APPLICATION_REGISTRATION_ERROR_POINT).
_CONNECTOR_ID = re.compile(r"[a-z0-9_]{1,40}")
# A local application's client_id as the portal shows it: local.<hex>.<digits>.
_CLIENT_ID = re.compile(r"[A-Za-z0-9._-]{3,100}")
_HOST = re.compile(r"(?=.{1,253}$)[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")

# A speech bubble, for the Contact Center tile (imconnector.register wants an SVG data URI).
_ICON_SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 70 70">'
    '<path fill="#fff" d="M14 16h42a6 6 0 0 1 6 6v22a6 6 0 0 1-6 6H30l-11 9v-9h-5a6 6 0 0 '
    '1-6-6V22a6 6 0 0 1 6-6z"/></svg>'
)
DEFAULT_ICON = "data:image/svg+xml," + quote(_ICON_SVG, safe="/:=")


def _http_url(value: str | None, what: str) -> str | None:
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"{what} must be an http(s) URL")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"{what} must be a plain URL (no query, fragment or credentials)")
    return value.rstrip("/")


class OpenLinesSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # The portal's address, e.g. "yourcompany.bitrix24.ru" (no https://).
    portal: str | None = None
    # What Bitrix24 shows when the local application is saved.
    client_id: str | None = None
    client_secret: SecretStr | None = None
    # Bitrix24 sends it with every event; it is stored at installation. Setting it here
    # pins it: an installation or event carrying another one is refused.
    application_token: SecretStr | None = None
    # Where Bitrix24 reaches leadgate: events, the install handler, chat links.
    public_url: str | None = None
    # The Open Line the chats go to (Contact Center → the line → its number).
    line: int | None = Field(None, ge=1)
    connector_id: str = "leadgate"
    connector_name: str = Field("leadgate", min_length=1, max_length=100)
    # imconnector.register's ICON.DATA_IMAGE: an SVG data URI (a speech bubble by default).
    connector_icon: str = Field(DEFAULT_ICON, max_length=20_000)
    connector_color: str = Field("#2fc6f6", pattern=r"#[0-9a-fA-F]{6}")
    # The OAuth server. It depends on the portal's region (oauth.bitrix.info,
    # oauth.bitrix24.tech); the token answers name it, and those two are followed.
    oauth_url: str = "https://oauth.bitrix.info"
    # Open Lines' own CRM tracker for leadgate's chats. Off (the default): every mirrored
    # message carries disable_crm=Y, so Open Lines never makes a lead of its own; the chat
    # is linked to leadgate's CRM lead instead (docs/delivery/open-lines.md). On: the
    # tracker runs, finds the lead by the phone/email sent, and creates one when the
    # line's settings say so.
    crm_tracker: bool = False
    # The REST base instead of https://<portal>/rest/ (a proxy, or a test stand-in).
    api_base: str | None = None
    # An access token is renewed when used this close to its expiry (never on a timer:
    # Bitrix24 may block applications that renew on a schedule), and on expired_token.
    refresh_margin_seconds: float = Field(60.0, ge=0, le=1800)
    # Messages per imconnector.send.messages request (at most one per conversation).
    batch_size: int = Field(10, ge=1, le=50)
    timeout_seconds: float = Field(30.0, gt=0, le=600)

    @property
    def configured(self) -> bool:
        return self.client_id is not None

    @property
    def rest_base(self) -> str:
        """Where the portal's REST methods are: https://<portal>/rest/ (or api_base)."""
        if self.api_base is not None:
            return self.api_base + "/"
        return f"https://{self.portal}/rest/"

    def url(self, path: str) -> str:
        """An address of this gateway as Bitrix24 reaches it."""
        return f"{self.public_url}{path}"

    @field_validator("portal")
    @classmethod
    def _portal_host(cls, value: str | None) -> str | None:
        if value is None:
            return None
        host = value.strip().lower().rstrip("/")
        if not _HOST.fullmatch(host):
            raise ValueError('must be the portal\'s host name, e.g. "yourcompany.bitrix24.ru"')
        return host

    @field_validator("client_id")
    @classmethod
    def _client_id_shape(cls, value: str | None) -> str | None:
        if value is not None and not _CLIENT_ID.fullmatch(value):
            raise ValueError('must look like "local.5f1a2b3c4d5e6f.12345678"')
        return value

    @field_validator("connector_id")
    @classmethod
    def _connector_id_shape(cls, value: str) -> str:
        if not _CONNECTOR_ID.fullmatch(value):
            raise ValueError(
                "lowercase letters, digits and _ only, at most 40 (Bitrix24 refuses a dot)"
            )
        return value

    @field_validator("connector_icon")
    @classmethod
    def _icon_shape(cls, value: str) -> str:
        if not value.startswith("data:image/svg+xml"):
            raise ValueError("must be an SVG data URI (data:image/svg+xml,...)")
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        return _http_url(value, "public_url")

    @field_validator("oauth_url", "api_base")
    @classmethod
    def _other_urls(cls, value: str | None) -> str | None:
        return _http_url(value, "the address")

    @model_validator(mode="after")
    def _complete(self) -> OpenLinesSettings:
        if not self.configured:
            return self
        missing = [
            name
            for name in ("portal", "client_secret", "public_url", "line")
            if getattr(self, name) is None
        ]
        if missing:
            raise ValueError(
                f"client_id is set, so these must be too: {', '.join(missing)} "
                "(see docs/delivery/open-lines.md)"
            )
        return self
