"""Request helpers the connectors share: body parsing, client address, token checks."""

from __future__ import annotations

import hmac
import ipaddress
import re
import zlib
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from pydantic import SecretStr

from gateway import formbody
from gateway.errors import ApiError
from gateway.textsafe import header_bytes

JSON_TYPES = ("application/json",)
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# What aiohttp raises for a form body it cannot read: broken multipart (ValueError,
# HttpProcessingError), unknown charset (LookupError), unknown part Content-(Transfer-)
# Encoding (RuntimeError), bad gzip in a part (zlib.error). All are the sender's fault: 400.
FORM_READ_ERRORS = (ValueError, LookupError, HttpProcessingError, RuntimeError, zlib.error)


def networks(items: Iterable[str]) -> list[Network]:
    return [ipaddress.ip_network(item, strict=False) for item in items]


def in_networks(ip: str, nets: list[Network]) -> bool:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(addr in net for net in nets)


def client_ip(request: web.Request, trusted_proxies: list[Network]) -> str:
    """The peer address; X-Forwarded-For only when the peer is a proxy we trust."""
    peer = request.remote or ""
    if trusted_proxies and in_networks(peer, trusted_proxies):
        forwarded = request.headers.get("X-Forwarded-For", "")
        # Walk from the right: the last hop not ours is the client.
        for hop in reversed([h.strip() for h in forwarded.split(",") if h.strip()]):
            if not in_networks(hop, trusted_proxies):
                return hop
    return peer


# Deeper JSON is refused when it is parsed, with a 400 that says so: no form, order or call
# event nests more than a few levels, and past 255 the store's serializer would be the
# first to refuse (a 500).
MAX_JSON_DEPTH = 32


def too_deep(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Does `value` nest lists/objects more than `limit` levels deep? Iterative: a
    hostile value cannot exhaust the stack, and flat values cost one pass."""
    if not isinstance(value, dict | list):
        return False
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        for child in children:
            if isinstance(child, dict | list):
                if depth >= limit:
                    return True
                stack.append((child, depth + 1))
    return False


def parse_json_object(body: bytes) -> dict[str, Any]:
    """A JSON object from bytes, or ApiError 400 invalid_json: not JSON, not an object,
    or nested deeper than MAX_JSON_DEPTH."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_json", "expected a JSON object")
    if too_deep(data):
        raise ApiError(400, "invalid_json", f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    return data


async def read_json_object(request: web.Request) -> dict[str, Any]:
    if request.content_type not in JSON_TYPES:
        raise ApiError(415, "unsupported_media_type", "send application/json")
    return parse_json_object(await request.read())


async def read_fields(request: web.Request) -> dict[str, Any]:
    """A form body of any of the three shapes browsers and backends send, as a dict."""
    ctype = request.content_type
    if ctype in JSON_TYPES:
        return await read_json_object(request)
    if ctype in FORM_TYPES:
        # Read in the charset the browser really used (windows-1251 sites): gateway.formbody.
        try:
            if ctype == "multipart/form-data":
                pairs = await formbody.read_multipart(request, _body_limit(request))
            else:
                pairs = await formbody.read_urlencoded(request)
        except FORM_READ_ERRORS as exc:
            raise ApiError(400, "invalid_form", f"form body could not be read: {exc}") from None
        out: dict[str, Any] = {}
        for key, value in pairs:
            if isinstance(value, str):
                out.setdefault(_unicode(key), _unicode(value))
            else:  # a file: what it is, not its bytes
                out.setdefault("__files__", []).append(
                    {
                        "field": _unicode(key),
                        "name": _unicode(value["name"]),
                        "type": _unicode(value["type"]),
                    }
                )
        return out
    raise ApiError(
        415,
        "unsupported_media_type",
        "send application/json, application/x-www-form-urlencoded or multipart/form-data",
    )


def _body_limit(request: web.Request) -> int:
    from gateway.keys import SETTINGS  # here: gateway.keys imports most of the core

    return request.app[SETTINGS].server.max_body_bytes


def _unicode(text: str) -> str:
    """Text that can be stored: part headers are decoded with surrogateescape and some
    charsets (unicode_escape, ...) make lone surrogates, which no JSON or SQLite takes."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(400, "invalid_form", "form body is not valid text") from None
    return text


_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,200}")


def idempotency_key(request: web.Request) -> str | None:
    """The Idempotency-Key header: 1 to 200 visible ASCII characters (no spaces, as the
    OpenAPI document says); blank means none."""
    raw = request.headers.get("Idempotency-Key", "").strip()
    if not raw:
        return None
    if not _IDEMPOTENCY_KEY.fullmatch(raw):
        raise ApiError(
            400,
            "invalid_idempotency_key",
            "Idempotency-Key must be 1 to 200 visible ASCII characters",
        )
    return raw


def bearer_token(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def match_token(given: str | None, tokens: Mapping[str, SecretStr]) -> str | None:
    """The name of the token that matches, compared in constant time; None if none does."""
    if not given:
        return None
    found = None
    given_bytes = header_bytes(given)  # bytes that are not UTF-8 compare unequal, never raise
    for name, secret in tokens.items():
        # Compare against every token so timing does not tell which names exist.
        if hmac.compare_digest(given_bytes, secret.get_secret_value().encode()):
            found = name
    return found


def require_token(request: web.Request, tokens: Mapping[str, SecretStr], what: str) -> str:
    if not tokens:
        raise ApiError(
            401,
            "unauthorized",
            f"no {what} token is configured on this gateway",
            headers={"WWW-Authenticate": "Bearer"},
        )
    name = match_token(bearer_token(request), tokens)
    if name is None:
        raise ApiError(
            401,
            "unauthorized",
            f"missing or wrong {what} bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return name


def wants_html(request: web.Request) -> bool:
    """A browser's plain form post, as opposed to an API call."""
    accept = request.headers.get("Accept", "")
    return "text/html" in accept and "application/json" not in accept
