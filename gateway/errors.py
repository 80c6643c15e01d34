"""Errors as JSON: {"error": code, "detail": ..., "fields": {...}} with the right 4xx."""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from aiohttp import web


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        fields: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.fields = dict(fields or {})
        self.headers = dict(headers or {})
        # More members of the body for a client to act on (the choices a 409 offers).
        self.extra = dict(extra or {})


def error_body(
    code: str,
    detail: str,
    fields: Mapping[str, str] | None = None,
    extra: Mapping[str, object] | None = None,
) -> bytes:
    body: dict[str, object] = {"error": code, "detail": detail}
    if fields:
        body["fields"] = dict(fields)
    if extra:
        body.update(extra)
    return orjson.dumps(body)


def error_response(err: ApiError) -> web.Response:
    return web.Response(
        status=err.status,
        body=error_body(err.code, err.detail, err.fields, err.extra),
        content_type="application/json",
        headers=err.headers,
    )


# aiohttp's own refusals (no route, wrong method, body too large) under our error codes.
HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
    422: "invalid",
    429: "rate_limited",
}
