"""Bitrix24's own answers, read by our client and sink: the batch answers of Bitrix24's REST
docs and the ones recorded by bitrix24/b24phpsdk (fixtures/bitrix24/SOURCES.md), served
byte for byte by a local server."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp import web
from pydantic import SecretStr

from gateway.coordination import InProcessCoordination
from gateway.delivery.b24client import B24Client, B24Error, LeakyBucket
from gateway.delivery.bitrix24 import Bitrix24Sink
from gateway.delivery.settings import Bitrix24Settings

ANSWERS = Path(__file__).parent / "fixtures" / "bitrix24"


def answer(name: str) -> bytes:
    return (ANSWERS / f"{name}.json").read_bytes()


class Portal:
    """Answers every call with the next recorded body (and status)."""

    def __init__(self) -> None:
        self.queue: list[tuple[int, bytes]] = []
        self.seen: list[dict[str, Any]] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append(await request.json())
        status, body = self.queue.pop(0)
        return web.Response(status=status, body=body, content_type="application/json")


@pytest.fixture
async def portal(aiohttp_server: Any) -> AsyncIterator[tuple[Portal, str]]:
    fake = Portal()
    app = web.Application()
    app.router.add_post("/rest/1/webhooksecret0000/{method}", fake.handle)
    server = await aiohttp_server(app)
    yield fake, str(server.make_url("/rest/1/webhooksecret0000/"))


def client_for(url: str) -> B24Client:
    bucket = LeakyBucket(InProcessCoordination(), "portal.test", 50, 2.0)
    return B24Client(url, bucket=bucket, timeout=5.0, operation_wait=60.0)


async def test_successful_batch_with_php_empty_error_list(portal: tuple[Portal, str]) -> None:
    fake, url = portal
    fake.queue.append((200, answer("batch_success")))
    client = client_for(url)
    try:
        results, errors = await client.batch(
            {"get_user": "user.current", "get_department": "department.get?ID=1"}
        )
    finally:
        await client.close()
    assert errors == {}  # "result_error": [] is PHP's empty array
    assert results["get_user"]["NAME"] == "John"
    assert results["get_department"] == [{"ID": "1", "NAME": "DEMO", "SORT": 500}]
    assert fake.seen[0]["halt"] == 0


async def test_errors_inside_a_batch_answered_200(portal: tuple[Portal, str]) -> None:
    fake, url = portal
    fake.queue.append((200, answer("batch_insufficient_scope_halt0")))
    client = client_for(url)
    try:
        results, errors = await client.batch({"get_user": "a", "get_department": "b"})
    finally:
        await client.close()
    assert results == {}  # "result": [] with every command failed
    assert {k: (e.kind, e.code) for k, e in errors.items()} == {
        "get_user": ("halt", "insufficient_scope"),
        "get_department": ("halt", "insufficient_scope"),
    }


async def test_a_command_the_portal_did_not_run_is_retried(
    portal: tuple[Portal, str], tmp_path: Path
) -> None:
    """halt=1 (the docs' second error example): the command after the failed one is in
    neither result nor result_error; it was not run, so it is neither lost nor dead."""
    fake, url = portal
    fake.queue.append((200, answer("batch_insufficient_scope_halt1")))
    sink = Bitrix24Sink(
        Bitrix24Settings(webhook_url=SecretStr(url)),
        sellers={},
        tz=ZoneInfo("Europe/Moscow"),
    )
    try:
        answers = await sink.run_batch({"get_user": "a", "get_department": "b"})
    finally:
        await sink.close()
    user, department = answers["get_user"], answers["get_department"]
    assert isinstance(user, B24Error) and (user.kind, user.code) == ("halt", "insufficient_scope")
    assert isinstance(department, B24Error) and department.kind == "retry"


async def test_operation_time_limit_inside_a_batch_waits_for_the_portals_reset(
    portal: tuple[Portal, str],
) -> None:
    """Recorded by b24phpsdk's integration test: a blocked method answers 200 with the
    block in result_error; time.operating_reset_at says when it lifts (600 s later)."""
    fake, url = portal
    fake.queue.append((200, answer("batch_operation_time_limit")))
    body = json.loads(answer("batch_operation_time_limit"))
    client = client_for(url)
    try:
        _, errors = await client.batch({"592dcd1e": "crm.contact.update"})
    finally:
        await client.close()
    (err,) = errors.values()
    assert (err.kind, err.code) == ("throttle", "OPERATION_TIME_LIMIT")
    expected = body["time"]["operating_reset_at"] - body["time"]["finish"]
    assert err.retry_after == pytest.approx(expected) and 599 < expected < 600


async def test_payment_required_halts_and_an_empty_code_is_still_an_error(
    portal: tuple[Portal, str],
) -> None:
    fake, url = portal
    fake.queue.append((402, answer("error_payment_required")))
    fake.queue.append((400, answer("error_empty_code_not_found")))
    client = client_for(url)
    try:
        with pytest.raises(B24Error) as paid:
            await client.call("crm.lead.add", {"fields": {"TITLE": "x"}})
        with pytest.raises(B24Error) as missing:
            await client.call("crm.lead.get", {"id": 1})
    finally:
        await client.close()
    # The subscription ended: stop and alert, do not burn every lead as dead.
    assert (paid.value.kind, paid.value.code) == ("halt", "PAYMENT_REQUIRED")
    assert missing.value.kind == "permanent" and "Not found" in str(missing.value)
