"""What every widget request passes first: its origin, its size, its rate.

A browser names the page's origin on every cross-origin fetch and WebSocket: requests
from origins the widget does not list are refused on the server, not only by CORS in the
browser (CORS protects readers, not the gateway: a page may still *send* a simple POST).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aiohttp import web

from connectors.widget.settings import WidgetSettings
from gateway.errors import ApiError
from gateway.http import parse_json_object
from gateway.i18n import negotiate

# A callback request or a form post: a few fields. Far below the gateway's body limit.
MAX_POST_BYTES = 16 * 1024
CORS_HEADERS = "Content-Type, Idempotency-Key, X-Leadgate-Visitor"


def allowed_origin(request: web.Request, widget: WidgetSettings) -> str:
    """The request's Origin when the widget lists it; else ApiError 403.

    A page on the gateway's own origin: browsers send no Origin on a same-origin GET (the
    state), only `Sec-Fetch-Site: same-origin`, which a page cannot forge. Such a request
    comes from the origin it was sent to, the Host header's; it is accepted when a listed
    origin has that host (and port). Without that word from the browser a request with no
    Origin stays refused, as does every cross-origin one not listed.
    """
    origin = request.headers.get("Origin", "").lower()
    if origin and origin in widget.allowed_origins:
        return origin
    if not origin and request.headers.get("Sec-Fetch-Site", "").lower() == "same-origin":
        host = request.headers.get("Host", "").lower()
        own = next((o for o in widget.allowed_origins if _netloc(o) == host), None)
        if host and own is not None:
            return own
    raise ApiError(
        403,
        "origin_not_allowed",
        "this widget is not set up for the page's site: add its origin to allowed_origins",
    )


def _netloc(origin: str) -> str:
    """"https://shop.example.ru:8443" -> "shop.example.ru:8443" (origins are validated and
    lower-cased in the settings: scheme, "://", host, optional port)."""
    return origin.split("://", 1)[-1]


def cors(origin: str) -> dict[str, str]:
    return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}


def preflight_headers(origin: str) -> dict[str, str]:
    return cors(origin) | {
        "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
        "Access-Control-Allow-Headers": CORS_HEADERS,
        "Access-Control-Max-Age": "600",
    }


async def read_post(request: web.Request) -> dict[str, Any]:
    """The JSON body of a widget post, at most MAX_POST_BYTES."""
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "send application/json")
    if request.content_length is not None and request.content_length > MAX_POST_BYTES:
        raise ApiError(413, "body_too_large", f"body larger than {MAX_POST_BYTES} bytes")
    body = await request.content.read(MAX_POST_BYTES + 1)
    if len(body) > MAX_POST_BYTES:
        raise ApiError(413, "body_too_large", f"body larger than {MAX_POST_BYTES} bytes")
    return parse_json_object(body)


def visitor_locale(query: Mapping[str, str], request: web.Request) -> str:
    """The page's language (`lang`: the page's lang attribute, then the browser's
    languages, as the widget sends them), else the Accept-Language header."""
    wanted = query.get("lang") or request.headers.get("Accept-Language")
    return negotiate(wanted[:200] if wanted else None)


def visitor_zone(name: str | None, default: ZoneInfo) -> ZoneInfo:
    """The browser's time zone (Intl), so «после 10:00» is the visitor's own 10:00."""
    if not name or len(name) > 64:
        return default
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return default


def ip_bucket(ip: str) -> str:
    """One bucket per IPv4 address, one per IPv6 /64 (what one subscriber gets)."""
    if ":" not in ip:
        return ip
    try:
        return str(ipaddress.IPv6Network(f"{ip}/64", strict=False))
    except ValueError:
        return ip


def retry_seconds(wait: float) -> int:
    return max(1, int(wait + 0.999))
