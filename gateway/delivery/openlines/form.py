"""Bitrix24's event bodies: application/x-www-form-urlencoded with PHP bracket keys.

Bitrix24 builds them with PHP's http_build_query, so `data[MESSAGES][0][im][chat_id]=49`
and `auth[application_token]=...` arrive as flat keys, every value a string. This turns
them back into the nested structure the docs print as JSON. Bounded: a body with too many
keys or too deep a key is refused. Like PHP, a key that is not of the form name[a][b] is
left out, and the first of two clashing keys wins (a later `auth[x][y]` cannot replace an
`auth[x]` already read): Bitrix24 never resends an event, so one odd extra field must not
cost a seller's answer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from aiohttp import web

from gateway.errors import ApiError
from gateway.http import FORM_READ_ERRORS
from gateway.textsafe import ascii_digits

MAX_KEYS = 2000
MAX_DEPTH = 8
_KEY = re.compile(r"([^\[\]]+)((?:\[[^\[\]]*\])*)")
_PART = re.compile(r"\[([^\[\]]*)\]")


class FormInvalid(ValueError):
    """A form body that is not a PHP-style structure we can read."""


def nest(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Flat PHP-style keys to nested dicts; tables whose keys are 0..n-1 become lists. A
    repeated key keeps its first value (what a forged duplicate must not override)."""
    root: dict[str, Any] = {}
    for count, (key, value) in enumerate(pairs, start=1):
        if count > MAX_KEYS:
            raise FormInvalid(f"more than {MAX_KEYS} fields")
        m = _KEY.fullmatch(key)
        if m is None:
            continue
        path = [m.group(1), *_PART.findall(m.group(2))]
        if len(path) > MAX_DEPTH:
            raise FormInvalid(f"a field name nests deeper than {MAX_DEPTH}: {key[:60]!r}")
        _put(root, path, value)
    # The top level stays a table, whatever its keys.
    return {k: _lists(v) for k, v in root.items()}


def _put(root: dict[str, Any], path: list[str], value: str) -> None:
    node = root
    for part in path[:-1]:
        part = part or str(len(node))
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            return  # a value is there already: the first one stands
        node = child
    last = path[-1] or str(len(node))
    node.setdefault(last, value)


def _lists(node: Any) -> Any:
    if isinstance(node, dict):
        node = {k: _lists(v) for k, v in node.items()}
        if (
            node
            and all(ascii_digits(k) for k in node)
            and sorted(map(int, node)) == list(range(len(node)))
        ):
            return [node[str(i)] for i in range(len(node))]
    return node


async def read_pairs(request: web.Request) -> list[tuple[str, str]]:
    """The request's form body as flat (key, value) pairs, or a 4xx ApiError."""
    if request.content_type != "application/x-www-form-urlencoded":
        raise ApiError(
            415,
            "unsupported_media_type",
            "Bitrix24 posts application/x-www-form-urlencoded",
        )
    try:
        post = await request.post()
    except FORM_READ_ERRORS as exc:
        raise ApiError(400, "invalid_form", f"form body could not be read: {exc}") from None
    pairs: list[tuple[str, str]] = []
    for key, value in post.items():
        if not isinstance(value, str):
            raise ApiError(400, "invalid_form", "Bitrix24 events carry no files")
        try:
            key.encode("utf-8")
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ApiError(400, "invalid_form", "form body is not valid text") from None
        pairs.append((key, value))
    return pairs


def first(pairs: Iterable[tuple[str, str]], key: str) -> str | None:
    """The first value of a flat key ("auth[application_token]"), as nest() would keep it."""
    return next((value for k, value in pairs if k == key), None)


def nested(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """nest() with its refusal as a 400."""
    try:
        return nest(pairs)
    except FormInvalid as exc:
        raise ApiError(400, "invalid_form", str(exc)) from None


async def read_event_form(request: web.Request) -> dict[str, Any]:
    """The request's form body as nested data, or a 4xx ApiError."""
    return nested(await read_pairs(request))


def text(node: Any, *path: str) -> str | None:
    """The string at `path` inside nested form data, or None (absent, or not a string)."""
    for part in path:
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and ascii_digits(part) and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node if isinstance(node, str) else None
