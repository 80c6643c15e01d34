"""Form bodies in the charset the browser used: a windows-1251 page's form without
accept-charset makes a lead in readable Cyrillic (urlencoded and multipart), a named
charset is used as named, and bytes that are no text in either are refused, never stored
garbled. And what a cross-origin script may read: Retry-After is exposed by CORS."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote_from_bytes

import pytest
from aiohttp.test_utils import TestClient
from conftest import ADMIN_AUTH

from gateway.web import create_app

Client = TestClient[Any, Any]
URLENCODED = {"Content-Type": "application/x-www-form-urlencoded"}


def urlencoded(fields: dict[str, str], charset: str) -> bytes:
    return "&".join(
        f"{k}={quote_from_bytes(v.encode(charset))}" for k, v in fields.items()
    ).encode()


def multipart(fields: dict[str, str], charset: str, part_charset: str | None = None) -> bytes:
    ctype = f"Content-Type: text/plain; charset={part_charset}\r\n" if part_charset else ""
    parts = [
        f'--XyZ\r\nContent-Disposition: form-data; name="{k}"\r\n{ctype}\r\n'.encode()
        + v.encode(charset)
        + b"\r\n"
        for k, v in fields.items()
    ]
    return b"".join(parts) + b"--XyZ--\r\n"


FORM = {
    "name": "Иван Петров",
    "phone": "+7 916 123-45-67",
    "comment": "Нужен погрузчик, ёмкость 3 т",
}


async def stored_text(client: Client, receipt: dict[str, Any]) -> tuple[str, str]:
    lead = await (await client.get(f"/v1/leads/{receipt['lead_id']}", headers=ADMIN_AUTH)).json()
    return lead["contact"]["name"], lead["events"][0]["text"]


@pytest.mark.parametrize("charset", ["utf-8", "cp1251"])
async def test_urlencoded_in_utf8_or_windows_1251(client: Client, charset: str) -> None:
    resp = await client.post("/v1/forms/site", data=urlencoded(FORM, charset), headers=URLENCODED)
    assert resp.status == 201, await resp.text()
    assert await stored_text(client, await resp.json()) == ("Иван Петров", FORM["comment"])


@pytest.mark.parametrize("charset", ["utf-8", "cp1251"])
async def test_multipart_in_utf8_or_windows_1251(client: Client, charset: str) -> None:
    resp = await client.post(
        "/v1/forms/site",
        data=multipart(FORM, charset),
        headers={"Content-Type": "multipart/form-data; boundary=XyZ"},
    )
    assert resp.status == 201, await resp.text()
    assert await stored_text(client, await resp.json()) == ("Иван Петров", FORM["comment"])


async def test_a_named_charset_is_used_as_named(client: Client) -> None:
    resp = await client.post(
        "/v1/forms/site",
        data=urlencoded(FORM, "koi8-r"),
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=koi8-r"},
    )
    assert resp.status == 201
    assert await stored_text(client, await resp.json()) == ("Иван Петров", FORM["comment"])
    part = await client.post(
        "/v1/forms/site",
        data=multipart(FORM, "koi8-r", part_charset="koi8-r"),
        headers={"Content-Type": "multipart/form-data; boundary=XyZ"},
    )
    assert part.status == 201
    assert (await stored_text(client, await part.json()))[0] == "Иван Петров"


async def test_bytes_that_are_no_text_are_refused_not_stored(client: Client) -> None:
    # 0x98 is the one byte windows-1251 leaves undefined; with 0xff it is no UTF-8 either.
    body = b"name=%98%FF&phone=%2B79161234567"
    resp = await client.post("/v1/forms/site", data=body, headers=URLENCODED)
    assert resp.status == 400
    error = await resp.json()
    assert error["error"] == "invalid_charset" and 'accept-charset="utf-8"' in error["detail"]
    named = await client.post(
        "/v1/forms/site",
        data=b"name=%FF%FE",
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
    )
    assert named.status == 400 and (await named.json())["error"] == "invalid_charset"
    leads = await (await client.get("/v1/leads", headers=ADMIN_AUTH)).json()
    assert leads["leads"] == []


async def test_cors_answers_expose_retry_after(aiohttp_client: Any, settings_factory: Any) -> None:
    settings = settings_factory(
        forms={"site": {"allowed_origins": ["https://shop.example.ru"]}},
        ratelimit={"requests": 1, "per_seconds": 60},
    )
    client: Client = await aiohttp_client(create_app(settings))
    origin = {"Origin": "https://shop.example.ru"}
    pre = await client.options(
        "/v1/forms/site", headers={**origin, "Access-Control-Request-Method": "POST"}
    )
    assert pre.headers["Access-Control-Expose-Headers"] == "Retry-After"
    body = {"name": "Анна", "phone": "89031112233"}
    first = await client.post("/v1/forms/site", json=body, headers=origin)
    assert first.status == 201
    assert first.headers["Access-Control-Expose-Headers"] == "Retry-After"
    limited = await client.post("/v1/forms/site", json=body, headers=origin)
    assert limited.status == 429
    assert limited.headers["Access-Control-Expose-Headers"] == "Retry-After"
    assert int(limited.headers["Retry-After"]) >= 1
