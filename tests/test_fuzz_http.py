"""Property-based fuzzing of the two public write endpoints: no 5xx, no stored garbage.

Hypothesis throws random bodies (bytes, JSON of every shape, near-valid forms and orders,
urlencoded in odd charsets, multipart with good and broken boundaries and part headers) and
random headers (content types and their parameters, Accept, Accept-Language, Origin,
Idempotency-Key, X-Forwarded-For, Authorization) at POST /v1/forms/site and POST /v1/orders.
For every response:

- the status is never 5xx;
- a 4xx carries a JSON body whose "error" is a string (or, for a browser's form post that
  fails validation, an HTML page); a refused request stores nothing;
- a 2xx is a JSON receipt (or a 303 for a browser's HTML post) naming a lead that exists in
  the store with a usable contact: a phone in E.164 form or a valid email, nothing raw;
- what a request stores is bounded by what it sent (no "1e999999" printed out in full);

and at the end the store holds exactly as many leads as there were "created" receipts.

One app per test function: the examples share it, so replays and merges between examples
are exercised too. The raw-socket test sends malformed HTTP (bad Content-Length, truncated
bodies, broken chunking, bad encodings) to a real TCP server and checks nothing answers 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import string
import urllib.parse
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from conftest import ORDER_AUTH, ORDERS_TOKEN, make_settings
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from store_view import all_leads

from gateway.identity import normalize_email, normalize_phone
from gateway.keys import STORE
from gateway.models import Lead
from gateway.store.base import EventQuery, LeadQuery
from gateway.web import create_app

T = TypeVar("T")

FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)

E164 = re.compile(r"^\+[1-9]\d{6,14}$")

# --- the app under test, on its own loop -----------------------------------------------------


@dataclass
class Tally:
    created: set[str] = field(default_factory=set)  # lead ids named by 201 "created"
    statuses: dict[int, int] = field(default_factory=dict)
    codes: dict[str, int] = field(default_factory=dict)  # "label status error" -> count


class Harness:
    """One gateway app and a test client on a private event loop, for sync hypothesis tests."""

    def __init__(self, tmp_path: Path) -> None:
        self.runner = asyncio.Runner()
        # Rate limiting is switched off in effect: a 429 stores a JUNK lead without a 201,
        # which would blur the lead count this suite checks (the limiter has its own tests).
        # The test client is a trusted proxy, so garbage X-Forwarded-For is parsed, not ignored.
        app_settings = make_settings(
            tmp_path,
            ratelimit={"requests": 10_000_000, "per_seconds": 1},
            server={"trusted_proxies": ["127.0.0.0/8", "::1/128"]},
        )
        self.app = create_app(app_settings)
        self.client: TestClient[Any, Any] = self.run(self._start())
        self.tally = Tally()
        # What the store held at the last look, through the Store protocol: the last event
        # seen, the events' stored size, and each lead's size (a merge grows its lead).
        self._cursor: str | None = None
        self._event_bytes = 0
        self._lead_bytes: dict[str, int] = {}

    async def _start(self) -> TestClient[Any, Any]:
        client: TestClient[Any, Any] = TestClient(TestServer(self.app))
        await client.start_server()
        return client

    def run(self, coro: Awaitable[T]) -> T:
        return self.runner.run(_wrap(coro))

    def __enter__(self) -> Harness:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.run(self.client.close())
        finally:
            self.runner.close()

    async def lead(self, lead_id: str) -> Lead | None:
        return await self.app[STORE].get_lead(lead_id)

    async def newest_lead(self) -> Lead:
        (lead,) = await self.app[STORE].list_leads(LeadQuery(limit=1))
        return lead

    async def _look(self) -> None:
        """Take in the events stored since the last look (the store lists them in the
        order stored, so the last one seen is the cursor)."""
        store = self.app[STORE]
        touched: set[str] = set()
        while True:
            page = await store.list_events(EventQuery(after_id=self._cursor, limit=500))
            for stored in page:
                record = stored.record.model_dump(mode="json")
                self._event_bytes += len(orjson.dumps({"record": record, "raw": stored.raw}))
                if stored.lead_id is not None:
                    touched.add(stored.lead_id)
            if page:
                self._cursor = page[-1].record.id
            if len(page) < 500:
                break
        for lead_id in touched:
            lead = await store.get_lead(lead_id)
            assert lead is not None, lead_id
            doc = lead.model_copy(update={"events": ()}).model_dump_json()
            self._lead_bytes[lead_id] = len(doc.encode())

    async def stored_bytes(self) -> int:
        """What the leads and events hold, as stored documents (record, raw, lead)."""
        await self._look()
        return self._event_bytes + sum(self._lead_bytes.values())

    async def lead_count(self) -> int:
        await self._look()
        # Every lead has its events; count them from the store's own list as well.
        counted = len(await all_leads(self.app[STORE]))
        assert counted == len(self._lead_bytes), (counted, len(self._lead_bytes))
        return counted


async def _wrap(coro: Awaitable[T]) -> T:
    return await coro


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    with Harness(tmp_path) as h:
        yield h


# --- strategies: values ---------------------------------------------------------------------

# Surrogates, NUL, RTL marks, emoji, Cyrillic: the characters that break naive code.
odd_chars = st.one_of(
    st.characters(),
    st.sampled_from(
        ["\x00", "\ud800", "\udfff", "\\ud800", "\u202e", "\ufeff", "\U0001f600", "й", "\n"]
    ),
)
odd_text = st.lists(odd_chars, max_size=40).map("".join)
long_text = st.builds(
    lambda ch, n: ch * n, st.sampled_from(["a", "я", "7", " "]), st.integers(0, 70_000)
)
text = st.one_of(odd_text, long_text, st.text(max_size=10))

big_ints = st.one_of(
    st.integers(), st.integers(min_value=2**63 - 5, max_value=2**70), st.just(-(2**80))
)
numbers = st.one_of(
    big_ints,
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["NaN", "nan", "Infinity", "-Infinity", "1e999999", "-0", "1e-999999", "0x10"]),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, text)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(st.lists(odd_chars, max_size=8).map("".join), children, max_size=5),
    ),
    max_leaves=20,
)

valid_phones = st.sampled_from(
    [
        "+7 916 123-45-67",
        "8 (916) 123-45-67",
        "79161234567",
        "+79031112233",
        "+44 20 7946 0958",
        "+1 212 555 0100",
        "0079261234567",
    ]
)
# Valid Moscow mobiles, mostly never seen before: new leads rather than merges.
fresh_phones = st.builds(lambda n: f"+7 916 {n:07d}", st.integers(0, 9_999_999))
# Numbers built digit by digit: most are invalid, some land on valid RU mobiles.
digit_phones = st.builds(lambda d: "+7 9" + d, st.text(string.digits, min_size=0, max_size=12))
phones = st.one_of(valid_phones, digit_phones, text, numbers)
emails = st.one_of(
    st.sampled_from(
        ["ivan@example.ru", "Ivan@Mail.RU", "user@пример.рф", "a@b", "@x.ru", "x@@y.ru", "x@.ru"]
    ),
    st.emails(),
    text,
)


def _maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.just(_ABSENT), strategy)


_ABSENT = object()


def _fixed(**parts: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """A dict with these keys, each present or not; absent keys are dropped."""
    return st.fixed_dictionaries({k: _maybe(v) for k, v in parts.items()}).map(
        lambda d: {k: v for k, v in d.items() if v is not _ABSENT}
    )


form_dicts = st.one_of(
    _fixed(
        name=st.one_of(st.sampled_from(["Иван", "Анна Петрова", " "]), scalars),
        phone=phones,
        email=emails,
        equipment_type=st.one_of(st.sampled_from(["Крупное", "Мелкое", "крупное", ""]), scalars),
        comment=st.one_of(text, json_values),
        website=st.one_of(st.just(""), scalars),
        utm_source=scalars,
        extra=json_values,
    ),
    # Mostly valid submissions, so the accept path (and replays, merges) is fuzzed too.
    st.builds(
        lambda name, phone, comment: {"name": name, "phone": phone, "comment": comment},
        st.sampled_from(["Иван", "Мария", "Bob"]),
        st.one_of(valid_phones, fresh_phones),
        st.one_of(st.none(), st.text(max_size=60)),
    ),
)

items = _fixed(
    sku=scalars,
    name=st.one_of(st.sampled_from(["Станок", "Пила"]), scalars),
    quantity=st.one_of(st.integers(-2, 5), numbers),
    price=st.one_of(st.integers(0, 10**6), numbers),
    category=st.one_of(st.sampled_from(["Крупное", "Мелкое", "x"]), scalars),
)
order_ids = st.one_of(
    st.builds(str, st.integers(1, 10**6)), st.integers(1, 40), odd_text, numbers, json_values
)
customers = st.one_of(
    _fixed(name=scalars, phone=phones, email=emails, company=scalars, extra=json_values),
    json_values,
)
order_dicts = st.one_of(
    _fixed(
        order_id=order_ids,
        created_at=st.one_of(
            st.sampled_from(["2026-01-12T10:00:00+03:00", "2099-01-01T00:00:00Z", "yesterday"]),
            scalars,
        ),
        customer=customers,
        items=st.one_of(st.lists(items, max_size=4), json_values),
        total=numbers,
        currency=st.one_of(st.sampled_from(["RUB", "USD", "рубли"]), scalars),
        comment=st.one_of(text, scalars),
        utm=st.one_of(st.dictionaries(odd_text, st.one_of(odd_text, scalars), max_size=3), scalars),
        surprise=json_values,
    ),
    st.builds(
        lambda oid, name, phone: {
            "order_id": oid,
            "customer": {"name": name, "phone": phone},
            "items": [{"name": "Станок", "quantity": 1, "price": 1000}],
        },
        st.one_of(st.builds(str, st.integers(1, 300)), st.builds(str, st.integers(1, 10**9))),
        st.sampled_from(["Иван", "Olga"]),
        st.one_of(valid_phones, fresh_phones),
    ),
)


# --- strategies: bodies and headers -----------------------------------------------------------


@dataclass(frozen=True)
class Body:
    data: bytes
    content_type: str | None  # None: no Content-Type header at all
    label: str


def _json_bytes(value: Any, ascii_only: bool, nan_tokens: bool) -> bytes:
    try:
        out = json.dumps(value, ensure_ascii=ascii_only, allow_nan=nan_tokens)
    except ValueError:  # NaN with allow_nan=False
        out = json.dumps(value, ensure_ascii=True, allow_nan=True)
    return out.encode("utf-8", "surrogatepass")


def _flat(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _urlencoded(fields: dict[str, Any]) -> bytes:
    pairs = [(k, _flat(v)) for k, v in fields.items()]
    return urllib.parse.urlencode(pairs, encoding="utf-8", errors="surrogatepass").encode("ascii")


def _multipart(fields: dict[str, Any], boundary: str, declared: str, mangle: int) -> Body:
    parts = []
    for i, (name, value) in enumerate(fields.items()):
        disposition = f'form-data; name="{name}"'
        extra = ""
        if mangle == 1 and i == 0:
            disposition += '; filename="price list.pdf"'
            extra = "Content-Type: application/pdf\r\n"
        elif mangle == 2 and i == 0:
            extra = "Content-Type: text/plain; charset=no-such-charset\r\n"
        elif mangle == 3 and i == 0:
            extra = "Content-Transfer-Encoding: x-garbage\r\n"
        elif mangle == 4 and i == 0:
            disposition = "form-data"  # a part without a name
        elif mangle == 5 and i == 0:
            extra = "Content-Encoding: gzip\r\n"
        elif mangle == 7 and i == 0:
            extra = "Content-Type: text/plain; charset=unicode_escape\r\n"
        head = f"--{boundary}\r\nContent-Disposition: {disposition}\r\n{extra}\r\n"
        raw_head = head.encode("utf-8", "surrogatepass")
        if mangle == 8 and i == 0:  # a filename that is not UTF-8 at all
            raw_head = raw_head.replace(b"form-data;", b'form-data; filename="\xff\xfe.pdf";', 1)
        parts.append(raw_head + _flat(value).encode("utf-8", "surrogatepass") + b"\r\n")
    tail = f"--{boundary}--\r\n".encode() if mangle != 6 else b""  # 6: no closing boundary
    ctype = "multipart/form-data" + (f"; boundary={declared}" if declared else "")
    return Body(b"".join(parts) + tail, ctype, f"multipart/{mangle}")


boundaries = st.one_of(
    st.text(string.ascii_letters + string.digits + "'()+_,-./:=?", min_size=1, max_size=70),
    st.sampled_from(["", " ", '"quoted"', "x" * 71, "бoundary", "a;b", "--"]),
)


@st.composite
def bodies(
    draw: st.DrawFn, structured: st.SearchStrategy[dict[str, Any]], *, json_only: bool = False
) -> Body:
    # Weighted towards bodies that parse, so the accept path is fuzzed as hard.
    forms = ["json"] * 6 + ["urlencoded"] * 3 + ["multipart"] * 3
    kind = draw(
        st.sampled_from(
            (["json"] * 14 + ["urlencoded", "multipart"] if json_only else forms)
            + ["json-any", "bytes", "text", "none", "oversize"]
        )
    )
    if kind == "json":
        value = draw(structured)
        data = _json_bytes(value, draw(st.booleans()), draw(st.booleans()))
        ctype = draw(
            st.sampled_from(
                [
                    "application/json",
                    "application/json; charset=utf-8",
                    "application/json; charset=garbage",
                    "Application/JSON",
                    "application/json;;;",
                    "text/json",
                ]
            )
        )
        return Body(data, ctype, kind)
    if kind == "json-any":
        value = draw(json_values)
        return Body(_json_bytes(value, draw(st.booleans()), True), "application/json", kind)
    if kind == "urlencoded":
        if draw(st.booleans()):
            data = _urlencoded(draw(structured))
        else:
            data = draw(st.binary(max_size=300))
        charset = draw(
            st.sampled_from(
                [
                    "",
                    "; charset=utf-8",
                    "; charset=garbage",
                    "; charset=utf-16",
                    "; charset=unicode_escape",
                    "; charset=latin-1",
                ]
            )
        )
        return Body(data, "application/x-www-form-urlencoded" + charset, kind)
    if kind == "multipart":
        boundary = draw(boundaries)
        declared = boundary if draw(st.booleans()) else draw(boundaries)
        return _multipart(draw(structured), boundary, declared, draw(st.integers(0, 9)))
    if kind == "bytes":
        return Body(draw(st.binary(max_size=2000)), draw(content_types), kind)
    if kind == "text":
        return Body(draw(odd_text).encode("utf-8", "surrogatepass"), "text/plain", kind)
    if kind == "oversize":
        return Body(b"{" + b" " * (1024 * 1024 + 10) + b"}", "application/json", kind)
    return Body(_json_bytes(draw(structured), True, False), None, kind)


content_types = st.one_of(
    st.sampled_from(
        [
            "application/json",
            "application/x-www-form-urlencoded",
            "multipart/form-data",
            "multipart/form-data; boundary=zzz",
            "text/plain",
            "application/octet-stream",
            "*/*",
            "garbage",
            "application/",
            "/json",
            ";",
            "",
        ]
    ),
    st.text(string.printable.strip() + " ", max_size=60),
)

# Header values the HTTP layer itself accepts (visible ASCII, spaces, tabs): what arrives at
# our code. Control characters are refused by the protocol parser before any handler runs;
# the raw-socket test covers that layer.
header_text = st.text(
    string.printable.replace("\r", "").replace("\n", "").replace("\x0b", "").replace("\x0c", ""),
    max_size=80,
)


@st.composite
def headers(draw: st.DrawFn, orders: bool) -> dict[str, str]:
    out: dict[str, str] = {}
    if draw(st.booleans()):
        out["Accept"] = draw(
            st.one_of(
                st.sampled_from(
                    [
                        "text/html",
                        "text/html,application/xhtml+xml,*/*;q=0.8",
                        "application/json",
                        "*/*",
                        "text/html, application/json",
                    ]
                ),
                header_text,
            )
        )
    if draw(st.booleans()):
        out["Accept-Language"] = draw(
            st.one_of(
                st.sampled_from(
                    ["en", "en-US,en;q=0.9", "ru", "de;q=abc", "*", ",,,", "_", "zz-ZZ;q=2"]
                ),
                header_text,
            )
        )
    if draw(st.booleans()):
        key = draw(
            st.one_of(
                st.sampled_from(["k1", "k2", "k3"]),  # shared keys: replays across examples
                st.builds(lambda n: "k" * n, st.integers(0, 400)),
                header_text,
            )
        )
        out["Idempotency-Key"] = key
    if draw(st.booleans()):
        out["Origin"] = draw(
            st.one_of(
                st.sampled_from(["https://example.ru", "null", "*", "http://[::1"]), header_text
            )
        )
    if draw(st.booleans()):
        out["X-Forwarded-For"] = draw(
            st.one_of(st.sampled_from(["1.2.3.4", "::1, 10.0.0.1", "unknown", ",,"]), header_text)
        )
    if orders:
        auth = draw(
            st.one_of(
                st.just(ORDER_AUTH["Authorization"]),
                st.just(ORDER_AUTH["Authorization"]),
                st.sampled_from(
                    [
                        "",
                        "Bearer",
                        "Bearer ",
                        f"bearer {ORDERS_TOKEN}",
                        f"Basic {ORDERS_TOKEN}",
                        f"Bearer {ORDERS_TOKEN}x",
                        f"Bearer {ORDERS_TOKEN[:-1]}",
                    ]
                ),
                header_text,
            )
        )
        if auth or draw(st.booleans()):
            out["Authorization"] = auth
    return out


# --- the properties -------------------------------------------------------------------------


def _valid_contact(lead: Lead) -> bool:
    phones_ok = any(E164.match(p) and normalize_phone(p) == p for p in lead.contact.phones)
    emails_ok = any(normalize_email(e) == e for e in lead.contact.emails)
    # Nothing unnormalized may be stored beside the good value either.
    all_clean = all(normalize_phone(p) == p for p in lead.contact.phones) and all(
        normalize_email(e) == e for e in lead.contact.emails
    )
    return (phones_ok or emails_ok) and all_clean


async def post_and_check(h: Harness, path: str, body: Body, hdrs: dict[str, str]) -> None:
    skip = ["Content-Type"] if body.content_type is None else []
    if body.content_type is not None:
        hdrs = {**hdrs, "Content-Type": body.content_type}
    before = await h.lead_count()
    stored_before = await h.stored_bytes()
    resp = await h.client.post(
        path, data=body.data, headers=hdrs, skip_auto_headers=skip, allow_redirects=False
    )
    raw = await resp.read()
    status = resp.status
    added = await h.lead_count() - before
    grown = await h.stored_bytes() - stored_before
    h.tally.statuses[status] = h.tally.statuses.get(status, 0) + 1
    context = f"{status} for {body.label} {hdrs!r}: {raw[:300]!r}"
    assert status < 500, context
    # What a request stores is bounded by what it sent: no number or field may expand
    # ("1e999999" printed as a million digits) into megabytes on disk.
    assert grown <= 3 * len(body.data) + 20_000, f"stored {grown} bytes: {context}"
    if status == 303:  # a browser's post: accepted, but the receipt is not shown to it
        assert resp.headers.get("Location"), context
        assert added in (0, 1), context
        if added:
            newest = await h.newest_lead()
            assert _valid_contact(newest), f"stored garbage {newest.contact!r}: {context}"
            h.tally.created.add(newest.id)
        return
    accept = hdrs.get("Accept", "")
    browser = "text/html" in accept and "application/json" not in accept
    if path.startswith("/v1/forms/") and browser and status in (422, 429):
        # A person's plain form post reads an error page, not JSON.
        assert resp.content_type == "text/html", context
        assert raw.lower().startswith(b"<!doctype html"), context
        assert added == 0, f"a refused request stored a lead: {context}"
        return
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise AssertionError(f"not JSON: {context}") from None
    assert isinstance(doc, dict), context
    if 400 <= status < 500:
        assert isinstance(doc.get("error"), str) and doc["error"], context
        code = f"{body.label} {status} {doc['error']}"
        h.tally.codes[code] = h.tally.codes.get(code, 0) + 1
        assert resp.content_type == "application/json", context
        assert added == 0, f"a refused request stored a lead: {context}"
        return
    assert status in (200, 201), context
    assert set(doc) == {"event_id", "lead_id", "outcome"}, context
    assert (status == 200) == (doc["outcome"] == "replayed"), context
    assert doc["outcome"] in ("created", "merged", "replayed"), context
    assert added == (1 if doc["outcome"] == "created" else 0), context
    assert isinstance(doc["lead_id"], str), context
    lead = await h.lead(doc["lead_id"])
    assert lead is not None, f"receipt names a missing lead: {context}"
    assert _valid_contact(lead), f"stored garbage {lead.contact!r}: {context}"
    # Replays name the first event, which lives on the same lead.
    assert any(e.id == doc["event_id"] for e in lead.events), context
    if doc["outcome"] == "created":
        assert doc["lead_id"] not in h.tally.created, context
        h.tally.created.add(doc["lead_id"])


def _final_checks(h: Harness) -> None:
    # Shown by pytest on failure (and with -s): what the generators actually reached.
    print(f"statuses {sorted(h.tally.statuses.items())}, leads created {len(h.tally.created)}")
    print(f"refusals {sorted(h.tally.codes.items())}")
    count = h.run(h.lead_count())
    assert count == len(h.tally.created), (count, len(h.tally.created), h.tally.statuses)
    # The generators must reach both sides: many requests accepted, many refused.
    accepted = sum(n for s, n in h.tally.statuses.items() if s < 400)
    refused = sum(n for s, n in h.tally.statuses.items() if s >= 400)
    assert accepted >= 10 and refused >= 10, h.tally.statuses


def test_fuzz_forms(harness: Harness) -> None:
    @FUZZ
    @given(body=bodies(form_dicts), hdrs=headers(orders=False))
    def check(body: Body, hdrs: dict[str, str]) -> None:
        harness.run(post_and_check(harness, "/v1/forms/site", body, hdrs))

    check()
    _final_checks(harness)


HUGE_NUMBERS = orjson.dumps(
    {
        "order_id": "huge-numbers",
        "customer": {"phone": "+79161230000"},
        "items": [{"name": "Станок", "price": "1e999999", "quantity": "1e99999"}] * 3,
        "total": "1e999999",
    }
)


def test_fuzz_orders(harness: Harness) -> None:
    @FUZZ
    @example(body=Body(HUGE_NUMBERS, "application/json", "json"), hdrs=ORDER_AUTH)
    @given(body=bodies(order_dicts, json_only=True), hdrs=headers(orders=True))
    def check(body: Body, hdrs: dict[str, str]) -> None:
        harness.run(post_and_check(harness, "/v1/orders", body, hdrs))

    check()
    _final_checks(harness)


def test_fuzz_orders_without_token_store_nothing(harness: Harness) -> None:
    @settings(FUZZ, max_examples=60)
    @given(body=bodies(order_dicts, json_only=True), hdrs=headers(orders=False))
    def check(body: Body, hdrs: dict[str, str]) -> None:
        harness.run(post_and_check(harness, "/v1/orders", body, hdrs))

    check()
    assert harness.run(harness.lead_count()) == 0
    assert set(harness.tally.statuses) <= {401, 413}, harness.tally.statuses


# --- raw sockets: malformed HTTP against a real TCP server ------------------------------------

_GOOD_FORM = b"name=%D0%98%D0%B2%D0%B0%D0%BD&phone=%2B79161234567"
_ORDER = b'{"order_id":"1","customer":{"phone":"+79161234569"}}'
FORM = b"POST /v1/forms/site HTTP/1.1\r\nHost: x\r\n"
FORM_CT = b"Content-Type: application/x-www-form-urlencoded\r\n"
ORDER = (
    b"POST /v1/orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    + f"Authorization: Bearer {ORDERS_TOKEN}\r\n".encode()
)
CHUNKED = b"Transfer-Encoding: chunked\r\n"
_BAD_FILENAME = (
    b'--b\r\nContent-Disposition: form-data; name="name"\r\n\r\nIvan\r\n'
    b'--b\r\nContent-Disposition: form-data; name="phone"\r\n\r\n+79161234567\r\n'
    b'--b\r\nContent-Disposition: form-data; name="f"; filename="\xff.pdf"\r\n\r\n'
    b"xx\r\n--b--\r\n"
)


def _len(n: int | bytes | str) -> bytes:
    return f"Content-Length: {len(n) if isinstance(n, bytes) else n}\r\n".encode()


# (label, bytes to send, whether to half-close the socket after sending)
RAW_REQUESTS: list[tuple[str, bytes, bool]] = [
    ("content-length not a number", FORM + FORM_CT + _len("abc") + b"\r\n" + _GOOD_FORM, False),
    ("negative content-length", FORM + FORM_CT + _len(-5) + b"\r\n", False),
    ("two content-lengths", FORM + FORM_CT + _len(3) + _len(40) + b"\r\n" + _GOOD_FORM, False),
    ("content-length too large, then EOF", FORM + FORM_CT + _len(500) + b"\r\n" + _GOOD_FORM, True),
    ("content-length too small", FORM + FORM_CT + _len(10) + b"\r\n" + _GOOD_FORM, False),
    ("truncated JSON order, then EOF", ORDER + _len(200) + b'\r\n{"order_id": "77", "cu', True),
    ("chunk size not hex", FORM + FORM_CT + CHUNKED + b"\r\nzz\r\nabc\r\n0\r\n\r\n", False),
    ("chunk short, then EOF", ORDER + CHUNKED + b'\r\nff\r\n{"order_id": 1}', True),
    (
        "chunked and length",
        FORM + FORM_CT + _len(5) + CHUNKED + b"\r\n5\r\nhello\r\n0\r\n\r\n",
        False,
    ),
    (
        "unknown transfer-encoding",
        FORM + FORM_CT + b"Transfer-Encoding: gzip, chunked, bogus\r\n\r\n0\r\n\r\n",
        False,
    ),
    (
        "chunked body over the size limit",
        ORDER + CHUNKED + b"\r\n" + (b"100000\r\n" + b" " * 0x100000 + b"\r\n") * 2 + b"0\r\n\r\n",
        False,
    ),
    (
        "gzip content-encoding on garbage",
        ORDER + b"Content-Encoding: gzip\r\n" + _len(10) + b"\r\n0123456789",
        False,
    ),
    (
        "deflate content-encoding on a garbage form",
        FORM + FORM_CT + b"Content-Encoding: deflate\r\n" + _len(10) + b"\r\n0123456789",
        False,
    ),
    ("header with a NUL byte", FORM + b"Accept: a\x00b\r\n" + _len(0) + b"\r\n", False),
    (
        "non-UTF-8 header value",
        FORM + b"Accept-Language: \xff\xfe\r\n" + FORM_CT + _len(_GOOD_FORM) + b"\r\n" + _GOOD_FORM,
        False,
    ),
    (
        "non-UTF-8 content type",
        FORM + b"Content-Type: application/\xe9json\r\n" + _len(2) + b"\r\n{}",
        False,
    ),
    (
        "no Host, HTTP/1.0",
        b"POST /v1/forms/site HTTP/1.0\r\n" + FORM_CT + _len(_GOOD_FORM) + b"\r\n" + _GOOD_FORM,
        False,
    ),
    ("garbage request line", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 hello?\r\n\r\n", False),
    ("header line without a colon", ORDER + b"this is not a header\r\n" + _len(0) + b"\r\n", False),
    ("huge header", ORDER + b"X-Big: " + b"a" * 70_000 + b"\r\n" + _len(0) + b"\r\n", False),
    (
        "urlencoded with invalid percent escapes",
        FORM + FORM_CT + _len(b"name=%ZZ&phone=%E") + b"\r\nname=%ZZ&phone=%E",
        False,
    ),
    (
        "urlencoded that is not UTF-8",
        FORM + FORM_CT + _len(b"name=\xff\xfe&p=1") + b"\r\nname=\xff\xfe&p=1",
        False,
    ),
    (
        "idempotency key that is not UTF-8",
        ORDER + b"Idempotency-Key: \xff\xfe\r\n" + _len(_ORDER) + b"\r\n" + _ORDER,
        False,
    ),
    (
        "multipart filename that is not UTF-8",
        FORM
        + b"Content-Type: multipart/form-data; boundary=b\r\n"
        + _len(_BAD_FILENAME)
        + b"\r\n"
        + _BAD_FILENAME,
        False,
    ),
]


async def _raw_exchange(port: int, payload: bytes, half_close: bool) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        await writer.drain()
        if half_close:
            writer.write_eof()
        try:
            return await asyncio.wait_for(reader.read(65536), timeout=5)
        except (ConnectionResetError, BrokenPipeError):
            return b""
    finally:
        writer.close()
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            await writer.wait_closed()


@pytest.mark.parametrize(
    ("label", "payload", "half_close"), RAW_REQUESTS, ids=[r[0] for r in RAW_REQUESTS]
)
async def test_malformed_http_never_500(
    tmp_path: Path, label: str, payload: bytes, half_close: bool
) -> None:
    app: web.Application = create_app(make_settings(tmp_path))
    server = TestServer(app)
    await server.start_server()
    try:
        assert server.port is not None
        answer = await _raw_exchange(server.port, payload, half_close)
        status_line = answer.split(b"\r\n", 1)[0]
        assert not re.match(rb"HTTP/1\.[01] 5\d\d", status_line), (label, answer[:400])
        # The server is still healthy afterwards, and stored nothing it could not parse
        # (except for requests that were well-formed enough to be accepted).
        async with TestClient(server) as client:
            resp = await client.get("/healthz")
            assert resp.status == 200
            for lead in await all_leads(app[STORE]):
                assert _valid_contact(lead), (label, lead.contact)
    finally:
        await server.close()
