"""The Graph API client against the stand-in: Meta's answers and errors, read as Meta
documents them, and what each error means to leadgate."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import orjson
import pytest
from meta_standin import ERRORS, MetaGraphStandIn
from meta_support import LEAD_PAGE_ID, LEAD_PAGE_TOKEN, PAGE_ID, PAGE_TOKEN, fixture

from connectors.meta.graph import (
    ErrorKind,
    GraphClient,
    GraphError,
    appsecret_proof,
    classify,
    error_from,
)

KINDS = {
    "invalid_token": ErrorKind.AUTH,
    "password_changed": ErrorKind.AUTH,
    "token_expired": ErrorKind.AUTH,
    "permission": ErrorKind.PERMISSION,
    "permission_200": ErrorKind.PERMISSION,
    "app_rate": ErrorKind.RATE_LIMIT,
    "user_rate": ErrorKind.RATE_LIMIT,
    "page_rate": ErrorKind.RATE_LIMIT,
    "call_rate": ErrorKind.RATE_LIMIT,
    "invalid_parameter": ErrorKind.INVALID,
    "invalid_proof": ErrorKind.INVALID,
    "unknown_object": ErrorKind.INVALID,
    "unavailable": ErrorKind.UNAVAILABLE,
    "outside_window": ErrorKind.WINDOW,
    "outside_window_instagram": ErrorKind.WINDOW,
    "unexpected": ErrorKind.TRANSIENT,
    "unknown": ErrorKind.TRANSIENT,
}


@pytest.fixture
async def standin() -> AsyncIterator[MetaGraphStandIn]:
    server = MetaGraphStandIn()
    await server.start()
    server.account(PAGE_ID, PAGE_TOKEN)
    server.account(LEAD_PAGE_ID, LEAD_PAGE_TOKEN)
    yield server
    await server.stop()


@pytest.fixture
async def client(standin: MetaGraphStandIn) -> AsyncIterator[GraphClient]:
    graph = GraphClient(standin.url, "v25.0", 5)
    yield graph
    await graph.close()


def test_every_standin_error_has_its_meaning() -> None:
    assert set(KINDS) == set(ERRORS), "a stand-in error without an expected meaning"
    for name, fault in ERRORS.items():
        assert classify(fault.code, fault.subcode, fault.status) is KINDS[name], name


def test_metas_published_error_bodies() -> None:
    for name, kind in [
        ("graph_error_oauth_190_460.meta-docs.json", ErrorKind.AUTH),
        ("messenger_error_invalid_token_190.meta-docs.json", ErrorKind.AUTH),
    ]:
        published = fixture(name)
        err = error_from(400, orjson.dumps(published))
        assert err.kind is kind
        assert err.code == 190 and err.type == "OAuthException"
        assert err.fbtrace_id == published["error"]["fbtrace_id"]
    assert error_from(502, b"<html>Bad gateway</html>").kind is ErrorKind.TRANSIENT
    assert error_from(429, b"").kind is ErrorKind.RATE_LIMIT
    assert error_from(400, b'{"error": {"code": 230, "message": "x"}}').kind is (
        ErrorKind.PERMISSION
    )
    assert error_from(400, b'{"error": {"code": "613", "message": "x"}}').kind is (
        ErrorKind.RATE_LIMIT
    )


async def test_a_lead_is_read_with_its_page_token(
    standin: MetaGraphStandIn, client: GraphClient
) -> None:
    lead = fixture("lead_retrieve_response.meta-docs.json")
    standin.add_lead(LEAD_PAGE_ID, lead, lead_id="123123123123")
    answer = await client.get("123123123123", LEAD_PAGE_TOKEN)
    assert answer["field_data"] == lead["field_data"]
    # Another page's token does not see it: Meta's "Unsupported get request".
    with pytest.raises(GraphError) as caught:
        await client.get("123123123123", PAGE_TOKEN)
    assert (caught.value.code, caught.value.subcode) == (100, 33)
    assert caught.value.fbtrace_id


async def test_errors_come_back_typed_and_without_the_token(
    standin: MetaGraphStandIn, client: GraphClient
) -> None:
    for name, kind in KINDS.items():
        standin.fail(name, path="^42$")
        with pytest.raises(GraphError) as caught:
            await client.get("42", PAGE_TOKEN)
        assert caught.value.kind is kind, name
        assert PAGE_TOKEN not in str(caught.value)
    standin.fail("unexpected", raw=b"<html><body>502 Bad Gateway</body></html>")
    with pytest.raises(GraphError) as caught:
        await client.get("42", PAGE_TOKEN)
    assert caught.value.kind is ErrorKind.TRANSIENT and caught.value.code is None
    standin.revoke(PAGE_TOKEN)
    with pytest.raises(GraphError) as caught:
        await client.get("42", PAGE_TOKEN)
    assert caught.value.kind is ErrorKind.AUTH
    assert caught.value.label == "190"


async def test_rate_limit_budget(standin: MetaGraphStandIn, client: GraphClient) -> None:
    standin.person("555", {"first_name": "Анна"})
    standin.limit(PAGE_TOKEN, calls=2, per_seconds=3600, error="call_rate")
    for _ in range(2):
        assert (await client.get("555", PAGE_TOKEN, {"fields": "first_name"}))["first_name"]
    with pytest.raises(GraphError) as caught:
        await client.get("555", PAGE_TOKEN)
    assert caught.value.kind is ErrorKind.RATE_LIMIT and caught.value.code == 613


async def test_no_answer_is_a_transient_error_without_the_url() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nobody listens there
    graph = GraphClient(f"http://127.0.0.1:{port}", "v25.0", 2)
    try:
        with pytest.raises(GraphError) as caught:
            await graph.get("42", PAGE_TOKEN)
    finally:
        await graph.close()
    assert caught.value.kind is ErrorKind.TRANSIENT and caught.value.label == "network"
    assert PAGE_TOKEN not in str(caught.value)


async def test_appsecret_proof_when_the_app_requires_it(standin: MetaGraphStandIn) -> None:
    standin.app_secret = "meta-app-secret-for-tests"
    standin.person("555", {"first_name": "Анна"})
    bare = GraphClient(standin.url, "v25.0", 5)
    proved = GraphClient(standin.url, "v25.0", 5, app_secret="meta-app-secret-for-tests")
    wrong = GraphClient(standin.url, "v25.0", 5, app_secret="another-app-secret")
    try:
        assert (await proved.get("555", PAGE_TOKEN))["first_name"] == "Анна"
        for client in (bare, wrong):
            with pytest.raises(GraphError) as caught:
                await client.get("555", PAGE_TOKEN)
            assert caught.value.code == 100 and "appsecret_proof" in caught.value.message
    finally:
        for client in (bare, proved, wrong):
            await client.close()
    # HMAC-SHA256(app secret, token) in hex; computed outside with
    # printf token | openssl dgst -sha256 -hmac secret
    assert appsecret_proof("secret", "token") == (
        "e941110e3d2bfe82621f0e3e1434730d7305d106c5f68c87165d0b27a4611a4a"
    )
