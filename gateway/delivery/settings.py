"""The `[delivery]` config section: which sink gets the leads, retry policy, CRM mapping.

Deliberately free of gateway.config imports (gateway.config imports this module).
"""

from __future__ import annotations

import re
import string
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from gateway.channels import default_titles
from gateway.models import Channel, EquipmentCategory
from gateway.secret_rules import LongSecret

# What a TITLE template may use; see gateway.delivery.b24mapping.title_values.
TITLE_PLACEHOLDERS = frozenset(
    {"channel", "name", "who", "phone", "email", "company", "external_id", "source_detail"}
)
# Custom lead fields: "UF_CRM_" and up to 13 more characters (Bitrix24 caps the name at 20).
_UF_NAME = re.compile(r"UF_CRM_[A-Z0-9_]{1,13}")
_WEBHOOK_PATH = re.compile(r"/rest/\d+/[^/]+/?")


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def check_template(template: str) -> str:
    """Only plain {placeholder} names from TITLE_PLACEHOLDERS: no attributes, no indexes."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"bad template: {exc}") from None
    for _, name, spec, conv in parts:
        if name is None:
            continue
        if name not in TITLE_PLACEHOLDERS or spec or conv:
            raise ValueError(
                f"unknown placeholder {{{name}}}; use {', '.join(sorted(TITLE_PLACEHOLDERS))}"
            )
    return template


class Bitrix24Settings(_Section):
    # https://{portal}/rest/{user_id}/{secret}/ — the secret is in the URL: never logged.
    webhook_url: SecretStr | None = None
    originator_id: str = Field("leadgate", min_length=1, max_length=50)
    # Defaults per channel come from the channel specs; a channel named here overrides one.
    titles: dict[Channel, str] = Field(default_factory=default_titles)
    # How ФИО is split: see docs/delivery/bitrix24.md ("auto" reads the patronymic).
    name_order: Literal["auto", "first_last", "last_first", "whole"] = "auto"
    phone_type: str = "WORK"  # VALUE_TYPE of the PHONE multifield
    email_type: str = "WORK"
    new_status_id: str = "NEW"
    send_junk: bool = False  # JUNK leads stay in leadgate unless this is on
    junk_status_id: str = "JUNK"
    # «Какой категорией оборудования интересовался»: a list field takes enum item ids.
    category_field: str | None = None
    category_values: dict[EquipmentCategory, str] = {}
    # «Вероятное оборудование к покупке и его цена»: a text field.
    equipment_field: str | None = None
    # Before creating, look the phones/emails up in the CRM (crm.duplicate.findbycomm).
    find_duplicates: bool = False
    # ...and when a person's lead is still open there, add the request to it as a comment.
    attach_to_open_lead: bool = True
    register_sonet_event: bool = True
    # The portal's leaky bucket: burst 50, 2 requests/s (Enterprise: 250 and 5).
    burst: int = Field(50, ge=1, le=10_000)
    rate: float = Field(2.0, gt=0, le=100)
    # After a restart we cannot know how full the portal's bucket is: assume full.
    assume_busy_on_start: bool = True
    timeout_seconds: float = Field(30.0, gt=0, le=600)
    # OPERATION_TIME_LIMIT (429): how long to leave the portal alone.
    operation_limit_wait_seconds: float = Field(60.0, gt=0, le=3600)

    @field_validator("webhook_url")
    @classmethod
    def _webhook_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        url = value.get_secret_value().strip()
        parts = urlsplit(url)
        # Never echo the value: it carries the secret.
        if parts.scheme not in ("https", "http") or not parts.netloc:
            raise ValueError("must be an http(s) URL like https://PORTAL/rest/USER_ID/SECRET/")
        if not _WEBHOOK_PATH.fullmatch(parts.path) or parts.query or parts.fragment:
            raise ValueError(
                "must look like https://PORTAL/rest/USER_ID/SECRET/ (without a method name)"
            )
        return SecretStr(url if url.endswith("/") else url + "/")

    @field_validator("titles")
    @classmethod
    def _fill_titles(cls, given: dict[Channel, str]) -> dict[Channel, str]:
        for template in given.values():
            check_template(template)
        return {**default_titles(), **given}

    @field_validator("category_field", "equipment_field")
    @classmethod
    def _uf_name(cls, value: str | None) -> str | None:
        if value is not None and not _UF_NAME.fullmatch(value):
            raise ValueError("must be a custom field name like UF_CRM_1706782596 (max 20 chars)")
        return value


class WebhookSinkSettings(_Section):
    url: str | None = None
    secret: LongSecret | None = None  # HMAC-SHA256 key for X-Leadgate-Signature
    timeout_seconds: float = Field(10.0, gt=0, le=600)
    concurrency: int = Field(4, ge=1, le=64)

    @field_validator("url")
    @classmethod
    def _http(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("https", "http") or not parts.netloc:
                raise ValueError("must be an http(s) URL")
        return value


class DeliverySettings(_Section):
    sink: Literal["local", "bitrix24", "webhook"] = "local"
    batch_size: int = Field(50, ge=1, le=50)  # one Bitrix24 batch holds at most 50 commands
    poll_seconds: float = Field(0.5, gt=0, le=60)
    # Sink calls in flight at once. A CRM answering in a second per batch still gets its
    # whole budget used (the Bitrix24 bucket paces them); one lead is never in two at once.
    concurrency: int = Field(4, ge=1, le=32)
    max_attempts: int = Field(25, ge=1, le=1000)
    backoff_initial_seconds: float = Field(2.0, gt=0)
    backoff_max_seconds: float = Field(900.0, gt=0)
    # A merged event whose lead is not in the CRM yet checks again after this long.
    wait_seconds: float = Field(5.0, gt=0)
    # While the sink refuses our credentials: how often to try again (without using attempts).
    halt_probe_seconds: float = Field(300.0, gt=0)
    # Delivered outbox rows older than this are deleted (0 keeps them forever).
    keep_delivered_days: int = Field(30, ge=0)
    # How long a worker holds the items it claimed: no other worker takes them meanwhile;
    # after it, they are taken over (their worker is presumed dead). Longer than one sink
    # call (several requests, each up to the sink's timeout_seconds, plus rate-limit waits).
    claim_lease_seconds: float = Field(600.0, gt=0, le=86_400)
    # A factory: the title defaults come from the channel specs, loaded at first use.
    bitrix24: Bitrix24Settings = Field(default_factory=Bitrix24Settings)
    webhook: WebhookSinkSettings = WebhookSinkSettings()

    @model_validator(mode="after")
    def _sink_configured(self) -> DeliverySettings:
        if self.sink == "bitrix24" and self.bitrix24.webhook_url is None:
            raise ValueError("sink is bitrix24 but bitrix24.webhook_url is not set")
        if self.sink == "webhook" and (self.webhook.url is None or self.webhook.secret is None):
            raise ValueError("sink is webhook but webhook.url and webhook.secret are not both set")
        if self.backoff_max_seconds < self.backoff_initial_seconds:
            raise ValueError("backoff_max_seconds is below backoff_initial_seconds")
        timeout = self.request_timeout_seconds
        if self.claim_lease_seconds < 2 * timeout:
            raise ValueError(
                f"claim_lease_seconds ({self.claim_lease_seconds:g}) must be at least twice the "
                f"{self.sink} request timeout ({timeout:g} s): a claim that ends while its "
                "sink still works lets another worker send the same items"
            )
        return self

    @property
    def request_timeout_seconds(self) -> float:
        """One request of the configured sink may take this long (0 for the local sink)."""
        if self.sink == "bitrix24":
            return self.bitrix24.timeout_seconds
        if self.sink == "webhook":
            return self.webhook.timeout_seconds
        return 0.0
