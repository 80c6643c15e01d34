"""The callback request and the form tab as LeadEvents, with the visitor's consent on them.

The form goes through `parse_submission`, the same parser as POST /v1/forms/{form_id}:
same fields, same validation messages, same honeypot, same lead. The callback request is a
`callback` lead with the phone. Both need the visitor's consent to process personal data
(152-ФЗ); what they consented to is recorded on the event (`meta.consent`): when, to
which policy (URL and version), in which words and language, from which site.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import idna

from connectors.webform import MSG_NOT_TEXT, MSG_TOO_LONG, UTM_KEYS, FormInvalid, parse_submission
from connectors.widget.settings import WidgetSettings
from connectors.widget.texts import CALLBACK_TEXT, MSG_CONSENT, MSG_PHONE, UI, Gettext
from gateway.identity import normalize_phone
from gateway.models import Channel, Contact, LeadEvent, new_id

# What the widget itself adds to a post besides the fields.
WIDGET_KEYS = ("consent", "page", "tz", "lang")
MAX_NAME = 200
MAX_PAGE = 1000


def consent_text(locale_gettext: Gettext) -> str:
    """The consent sentence as the visitor read it, the link's words in place."""
    _ = locale_gettext
    return _(UI["consent"]).format(link=_(UI["consent_link"]))


def consent_record(
    widget_name: str,
    widget: WidgetSettings,
    *,
    at: datetime,
    locale: str,
    origin: str,
    gettext: Gettext,
) -> dict[str, Any]:
    return {
        "given_at": at.isoformat(),
        "policy_url": widget.policy_url,
        "policy_version": widget.policy_version,
        "text": consent_text(gettext),
        "locale": locale,
        "origin": origin,
        "widget": widget_name,
    }


def check_consent(data: Mapping[str, Any], _: Gettext) -> dict[str, str]:
    """{} when the visitor ticked the box (JSON true, nothing else counts)."""
    return {} if data.get("consent") is True else {"consent": _(MSG_CONSENT)}


def page_of(data: Mapping[str, Any]) -> str | None:
    """The page the visitor was on, when it is a well-formed http(s) URL (for the seller
    and the consent record); anything else is not kept, and never fails the request.

    The script sends location.href, but a post can carry anything: over MAX_PAGE
    characters, another scheme (javascript:, data:), spaces, control or invisible
    characters, a broken IPv6 literal or port (urlsplit and .port raise ValueError: that
    was a 500), a host IDNA refuses. The page is a courtesy to the seller, not the
    visitor's answer, so a bad one is dropped rather than the request refused.
    """
    page = data.get("page")
    if not isinstance(page, str) or not page or len(page) > MAX_PAGE:
        return None
    if not all(ch.isprintable() and not ch.isspace() for ch in page):
        return None
    try:
        parts = urlsplit(page)
        parts.port  # noqa: B018 - raises ValueError for a port that is no port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return page if _host_ok(parts.hostname) else None


def _host_ok(host: str) -> bool:
    if ":" in host:  # an IPv6 literal ("[::1]" without its brackets)
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return False
        return True
    if host.isascii():
        # What browsers resolve: letters, digits, "-" and "_" (not IDNA's stricter rule),
        # and an "xn--" label only when it is real punycode.
        labels = host.rstrip(".").split(".")
        if not all(_ASCII_LABEL.fullmatch(label) for label in labels):
            return False
        try:
            for label in labels:
                if label.lower().startswith("xn--"):
                    idna.decode(label)
        except (idna.IDNAError, UnicodeError):
            return False
        return True
    try:
        idna.encode(host, uts46=True)
    except (idna.IDNAError, UnicodeError):
        return False
    return True


_ASCII_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")


def utm_of(data: Mapping[str, Any]) -> dict[str, str]:
    return {k: v[:200] for k in UTM_KEYS if isinstance(v := data.get(k), str) and v.strip()}


def callback_event(
    widget_name: str,
    widget: WidgetSettings,
    data: Mapping[str, Any],
    *,
    received_at: datetime,
    region: str,
    consent: dict[str, Any],
    idempotency_key: str | None,
    gettext: Gettext,
) -> LeadEvent:
    """A callback request -> a `callback` LeadEvent, or FormInvalid naming bad fields."""
    _ = gettext
    errors: dict[str, str] = {}
    raw_phone = data.get("phone")
    phone = normalize_phone(raw_phone, region) if isinstance(raw_phone, str) else None
    if phone is None or (isinstance(raw_phone, str) and len(raw_phone) > 40):
        errors["phone"] = _(MSG_PHONE)
    name = data.get("name")
    if name is not None and not isinstance(name, str):
        errors["name"] = _(MSG_NOT_TEXT)
    elif name is not None and len(name) > MAX_NAME:
        errors["name"] = _(MSG_TOO_LONG).format(limit=MAX_NAME)
    if errors:
        raise FormInvalid(errors)
    assert phone is not None
    honeypot = widget.form.honeypot_field
    trapped = bool(honeypot and data.get(honeypot) not in (None, ""))
    event_id = new_id()
    meta: dict[str, Any] = {"kind": "callback_request", "widget": widget_name, "consent": consent}
    if (page := page_of(data)) is not None:
        meta["page"] = page
    return LeadEvent(
        id=event_id,
        channel=Channel.CALLBACK,
        external_id=event_id,
        idempotency_key=f"widget:{widget_name}:{idempotency_key}" if idempotency_key else None,
        occurred_at=received_at,
        received_at=received_at,
        contact=Contact(name=(name or "").strip() or None, phones=(phone,)),
        text=CALLBACK_TEXT,
        utm=utm_of(data),
        source_detail=f"widget:{widget_name}",
        meta=meta,
        junk_reason="honeypot" if trapped else None,
        raw=dict(data),
    )


def form_event(
    widget_name: str,
    widget: WidgetSettings,
    data: Mapping[str, Any],
    *,
    received_at: datetime,
    region: str,
    consent: dict[str, Any],
    idempotency_key: str | None,
    gettext: Gettext,
) -> LeadEvent:
    """The form tab -> the LeadEvent /v1/forms would make of the same fields."""
    fields = {k: v for k, v in data.items() if k not in WIDGET_KEYS}
    event = parse_submission(
        f"widget-{widget_name}",
        widget.form,
        fields,
        received_at=received_at,
        region=region,
        idempotency_key=idempotency_key,
        gettext=gettext,
    )
    meta = {**event.meta, "widget": widget_name, "consent": consent}
    if (page := page_of(data)) is not None:
        meta["page"] = page
    return event.model_copy(update={"source_detail": f"widget:{widget_name}", "meta": meta})
