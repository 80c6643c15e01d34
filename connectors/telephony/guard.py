"""What a telephony webhook is checked for besides its signature: where it comes from and,
for Zadarma, how old the call it describes is.

Zadarma signs only caller_id + called_did + call_start (or the like, per event): the call
id, the disposition, who answered, the duration are not covered, so a captured
notification can be edited and replayed. The allow-list of the provider's networks stops
anyone else from sending one; the freshness window on call_start (which the signature
does cover) limits a replay to about the time of the original call.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from aiohttp import web

from connectors.telephony.calls import Notice
from gateway.errors import ApiError
from gateway.http import Network, client_ip, in_networks


def check_source(
    provider: str, request: web.Request, allowed: list[Network], trusted: list[Network]
) -> None:
    """403 when the provider has an allow-list and the client is not on it."""
    if allowed and not in_networks(client_ip(request, trusted), allowed):
        raise ApiError(403, "forbidden", f"not from a network allowed for {provider}")


def check_fresh(notice: Notice, now: datetime, max_age_hours: float) -> None:
    """403 stale_event when the call started further than max_age_hours from now."""
    if notice.call is None or not max_age_hours:
        return
    if abs(now - notice.call.started_at) > timedelta(hours=max_age_hours):
        raise ApiError(
            403,
            "stale_event",
            f"call_start is more than {max_age_hours:g} h from now; a replay? "
            f"(if the PBX clock or [telephony.{notice.provider}] timezone is wrong, fix it)",
        )
