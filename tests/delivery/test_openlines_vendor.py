"""Bitrix24's own documented payloads (fixtures/openlines, see its SOURCES.md) read by
leadgate: events in their form-encoded wire shape, token answers documented and recorded."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from b24_openlines_standin import php_pairs

from gateway.delivery.openlines.form import FormInvalid, nest, text
from gateway.delivery.openlines.oauth import KNOWN_AUTH_HOSTS, auth_server, grant_from

FIXTURES = Path(__file__).parent / "fixtures" / "openlines"


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads((FIXTURES / name).read_bytes())
    return data


def as_wire(value: Any) -> Any:
    """What PHP's http_build_query makes of a value: strings all the way down."""
    if isinstance(value, dict):
        return {k: as_wire(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_wire(v) for v in value]
    return str(value)


@pytest.mark.parametrize("name", sorted(p.name for p in (FIXTURES / "events").iterdir()))
def test_documented_events_survive_the_form_encoding(name: str) -> None:
    event = load(f"events/{name}")
    assert nest(php_pairs(event)) == as_wire(event)


def test_message_add_reads_as_the_docs_print_it() -> None:
    event = nest(php_pairs(load("events/OnImConnectorMessageAdd.json-representation.json")))
    assert text(event, "event") == "ONIMCONNECTORMESSAGEADD"
    assert text(event, "data", "MESSAGES", "0", "im", "message_id") == "86497"
    assert text(event, "data", "MESSAGES", "0", "chat", "id") == "channel-123"
    assert text(event, "auth", "application_token") == "831c76b092f9f135d9b6b36c3a720757"


def test_the_keys_a_real_portal_sent() -> None:
    # b24-rest-docs#257: the keys one integrator received (values as they were).
    pairs = [
        ("data[MESSAGES][0][im][chat_id]", "49"),
        ("data[MESSAGES][0][im][message_id]", "1209"),
        ("data[MESSAGES][0][message][user_id]", "1"),
        ("data[MESSAGES][0][message][text]", "текст"),
        ("data[MESSAGES][0][chat][id]", "external_chat_id_1"),
    ]
    got = nest(pairs)
    assert got["data"]["MESSAGES"][0] == {
        "im": {"chat_id": "49", "message_id": "1209"},
        "message": {"user_id": "1", "text": "текст"},
        "chat": {"id": "external_chat_id_1"},
    }


def test_forms_beyond_the_bounds_are_refused() -> None:
    with pytest.raises(FormInvalid):
        nest([("a" + "[x]" * 9, "1")])  # too deep
    with pytest.raises(FormInvalid):
        nest([(f"k{i}", "1") for i in range(2001)])


@pytest.mark.parametrize(
    ("pairs", "expected"),
    [
        ([("a[b]", "1"), ("a[b][c]", "2")], {"a": {"b": "1"}}),  # the first one stands
        ([("a[b][c]", "1"), ("a[b]", "2")], {"a": {"b": {"c": "1"}}}),
        ([("[nokey]", "1"), ("", "2"), ("a[", "3"), ("ok", "4")], {"ok": "4"}),  # as PHP
        ([("m[]", "x"), ("m[]", "y")], {"m": ["x", "y"]}),
        ([("0", "x"), ("1", "y")], {"0": "x", "1": "y"}),  # the top level stays a table
    ],
)
def test_odd_keys_are_read_as_php_reads_them(
    pairs: list[tuple[str, str]], expected: dict[str, Any]
) -> None:
    assert nest(pairs) == expected


def test_a_repeated_key_keeps_its_first_value() -> None:
    got = nest([("auth[application_token]", "real"), ("auth[application_token]", "forged")])
    assert got == {"auth": {"application_token": "real"}}


@pytest.mark.parametrize(
    "name",
    [
        "token_authorization_code.response.json",
        "token_refresh_token.response.json",
        "token_refresh_token.real.OpenIntegrations.json",
        "token_refresh_token.real_redacted.b24-rest-docs-issue-285.json",
    ],
)
def test_token_answers_are_read(name: str) -> None:
    answer = load(f"oauth/{name}")
    now = datetime.fromtimestamp(answer.get("expires", 1_700_000_000) - 3600, UTC)
    grant = grant_from(answer, now)
    assert grant.access_token == answer["access_token"]
    assert grant.refresh_token == answer["refresh_token"]
    assert grant.client_endpoint == answer["client_endpoint"]
    assert (grant.expires_at - now).total_seconds() == 3600


def test_the_regional_auth_server_is_followed_and_nothing_else() -> None:
    regional = load("oauth/token_refresh_token.real_redacted.b24-rest-docs-issue-285.json")
    assert "oauth.bitrix24.tech" in KNOWN_AUTH_HOSTS
    configured = "https://oauth.bitrix.info"
    assert auth_server(configured, regional["server_endpoint"]) == "https://oauth.bitrix24.tech"
    assert auth_server(configured, "https://evil.example/rest/") == configured
    assert auth_server(configured, "http://oauth.bitrix24.tech/rest/") == configured
    assert auth_server(configured, None) == configured
