"""The `[telephony]` config section: which providers may call us, with which secrets.

Declared by connectors.telephony.spec; the core assembles it into the settings model.
A provider's webhook is mounted only when its secret is configured.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from gateway.hours import TimeZoneName
from gateway.identity import PhoneList
from gateway.secret_rules import check_optional_secret

DEFAULT_ZADARMA_RECORDING_URL = (
    "https://api.zadarma.com/v1/pbx/record/request/?call_id={recording_id}"
)


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _check_networks(items: list[str]) -> list[str]:
    for item in items:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or CIDR network") from None
    return items


# The provider's source addresses; empty: any address (the signature is the only check).
# Behind a reverse proxy the client address comes from X-Forwarded-For, and only when the
# proxy is in [server] trusted_proxies.
Networks = Annotated[list[str], AfterValidator(_check_networks)]


class ZadarmaSettings(_Section):
    # «Secret» of the API key pair in the Zadarma cabinet (Settings -> API and integrations).
    api_secret: SecretStr | None = None
    # Zadarma sends call_start as local wall time without a zone: this is that zone.
    timezone: TimeZoneName = "Europe/Moscow"
    # Answer to NOTIFY_START after hours: play this sound file (its id in the PBX's
    # sound manager) as the autoresponder. None: let the PBX's own scenario run.
    after_hours_ivr: str | None = Field(None, min_length=1, max_length=100)
    # In working hours, send a returning caller straight to their seller's extension.
    sticky_redirect: bool = False
    # Seconds the seller's extension rings before the call goes back to the PBX scenario.
    redirect_timeout: int = Field(20, ge=3, le=600)
    # What a blocked number gets: "blacklist" (busy signal) or "hangup".
    blocked_action: str = Field("blacklist", pattern="^(blacklist|hangup)$")
    # Link put on recording attachments; {recording_id} and {call_id} are filled in.
    recording_url: str | None = DEFAULT_ZADARMA_RECORDING_URL
    allowed_networks: Networks = []
    # The signature covers caller_id + called_did + call_start only: a captured
    # notification can be edited and replayed. call_start further than this from now
    # (either way) is refused. 0: no check.
    max_age_hours: float = Field(24.0, ge=0, le=24 * 31)


class MangoSettings(_Section):
    # «Уникальный код вашей АТС» (vpbx_api_key) and «Ключ для создания подписи» (salt)
    # from the Mango Office cabinet, Integrations -> API connection.
    api_key: SecretStr | None = None
    api_salt: SecretStr | None = None
    allowed_networks: Networks = []

    @model_validator(mode="after")
    def _both_or_neither(self) -> MangoSettings:
        if (self.api_key is None) != (self.api_salt is None):
            raise ValueError("give both api_key and api_salt, or neither")
        return self


class CtiSettings(_Section):
    # The secret: in the URL the PBX posts to (/v1/telephony/cti/{token}), or, better, in
    # an `Authorization: Bearer` header to /v1/telephony/cti (URLs end up in proxy logs).
    token: SecretStr | None = None
    allowed_networks: Networks = []

    @field_validator("token")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        return check_optional_secret(value)


class TelephonySettings(_Section):
    # Numbers whose calls are rejected and stored as JUNK, beside [screen].blocked_phones.
    blocked_numbers: PhoneList = []
    # Record outgoing calls as activity on the person's open lead.
    outgoing_calls: bool = True
    zadarma: ZadarmaSettings = ZadarmaSettings()
    mango: MangoSettings = MangoSettings()
    cti: CtiSettings = CtiSettings()

    @property
    def any_provider(self) -> bool:
        return (
            self.zadarma.api_secret is not None
            or self.mango.api_key is not None
            or self.cti.token is not None
        )
