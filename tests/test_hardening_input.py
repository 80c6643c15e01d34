"""Hostile input that used to get a 500 or fill the disk, played over real sockets.

- JSON nested hundreds of levels deep on forms, orders, CTI and Mango: refused when it is
  parsed (400), never left for the store's serializer (255 levels) to refuse with a 500;
- header values that are not UTF-8 (nor anything else) in Authorization, Signature,
  Idempotency-Key and every other header, on every route, before authentication and in
  the headers of a body that is kept in quarantine;
- unrequested extra form fields, as big as the body limit allows, from one client within
  the rate limit: what is stored is bounded and says what was cut.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from conftest import ORDERS_TOKEN, make_settings

from gateway.keys import METRICS, STORE
from gateway.models import LeadEvent
from gateway.rawpayload import MAX_BYTES, MAX_DEPTH, MAX_ITEMS, TRUNCATED, bound_raw
from gateway.serving import GuardedRunner, Limits
from gateway.web import create_app

CTI_TOKEN = "cti-token-for-hardening-0a1b2c"
MANGO_KEY, MANGO_SALT = "mango-key-hardening-77", "mango-salt-hardening-88"
ZADARMA_SECRET = "zadarma-secret-hardening-99"
PHONE = "+7 916 123-45-67"


def settings(tmp_path: Path, **overrides: Any) -> Any:
    telephony = {
        "zadarma": {"api_secret": ZADARMA_SECRET},
        "mango": {"api_key": MANGO_KEY, "api_salt": MANGO_SALT},
        "cti": {"token": CTI_TOKEN},
    }
    return make_settings(tmp_path, telephony=telephony, **overrides)


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[int, web.Application]]:
    app = create_app(settings(tmp_path))
    runner = GuardedRunner(app, limits=Limits(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield runner.addresses[0][1], app
    finally:
        await runner.cleanup()


async def exchange(port: int, head: bytes, body: bytes = b"") -> tuple[int, bytes]:
    """One raw HTTP/1.1 request; (status, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            head + b"Host: x\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        )
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            await writer.wait_closed()
    status = int(answer.split(b" ", 2)[1])
    return status, answer.split(b"\r\n\r\n", 1)[1]


def deep(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


def mango_form(json_text: bytes) -> bytes:
    sign = hashlib.sha256(MANGO_KEY.encode() + json_text + MANGO_SALT.encode()).hexdigest()
    from urllib.parse import urlencode

    return urlencode({"vpbx_api_key": MANGO_KEY, "sign": sign, "json": json_text}).encode()


# --- JSON depth -------------------------------------------------------------------------------


@pytest.mark.parametrize("levels", [33, 100, 256, 300, 1000, 5000])
async def test_deep_json_is_refused_at_parse_time(
    served: tuple[int, web.Application], levels: int
) -> None:
    port, app = served
    form = b'{"name": "A", "phone": "+79161234567", "x": ' + deep(levels) + b"}"
    order = (
        b'{"order_id": "D%d", "customer": {"phone": "+79161234567"}, "x": ' % levels
        + deep(levels)
        + b"}"
    )
    cti = b'{"event": "newCall", "callId": "c1", "direction": "in", "x": ' + deep(levels) + b"}"
    json_ct = b"Content-Type: application/json\r\n"
    cases = [
        (b"POST /v1/forms/site HTTP/1.1\r\n" + json_ct, form, "invalid_json"),
        (
            b"POST /v1/orders HTTP/1.1\r\n" + json_ct + b"Authorization: Bearer %s\r\n"
            % ORDERS_TOKEN.encode(),
            order,
            "invalid_json",
        ),
        (b"POST /v1/telephony/cti/%s HTTP/1.1\r\n" % CTI_TOKEN.encode() + json_ct, cti, None),
        (
            b"POST /v1/telephony/mango/events/call HTTP/1.1\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n",
            mango_form(b'{"entry_id": "E1", "x": ' + deep(levels) + b"}"),
            "invalid_event",
        ),
    ]
    for head, body, code in cases:
        status, answer = await exchange(port, head, body)
        assert status == 400, (head, answer)
        error = json.loads(answer)
        assert error["error"] == (code or error["error"])
        assert error["error"] in ("invalid_json", "invalid_event")
    assert await app[STORE].list_leads(_query()) == []


async def test_json_within_the_limit_is_taken_and_its_raw_cut(
    served: tuple[int, web.Application],
) -> None:
    port, app = served
    captured = capture_events(app)
    body = b'{"name": "A", "phone": "+79161234567", "x": ' + deep(31) + b"}"
    status, _ = await exchange(
        port, b"POST /v1/forms/site HTTP/1.1\r\nContent-Type: application/json\r\n", body
    )
    assert status == 201
    [event] = captured
    assert event.raw is not None and event.raw[TRUNCATED]["too_deep"] == 1
    assert _depth(event.raw) <= MAX_DEPTH + 1


def _query() -> Any:
    from gateway.store.base import LeadQuery

    return LeadQuery(limit=500)


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def capture_events(app: web.Application) -> list[LeadEvent]:
    """The events as the store is asked to record them (after the pipeline's bounds)."""
    store = app[STORE]
    seen: list[LeadEvent] = []
    original = store.record

    async def record(event: LeadEvent, *args: Any, **kwargs: Any) -> Any:
        seen.append(event)
        return await original(event, *args, **kwargs)

    store.record = record  # type: ignore[method-assign]
    return seen


# --- header bytes ------------------------------------------------------------------------------

BAD_BYTES = [b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"\x80abc", b"Bearer \xff\xfe\xfd"]
ROUTES = [
    (b"POST /v1/forms/site", b"application/json", b'{"name": "A", "phone": "+79161234567"}'),
    (b"POST /v1/orders", b"application/json", b'{"order_id": "H1", "customer": {}}'),
    (b"GET /v1/leads", b"", b""),
    (b"GET /v1/leads/01ARZ3NDEKTSV4RRFFQ69G5FAV", b"", b""),
    (b"POST /v1/telephony/zadarma", b"application/x-www-form-urlencoded", b"event=NOTIFY_START"),
    (b"GET /v1/telephony/zadarma?zd_echo=x", b"", b""),
    (b"POST /v1/telephony/mango/events/call", b"application/x-www-form-urlencoded", b"json={}"),
    (b"POST /v1/telephony/cti", b"application/json", b"{}"),
    (b"POST /v1/telephony/cti/" + CTI_TOKEN.encode(), b"application/json", b"{"),
    (b"OPTIONS /v1/forms/site", b"", b""),
    (b"GET /readyz", b"", b""),
]
HEADERS = [
    b"Authorization",
    b"Signature",
    b"Idempotency-Key",
    b"Origin",
    b"Accept-Language",
    b"Accept",
    b"X-Forwarded-For",
    b"User-Agent",
    b"Cookie",
    b"X-Real-IP",
]


async def test_header_bytes_never_cause_a_500(served: tuple[int, web.Application]) -> None:
    port, app = served
    seen: dict[int, int] = {}
    for route, ctype, body in ROUTES:
        for name in HEADERS:
            for value in BAD_BYTES:
                head = route + b" HTTP/1.1\r\n" + name + b": " + value + b"\r\n"
                if ctype:
                    head += b"Content-Type: " + ctype + b"\r\n"
                status, answer = await exchange(port, head, body)
                assert status < 500, (route, name, value, answer)
                seen[status] = seen.get(status, 0) + 1
    assert 401 in seen and 403 in seen and 400 in seen  # refused the way each route refuses
    assert app[METRICS].registry.get_sample_value(
        "leadgate_rejections_total", {"route": "/v1/orders", "reason": "internal"}
    ) is None


async def test_quarantined_body_with_a_non_utf8_header_is_kept(
    served: tuple[int, web.Application],
) -> None:
    port, app = served
    head = (
        b"POST /v1/telephony/cti/" + CTI_TOKEN.encode() + b" HTTP/1.1\r\n"
        b"Content-Type: application/json\r\nUser-Agent: PBX \xff\xfe/1.0\r\n"
        b"X-Forwarded-For: \xc3\x28\r\n"
    )
    status, answer = await exchange(port, head, b"{not json")
    assert status == 400, answer
    kept = app[METRICS].registry.get_sample_value(
        "leadgate_quarantined_total", {"channel": "phone"}
    )
    assert kept == 1.0


@pytest.mark.parametrize(
    ("key", "status"),
    [(b"abc def", 400), (b"a" * 201, 400), (b"\xff", 400), (b"abc-1", 201)],
)
async def test_idempotency_key_is_what_the_schema_says(
    served: tuple[int, web.Application], key: bytes, status: int
) -> None:
    port, _ = served
    head = (
        b"POST /v1/forms/site HTTP/1.1\r\nContent-Type: application/json\r\nIdempotency-Key: "
        + key
        + b"\r\n"
    )
    got, answer = await exchange(port, head, b'{"name": "A", "phone": "+79161234567"}')
    assert got == status, answer
    if status == 400:
        assert json.loads(answer)["error"] == "invalid_idempotency_key"


# --- disk fill ---------------------------------------------------------------------------------


def _disk(tmp_path: Path) -> int:
    return sum(p.stat().st_size for p in tmp_path.glob("leadgate.db*") if p.is_file())


async def test_extra_fields_from_one_client_cannot_fill_the_disk(tmp_path: Path) -> None:
    # The default rate limit (20 a minute), one client, bodies just under the 1 MiB limit.
    app = create_app(settings(tmp_path, ratelimit={"requests": 20, "per_seconds": 60}))
    captured = capture_events(app)
    runner = GuardedRunner(app, limits=Limits(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    extra = {f"field_{i:04d}": "Ж" * 480 for i in range(1000)}  # ~1 MB of UTF-8
    sent = 0
    try:
        await exchange(port, b"GET /healthz HTTP/1.1\r\n")
        before = _disk(tmp_path)
        statuses = []
        for n in range(20):
            body = orjson.dumps({"name": f"Bot {n}", "phone": PHONE, **extra})
            assert len(body) < 1024 * 1024
            sent += len(body)
            status, _ = await exchange(
                port, b"POST /v1/forms/site HTTP/1.1\r\nContent-Type: application/json\r\n", body
            )
            statuses.append(status)
        assert statuses == [201] * 20  # all within the rate limit, all stored
    finally:
        await runner.cleanup()  # closes the store: the WAL is folded into the file
    grown = _disk(tmp_path) - before
    # 20 MB were sent; kept per event: 64 KiB of raw payload, 20 extra fields of 500
    # characters in meta for the CRM, the row and its indexes.
    assert sent > 19_000_000
    assert grown < 20 * (MAX_BYTES + 40 * 1024), grown
    for event in captured:
        assert event.raw is not None
        assert len(orjson.dumps(event.raw)) <= MAX_BYTES
        report = event.raw[TRUNCATED]
        assert report["bytes"] > 900_000 and report["keys_dropped"] > 800
        assert event.raw["name"].startswith("Bot")  # the first fields are the kept ones
        assert len(event.meta.get("extra_fields", {})) <= 20


def test_bound_raw_keeps_small_payloads_as_they_are() -> None:
    raw = {"name": "Иван", "items": [{"sku": "A", "qty": 1}] * 50, "nested": {"a": {"b": [1]}}}
    assert bound_raw(raw) is raw


@pytest.mark.parametrize(
    ("raw", "cut"),
    [
        ({f"k{i}": i for i in range(5000)}, "keys_dropped"),
        ({"list": list(range(5000))}, "items_dropped"),
        ({"text": "x" * 200_000}, "strings_cut"),
        ({"a": json.loads(deep(40))}, "too_deep"),
        ({"k" * 10_000: 1}, None),
    ],
)
def test_bound_raw_cuts_and_says_what(raw: dict[str, Any], cut: str | None) -> None:
    kept = bound_raw(raw)
    assert kept is not raw
    assert len(orjson.dumps(kept)) <= MAX_BYTES
    assert _depth(kept) <= MAX_DEPTH + 1
    assert all(
        len(v) <= MAX_ITEMS + 1 for v in _containers(kept) if isinstance(v, dict | list)
    )
    if cut is not None:
        assert kept[TRUNCATED][cut] > 0


def _containers(value: Any) -> list[Any]:
    out = [value]
    children = value.values() if isinstance(value, dict) else value
    for child in children:
        if isinstance(child, dict | list):
            out += _containers(child)
    return out
