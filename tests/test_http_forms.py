"""POST /v1/forms/{form_id} over real HTTP: body shapes, receipts, every error path, protection."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient
from conftest import ADMIN_AUTH

from connectors.webform import MSG_INVALID, MSG_REQUIRED
from gateway.config import Settings
from gateway.i18n import available, translations
from gateway.web import create_app

Client = TestClient[Any, Any]
ClientFactory = Callable[..., Any]

GOOD = {
    "name": "Иван Петров",
    "phone": "8 (916) 123-45-67",
    "email": "Ivan@Example.RU",
    "equipment_type": "Крупное",
    "comment": "Нужен станок",
}


async def make_client(
    aiohttp_client: ClientFactory, settings_factory: Callable[..., Settings], **overrides: Any
) -> Client:
    client: Client = await aiohttp_client(create_app(settings_factory(**overrides)))
    return client


async def get_lead(client: Client, lead_id: str) -> dict[str, Any]:
    resp = await client.get(f"/v1/leads/{lead_id}", headers=ADMIN_AUTH)
    assert resp.status == 200
    lead: dict[str, Any] = await resp.json()
    return lead


async def all_leads(client: Client) -> list[dict[str, Any]]:
    resp = await client.get("/v1/leads?limit=500", headers=ADMIN_AUTH)
    assert resp.status == 200
    leads: list[dict[str, Any]] = (await resp.json())["leads"]
    return leads


def person(n: int) -> dict[str, str]:
    """A distinct valid person per n, so dedup does not merge them."""
    return {"name": f"Клиент {n}", "phone": f"+7 916 555-{n // 100:02d}-{n % 100:02d}"}


# --- body shapes and receipts ---------------------------------------------------------------


async def test_json_post_returns_receipt_and_stores_lead(client: Client) -> None:
    resp = await client.post("/v1/forms/site", json=GOOD)
    assert resp.status == 201
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert set(body) == {"event_id", "lead_id", "outcome"}
    assert body["outcome"] == "created"

    lead = await get_lead(client, body["lead_id"])
    assert lead["status"] == "NEW"
    assert lead["channel"] == "webform"
    assert lead["source_id"] == "WEBFORM"
    assert lead["contact"]["name"] == "Иван Петров"
    assert lead["contact"]["phones"] == ["+79161234567"]
    assert lead["contact"]["emails"] == ["ivan@example.ru"]
    assert lead["interest"]["equipment_category"] == "Крупное"
    assert [e["id"] for e in lead["events"]] == [body["event_id"]]
    assert lead["events"][0]["text"] == "Нужен станок"
    assert lead["events"][0]["source_detail"] == "site"


async def test_urlencoded_post(client: Client) -> None:
    resp = await client.post("/v1/forms/site", data={"name": "Ольга", "phone": "+79031112233"})
    assert resp.status == 201
    body = await resp.json()
    assert body["outcome"] == "created"
    lead = await get_lead(client, body["lead_id"])
    assert lead["contact"]["name"] == "Ольга"
    assert lead["contact"]["phones"] == ["+79031112233"]


def browser_multipart(boundary: str, file_bytes: bytes) -> bytes:
    """A multipart body as browsers send it: UTF-8 names raw in the quoted filename."""
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in (("name", "Сергей"), ("phone", "+7 903 111-22-44"), ("comment", "См."))
    ]
    head = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="drawing"; filename="чертёж.pdf"\r\n'
        "Content-Type: application/pdf\r\n\r\n"
    )
    return ("".join(parts) + head).encode() + file_bytes + f"\r\n--{boundary}--\r\n".encode()


async def test_multipart_post_with_file_keeps_metadata(client: Client) -> None:
    boundary = "----WebKitFormBoundary7MA4YWxkTrZu0gW"
    body = browser_multipart(boundary, b"%PDF-1.4\x00\xff binary drawing bytes")
    resp = await client.post(
        "/v1/forms/site",
        data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert resp.status == 201, await resp.text()
    lead = await get_lead(client, (await resp.json())["lead_id"])
    assert lead["contact"]["name"] == "Сергей"
    assert lead["contact"]["phones"] == ["+79031112244"]
    event = lead["events"][0]
    assert event["text"] == "См."
    # What the file was is kept; its bytes are not.
    assert event["meta"]["files_not_stored"] == [
        {"field": "drawing", "name": "чертёж.pdf", "type": "application/pdf"}
    ]


async def test_multipart_from_aiohttp_formdata(client: Client) -> None:
    form = FormData()
    form.add_field("name", "Сергей")
    form.add_field("phone", "+7 903 111-22-45")
    form.add_field("scan", io.BytesIO(b"x" * 100), filename="scan.png", content_type="image/png")
    resp = await client.post("/v1/forms/site", data=form)
    assert resp.status == 201
    lead = await get_lead(client, (await resp.json())["lead_id"])
    assert lead["events"][0]["meta"]["files_not_stored"] == [
        {"field": "scan", "name": "scan.png", "type": "image/png"}
    ]


@pytest.mark.parametrize(
    ("ctype", "body"),
    [
        ("multipart/form-data", b"no boundary parameter"),
        ("multipart/form-data; boundary=x", b""),
        ("multipart/form-data; boundary=x", b"--x\r\nno headers and no end"),
        ("multipart/form-data; boundary=x", b'--x\r\nContent-Disposition: form-data; name="n"'),
        (
            "multipart/form-data; boundary=x",
            b"--x\r\nContent-Type: text/plain\r\n\r\nv\r\n--x--\r\n",
        ),
        (
            "multipart/form-data; boundary=x",
            b'--x\r\nContent-Disposition: form-data; name="name"\r\n'
            b"Content-Type: text/plain; charset=no-such-charset\r\n\r\nv\r\n--x--\r\n",
        ),
        ("application/x-www-form-urlencoded; charset=no-such-charset", b"name=a"),
    ],
)
async def test_unreadable_form_body_is_400(client: Client, ctype: str, body: bytes) -> None:
    resp = await client.post("/v1/forms/site", data=body, headers={"Content-Type": ctype})
    assert resp.status == 400, await resp.text()
    assert (await resp.json())["error"] == "invalid_form"
    assert await all_leads(client) == []


async def test_html_post_redirects_to_thank_you_page(
    aiohttp_client: ClientFactory, settings_factory: Callable[..., Settings]
) -> None:
    client = await make_client(
        aiohttp_client,
        settings_factory,
        forms={"site": {"thank_you_url": "https://example.ru/spasibo"}},
    )
    resp = await client.post(
        "/v1/forms/site",
        data=person(1),
        headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"},
        allow_redirects=False,
    )
    assert resp.status == 303
    assert resp.headers["Location"] == "https://example.ru/spasibo"
    # The 303 is only sent after the lead is stored.
    leads = await all_leads(client)
    assert len(leads) == 1
    assert leads[0]["contact"]["name"] == "Клиент 1"


async def test_idempotency_key_replays_the_same_receipt(client: Client) -> None:
    headers = {"Idempotency-Key": "submit-42"}
    first = await client.post("/v1/forms/site", json=person(2), headers=headers)
    assert first.status == 201
    again = await client.post("/v1/forms/site", json=person(2), headers=headers)
    assert again.status == 200
    a, b = await first.json(), await again.json()
    assert b["outcome"] == "replayed"
    assert (b["event_id"], b["lead_id"]) == (a["event_id"], a["lead_id"])
    lead = await get_lead(client, a["lead_id"])
    assert len(lead["events"]) == 1
    # Without the key the same person posting again is a new event on the same lead.
    third = await client.post("/v1/forms/site", json=person(2))
    assert third.status == 201
    assert (await third.json())["outcome"] == "merged"


# --- validation: 422 naming each field, in Russian --------------------------------------------


async def post_invalid(
    client: Client, body: Any, detail: str = "Проверьте поля формы", **kw: Any
) -> dict[str, str]:
    resp = await client.post("/v1/forms/site", json=body, **kw)
    assert resp.status == 422, await resp.text()
    payload = await resp.json()
    assert payload["error"] == "invalid_fields"
    assert payload["detail"] == detail
    fields: dict[str, str] = payload["fields"]
    return fields


async def test_missing_required_fields_are_named(client: Client) -> None:
    fields = await post_invalid(client, {"comment": "без имени"})
    assert fields == {
        "name": "Заполните поле «Имя»",
        "phone": "Заполните поле «Телефон»",
    }
    # Whitespace only is missing too.
    fields = await post_invalid(client, {"name": "   ", "phone": "+79161234567"})
    assert fields == {"name": "Заполните поле «Имя»"}


async def test_each_bad_field_is_named_in_russian(client: Client) -> None:
    fields = await post_invalid(
        client,
        {
            "name": "x" * 201,
            "phone": "123",
            "email": "not-an-email",
            "equipment_type": "Среднее",
        },
    )
    assert set(fields) == {"name", "phone", "email", "equipment_type"}
    assert fields["name"] == "Слишком длинное значение: не больше 200 символов"
    assert fields["phone"].startswith("Укажите телефон полностью")
    assert fields["email"].startswith("Проверьте адрес почты")
    assert fields["equipment_type"] == "Выберите одно из значений: Крупное, Мелкое"


@pytest.mark.parametrize("bad", [["Иван"], {"first": "Иван"}, 42, 4.2, True])
async def test_non_string_json_name_is_rejected(client: Client, bad: Any) -> None:
    fields = await post_invalid(client, {"name": bad, "phone": "+79161234567"})
    assert fields == {"name": "Ожидается текст"}


async def test_phone_as_json_number_is_accepted(client: Client) -> None:
    # Shops' JavaScript often sends phones as numbers; that is still a phone.
    resp = await client.post("/v1/forms/site", json={"name": "Ира", "phone": 79161234568})
    assert resp.status == 201
    lead = await get_lead(client, (await resp.json())["lead_id"])
    assert lead["contact"]["phones"] == ["+79161234568"]


async def test_invalid_post_stores_nothing(client: Client) -> None:
    await post_invalid(client, {"name": "Иван", "phone": "1"})
    assert await all_leads(client) == []


async def test_accept_language_en_uses_catalog_or_falls_back_to_russian(client: Client) -> None:
    if "en" in available():
        en = translations("en").gettext
        required, detail = en(MSG_REQUIRED).format(label="Имя"), en(MSG_INVALID)
        assert detail != MSG_INVALID  # the catalog really translates
    else:
        required, detail = "Заполните поле «Имя»", MSG_INVALID
    fields = await post_invalid(
        client, {"phone": "+79161234567"}, detail, headers={"Accept-Language": "en-US,en;q=0.9"}
    )
    assert fields == {"name": required}


async def test_unknown_language_falls_back_to_russian(client: Client) -> None:
    fields = await post_invalid(
        client, {"phone": "+79161234567"}, headers={"Accept-Language": "xx-YY, zz;q=0.5"}
    )
    assert fields == {"name": "Заполните поле «Имя»"}


# --- malformed requests -----------------------------------------------------------------------


async def test_broken_json_is_400(client: Client) -> None:
    resp = await client.post(
        "/v1/forms/site",
        data='{"name": "Иван",'.encode(),
        headers={"Content-Type": "application/json"},
    )
    assert resp.status == 400
    assert (await resp.json())["error"] == "invalid_json"


@pytest.mark.parametrize("body", [b"[1, 2]", b'"text"', b"null", b"42"])
async def test_json_that_is_not_an_object_is_400(client: Client, body: bytes) -> None:
    resp = await client.post(
        "/v1/forms/site", data=body, headers={"Content-Type": "application/json"}
    )
    assert resp.status == 400
    assert (await resp.json())["error"] == "invalid_json"


async def test_text_plain_is_415(client: Client) -> None:
    resp = await client.post(
        "/v1/forms/site", data="name=Иван", headers={"Content-Type": "text/plain"}
    )
    assert resp.status == 415
    assert (await resp.json())["error"] == "unsupported_media_type"


async def test_unknown_form_is_404(client: Client) -> None:
    resp = await client.post("/v1/forms/nope", json=GOOD)
    assert resp.status == 404
    assert (await resp.json())["error"] == "unknown_form"
    assert await all_leads(client) == []


async def test_oversize_body_with_content_length_is_413(
    aiohttp_client: ClientFactory, settings_factory: Callable[..., Settings]
) -> None:
    client = await make_client(aiohttp_client, settings_factory, server={"max_body_bytes": 2048})
    body = orjson.dumps({**GOOD, "comment": "я" * 3000})
    assert len(body) > 2048
    resp = await client.post(
        "/v1/forms/site", data=body, headers={"Content-Type": "application/json"}
    )
    assert resp.status == 413
    payload = await resp.json()
    assert payload["error"] == "body_too_large"
    assert "2048" in payload["detail"]


async def test_oversize_chunked_body_without_length_is_413(
    aiohttp_client: ClientFactory, settings_factory: Callable[..., Settings]
) -> None:
    client = await make_client(aiohttp_client, settings_factory, server={"max_body_bytes": 2048})
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        yield '{"name": "Иван", "phone": "+79161234567", "comment": "'.encode()
        for _ in range(4):
            sent += 1024
            yield b"x" * 1024
        yield b'"}'

    resp = await client.post(
        "/v1/forms/site", data=chunks(), headers={"Content-Type": "application/json"}
    )
    assert resp.status == 413
    assert "Content-Length" not in resp.request_info.headers
    assert resp.request_info.headers.get("Transfer-Encoding") == "chunked"
    assert (await resp.json())["error"] == "body_too_large"


async def test_oversize_urlencoded_body_is_413(
    aiohttp_client: ClientFactory, settings_factory: Callable[..., Settings]
) -> None:
    client = await make_client(aiohttp_client, settings_factory, server={"max_body_bytes": 2048})
    resp = await client.post("/v1/forms/site", data={**person(3), "comment": "z" * 5000})
    assert resp.status == 413
    assert await all_leads(client) == []


# --- honeypot and rate limit -----------------------------------------------------------------


async def test_honeypot_makes_a_junk_lead(client: Client) -> None:
    resp = await client.post("/v1/forms/site", json={**person(4), "website": "http://spam.example"})
    assert resp.status == 201  # the bot must not learn it was caught
    body = await resp.json()
    assert body["outcome"] == "created"
    lead = await get_lead(client, body["lead_id"])
    assert lead["status"] == "JUNK"
    assert lead["junk_reason"] == "honeypot"
    assert lead["assigned_to"] is None


async def test_empty_honeypot_is_a_normal_lead(client: Client) -> None:
    resp = await client.post("/v1/forms/site", json={**person(5), "website": ""})
    lead = await get_lead(client, (await resp.json())["lead_id"])
    assert lead["status"] == "NEW"
    assert lead["junk_reason"] is None


async def test_rate_limit_429_keeps_one_junk_lead_per_window(
    aiohttp_client: ClientFactory, settings_factory: Callable[..., Settings]
) -> None:
    client = await make_client(
        aiohttp_client, settings_factory, ratelimit={"requests": 2, "per_seconds": 3600}
    )
    for n in (10, 11):
        assert (await client.post("/v1/forms/site", json=person(n))).status == 201
    third = await client.post("/v1/forms/site", json=person(12))
    assert third.status == 429
    retry_after = int(third.headers["Retry-After"])
    assert retry_after >= 1
    payload = await third.json()
    assert payload["error"] == "rate_limited"
    assert f"{retry_after} с" in payload["detail"]
    fourth = await client.post("/v1/forms/site", json=person(13))
    assert fourth.status == 429
    # An invalid body while limited is still answered 429, not 422, and stored nowhere.
    fifth = await client.post("/v1/forms/site", json={"name": "x"})
    assert fifth.status == 429

    leads = await all_leads(client)
    assert len(leads) == 3
    junk = [lead for lead in leads if lead["status"] == "JUNK"]
    assert len(junk) == 1
    assert junk[0]["junk_reason"] == "rate limited"
    assert junk[0]["contact"]["name"] == "Клиент 12"
    assert sorted(lead["contact"]["name"] for lead in leads if lead["status"] == "NEW") == [
        "Клиент 10",
        "Клиент 11",
    ]


async def test_exempt_ip_is_not_limited(
    aiohttp_client: ClientFactory, settings_factory: Callable[..., Settings]
) -> None:
    client = await make_client(
        aiohttp_client,
        settings_factory,
        ratelimit={"requests": 1, "per_seconds": 3600, "exempt": ["127.0.0.0/8"]},
    )
    for n in range(20, 25):
        assert (await client.post("/v1/forms/site", json=person(n))).status == 201
    assert len(await all_leads(client)) == 5


async def test_forwarded_for_is_ignored_from_untrusted_peer(
    aiohttp_client: ClientFactory, settings_factory: Callable[..., Settings]
) -> None:
    client = await make_client(
        aiohttp_client, settings_factory, ratelimit={"requests": 1, "per_seconds": 3600}
    )
    first = await client.post(
        "/v1/forms/site", json=person(30), headers={"X-Forwarded-For": "203.0.113.1"}
    )
    assert first.status == 201
    # A client cannot escape its bucket by inventing an address.
    second = await client.post(
        "/v1/forms/site", json=person(31), headers={"X-Forwarded-For": "203.0.113.2"}
    )
    assert second.status == 429


async def test_forwarded_for_is_honoured_from_trusted_proxy(
    aiohttp_client: ClientFactory, settings_factory: Callable[..., Settings]
) -> None:
    client = await make_client(
        aiohttp_client,
        settings_factory,
        ratelimit={"requests": 1, "per_seconds": 3600},
        server={"trusted_proxies": ["127.0.0.1"]},
    )

    async def post(n: int, xff: str) -> int:
        resp = await client.post("/v1/forms/site", json=person(n), headers={"X-Forwarded-For": xff})
        return resp.status

    assert await post(40, "203.0.113.1") == 201
    assert await post(41, "203.0.113.2") == 201  # another client behind the proxy
    assert await post(42, "203.0.113.1") == 429  # the first client again
    # The right-most address not ours is the client; what it claims further left is not.
    assert await post(43, "198.51.100.9, 203.0.113.2") == 429
    assert await post(44, "203.0.113.3, 127.0.0.1") == 201


# --- configured forms -------------------------------------------------------------------------


async def test_custom_form_fields_land_in_lead(
    aiohttp_client: ClientFactory, settings_factory: Callable[..., Settings]
) -> None:
    callback = {
        "title": "Обратный звонок",
        "channel": "callback",
        "thank_you_url": "/call-me/thanks",
        "honeypot_field": None,
        "fields": {
            "fio": {"label": "ФИО", "required": True, "maps_to": "name"},
            "tel": {"label": "Телефон", "kind": "phone", "required": True, "maps_to": "phone"},
            "firm": {"label": "Компания", "maps_to": "company"},
            "when": {
                "label": "Когда позвонить",
                "kind": "choice",
                "choices": ["утром", "вечером"],
            },
            "machine": {"label": "Станок", "maps_to": "probable_equipment"},
            "city": {"label": "Город"},
        },
    }
    client = await make_client(aiohttp_client, settings_factory, forms={"callback": callback})
    resp = await client.post(
        "/v1/forms/callback",
        json={
            "fio": "Анна Сидорова",
            "tel": "8 903 222-33-44",
            "firm": "ООО Ромашка",
            "when": "вечером",
            "machine": "Токарный 16К20",
            "city": "Тула",
            "utm_source": "yandex",
            "ref": "promo",
        },
    )
    assert resp.status == 201, await resp.text()
    lead = await get_lead(client, (await resp.json())["lead_id"])
    assert lead["channel"] == "callback"
    assert lead["source_id"] == "CALLBACK"
    assert lead["contact"]["name"] == "Анна Сидорова"
    assert lead["contact"]["phones"] == ["+79032223344"]
    assert lead["contact"]["company"] == "ООО Ромашка"
    assert lead["interest"]["probable_equipment"] == "Токарный 16К20"
    event = lead["events"][0]
    # Fields with no target are written into the lead text as "label: value".
    assert "Когда позвонить: вечером" in event["text"]
    assert "Город: Тула" in event["text"]
    assert event["utm"] == {"utm_source": "yandex"}
    assert event["meta"]["form_title"] == "Обратный звонок"
    assert event["meta"]["extra_fields"] == {"ref": "promo"}

    # The custom form validates with its own labels; the default form is gone.
    bad = await client.post("/v1/forms/callback", json={"tel": "+79032223344", "when": "ночью"})
    assert bad.status == 422
    assert (await bad.json())["fields"] == {
        "fio": "Заполните поле «ФИО»",
        "when": "Выберите одно из значений: утром, вечером",
    }
    assert (await client.post("/v1/forms/site", json=GOOD)).status == 404
    html = await client.post(
        "/v1/forms/callback",
        data={"fio": "Пётр", "tel": "+79032223355"},
        headers={"Accept": "text/html"},
        allow_redirects=False,
    )
    assert html.status == 303
    assert html.headers["Location"] == "/call-me/thanks"


async def test_retry_after_rate_limit_makes_the_real_lead(
    aiohttp_client: Callable[..., Any], settings_factory: Callable[..., Any]
) -> None:
    """The 429 says «retry later»; the client's retry with the same Idempotency-Key must
    create the real lead, not replay the JUNK copy kept of the limited post."""
    from gateway.web import create_app

    settings = settings_factory(ratelimit={"requests": 1, "per_seconds": 1})
    client = await aiohttp_client(create_app(settings))
    await client.post("/v1/forms/site", json={"name": "Первый", "phone": "+79165550001"})
    body = {"name": "Иван", "phone": "+79165558888"}
    key = {"Idempotency-Key": "k-xyz-2"}
    limited = await client.post("/v1/forms/site", json=body, headers=key)
    assert limited.status == 429
    await asyncio.sleep(float(limited.headers["Retry-After"]) + 0.1)
    retry = await client.post("/v1/forms/site", json=body, headers=key)
    assert retry.status == 201
    receipt = await retry.json()
    assert receipt["outcome"] in ("created", "merged")
    lead = await (await client.get(f"/v1/leads/{receipt['lead_id']}", headers=ADMIN_AUTH)).json()
    assert lead["status"] == "NEW"


def test_ipv6_clients_share_a_bucket_per_64() -> None:
    from connectors.webform import _bucket_of

    assert _bucket_of("2001:db8:1:2:aaaa::1") == _bucket_of("2001:db8:1:2:bbbb::9")
    assert _bucket_of("2001:db8:1:2::1") != _bucket_of("2001:db8:1:3::1")
    assert _bucket_of("192.0.2.7") == "192.0.2.7"
