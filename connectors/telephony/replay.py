"""A quarantined webhook read again (gateway.quarantine): which provider sent it, and the
Notice it means now. The entry was verified before it was kept (nothing unauthenticated is
quarantined), so reading it again needs no secret."""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

import orjson

from connectors.telephony import cti, mango, zadarma
from connectors.telephony.calls import CallInvalid, Notice
from gateway.channels import ReplayRefused
from gateway.store.base import QuarantineEntry

# Where a Mango event's kind (the last part of its URL) is kept with the entry.
MANGO_KIND = "mango_kind"


def _mango_kind(entry: QuarantineEntry, data: dict[str, Any]) -> str:
    kind = entry.headers.get(MANGO_KIND)
    if kind:
        return kind
    # Kept by an older version, without its URL: the fields tell the two kinds apart.
    if "call_state" in data:
        return "call"
    if "entry_result" in data or "talk_time" in data:
        return "summary"
    raise ReplayRefused("the Mango event's kind (call or summary) was not kept with it")


def read_again(
    entry: QuarantineEntry, *, zadarma_tz: ZoneInfo, region: str, recording_url: str
) -> tuple[Notice, dict[str, Any]]:
    """(the notice, the payload to keep with its events), or ReplayRefused."""
    provider = entry.reason.split(":", 1)[0]
    try:
        data = orjson.loads(entry.body)
    except orjson.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        raise ReplayRefused("still unreadable: the body is not a JSON object")
    try:
        if provider == zadarma.PROVIDER:
            texts = {k: v for k, v in data.items() if isinstance(v, str)}
            notice = zadarma.parse(texts, tz=zadarma_tz, region=region, recording_url=recording_url)
            return notice, dict(texts)
        if provider == mango.PROVIDER:
            return mango.parse(_mango_kind(entry, data), data, region=region), data
        if provider == cti.PROVIDER:
            # The CTI format has no timestamps: the call happened when it first arrived.
            return cti.parse(data, received_at=entry.received_at, region=region), data
    except CallInvalid as exc:
        raise ReplayRefused(f"still unreadable: {exc}") from None
    raise ReplayRefused(f"kept from an unknown provider {provider!r}")
