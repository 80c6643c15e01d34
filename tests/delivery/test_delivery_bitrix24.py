"""Leads reach a Bitrix24 stand-in: mapping, merges, retries, DLQ, limits, auth, readiness."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp.test_utils import TestClient
from b24_standin import Bitrix24StandIn
from conftest import make_settings
from helpers import ORDER_AUTH, fast_delivery, order, phone, standin, until
from store_view import outbox_of

from gateway.coordination import InProcessCoordination
from gateway.delivery.b24client import B24Error
from gateway.delivery.bitrix24 import Bitrix24Sink
from gateway.delivery.service import WORKER
from gateway.delivery.settings import Bitrix24Settings
from gateway.web import create_app

__all__ = ["standin"]

Client = TestClient[Any, Any]


@pytest.fixture
def gateway(
    aiohttp_client: Callable[..., Any], tmp_path: Path, standin: Bitrix24StandIn
) -> Callable[..., Any]:
    async def make(**options: Any) -> Client:
        bitrix = options.pop("bitrix", {})
        delivery = fast_delivery(bitrix.pop("webhook_url", standin.webhook_url), **bitrix)
        delivery.update(options)
        settings = make_settings(tmp_path, delivery=delivery)
        client: Client = await aiohttp_client(create_app(settings))
        return client

    return make


def db(tmp_path: Path) -> Path:
    return tmp_path / "leadgate.db"


async def post(client: Client, n: int | str, tel: str, **extra: Any) -> dict[str, Any]:
    resp = await client.post("/v1/orders", json=order(n, tel, **extra), headers=ORDER_AUTH)
    assert resp.status == 201, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def _states_are(tmp_path: Path, expected: list[str]) -> bool:
    return await states(tmp_path) == expected


async def _last_is_dead(tmp_path: Path) -> bool:
    now = await states(tmp_path)
    return bool(now) and now[-1] == "dead"


async def states(tmp_path: Path) -> list[str]:
    return [r.state for r in await outbox_of(db(tmp_path))]


def all_delivered(tmp_path: Path) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        now = await states(tmp_path)
        return bool(now) and all(s == "delivered" for s in now)

    return check


async def test_lead_and_merges_arrive_once_each(
    gateway: Callable[..., Any], standin: Bitrix24StandIn, tmp_path: Path
) -> None:
    client = await gateway()
    first = await post(client, 1, "+7 916 123-45-67")
    await until(all_delivered(tmp_path))
    second = await post(client, 2, "8 (916) 123-45-67")
    third = await post(client, 3, "+79161234567")
    assert second["lead_id"] == third["lead_id"] == first["lead_id"]
    await until(lambda: len(standin.comments) == 2)
    await until(all_delivered(tmp_path))
    (crm_id,) = standin.by_origin()[first["lead_id"]]
    comments = standin.comments_on(crm_id)
    assert [c for c in comments if second["event_id"] in c]
    assert [c for c in comments if third["event_id"] in c]
    lead = standin.leads[crm_id]
    assert lead["TITLE"] == "Заказ №A-1"
    assert lead["ASSIGNED_BY_ID"] in ("1", "2")  # anna or boris, by crm_user_id
    assert lead["SOURCE_ID"] == "STORE"
    rows = await outbox_of(db(tmp_path))
    assert rows[0].remote_id == str(crm_id)
    assert {r.remote_id for r in rows[1:]} == {str(k) for k in standin.comments}
    assert standin.unencoded == 0


async def test_merge_waits_for_its_lead(
    gateway: Callable[..., Any], standin: Bitrix24StandIn, tmp_path: Path
) -> None:
    standin.fail(3, command="crm.lead.add")  # the lead needs four tries
    client = await gateway()
    first = await post(client, 1, "+7 916 123-45-67")
    await post(client, 2, "+7 916 123-45-67")
    await until(lambda: len(standin.comments) == 1)
    (crm_id,) = standin.by_origin()[first["lead_id"]]
    assert len(standin.comments_on(crm_id)) == 1
    # The CRM has both; the outcome is recorded once the worker hears back.
    await until(all_delivered(tmp_path))
    rows = await outbox_of(db(tmp_path))
    assert rows[0].attempts == 4  # three failures, one success
    assert rows[1].attempts == 1  # waiting used no attempts


async def test_lost_answer_never_makes_a_second_lead(
    gateway: Callable[..., Any], standin: Bitrix24StandIn, tmp_path: Path
) -> None:
    # The CRM does the work, then the answer is lost (500 after the work), twice.
    standin.fail(1, when="after", command="crm.lead.add")
    standin.fail(1, when="after", command="crm.timeline.comment.add")
    client = await gateway()
    first = await post(client, 1, "+7 916 123-45-67")
    await until(all_delivered(tmp_path))
    await post(client, 2, "+7 916 123-45-67")
    await until(all_delivered(tmp_path))
    assert len(standin.by_origin()[first["lead_id"]]) == 1
    assert len(standin.leads) == 1
    assert len(standin.comments) == 1
    rows = await outbox_of(db(tmp_path))
    assert [r.attempts for r in rows] == [2, 2]


async def test_query_limit_backs_off_without_using_attempts(
    gateway: Callable[..., Any], standin: Bitrix24StandIn, tmp_path: Path
) -> None:
    standin.fill_bucket()  # another integration just spent the portal's burst
    client = await gateway()
    await post(client, 1, "+7 916 123-45-67")
    await until(all_delivered(tmp_path))
    assert standin.count(503) >= 1
    assert (await outbox_of(db(tmp_path)))[0].attempts == 1
    metrics = await (await client.get("/metrics")).text()
    assert 'leadgate_sink_requests_total{outcome="query_limit",sink="bitrix24"}' in metrics


async def test_operation_time_limit_waits(
    gateway: Callable[..., Any], standin: Bitrix24StandIn, tmp_path: Path
) -> None:
    standin.fail(1, status=429, error="OPERATION_TIME_LIMIT", description="Method is blocked")
    client = await gateway(bitrix={"operation_limit_wait_seconds": 0.3})
    await post(client, 1, "+7 916 123-45-67")
    await until(lambda: standin.count(429) == 1)
    await until(all_delivered(tmp_path))
    assert (await outbox_of(db(tmp_path)))[0].attempts == 1
    ok = [e for e in standin.log if e.status == 200]
    blocked = next(e for e in standin.log if e.status == 429)
    assert ok[0].at - blocked.at >= 0.25  # it waited before asking again


async def test_server_errors_retry_then_dead_letter_and_cli_replays(
    gateway: Callable[..., Any], standin: Bitrix24StandIn, tmp_path: Path
) -> None:
    from gateway.cli import main

    standin.fail(100)
    client = await gateway(max_attempts=3)
    await post(client, 1, "+7 916 123-45-67")
    await until(lambda: _states_are(tmp_path, ["dead"]))
    row = (await outbox_of(db(tmp_path)))[0]
    assert row.attempts == 3
    assert row.last_error.startswith("gave up after 3 attempts: bitrix24: HTTP 500")
    ready = await (await client.get("/readyz")).json()
    assert ready["status"] == "degraded"
    metrics = await (await client.get("/metrics")).text()
    assert "leadgate_outbox_dead 1.0" in metrics
    standin.faults.clear()
    config = tmp_path / "cli.toml"
    config.write_text(f'[store]\npath = "{db(tmp_path)}"\n', encoding="utf-8")
    retry = ["-c", str(config), "outbox", "retry", "--all-dead"]
    assert await asyncio.to_thread(main, retry) == 0
    await until(all_delivered(tmp_path))
    assert len(standin.leads) == 1
    await until(lambda: client.app[WORKER].problem() is None)
    assert (await (await client.get("/readyz")).json())["problems"] == []


async def test_permanent_error_goes_to_the_dlq_at_once(
    gateway: Callable[..., Any], standin: Bitrix24StandIn, tmp_path: Path
) -> None:
    client = await gateway()
    await post(client, 1, "+7 916 123-45-67")
    await until(all_delivered(tmp_path))
    standin.leads.clear()  # someone deleted the lead in the CRM
    await post(client, 2, "+7 916 123-45-67")
    await until(lambda: _last_is_dead(tmp_path))
    row = (await outbox_of(db(tmp_path)))[-1]
    assert row.attempts == 1
    assert "NOT_FOUND" in row.last_error


async def test_refused_credentials_stop_delivery_and_alert(
    gateway: Callable[..., Any],
    standin: Bitrix24StandIn,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    standin.revoke("NO_AUTH_FOUND")
    client = await gateway(max_attempts=2)
    await post(client, 1, "+7 916 123-45-67")
    await post(client, 2, "+7 916 765-43-21")
    worker = client.app[WORKER]
    await until(lambda: worker.halted_since is not None)
    ready = await client.get("/readyz")
    assert ready.status == 200  # leads are still accepted
    body = await ready.json()
    assert body["status"] == "degraded"
    assert any("refused our credentials" in p for p in body["problems"])
    # A lead posted now is still accepted and kept.
    await post(client, 3, "+7 916 000-11-22")
    metrics = await (await client.get("/metrics")).text()
    assert 'leadgate_delivery_halted{sink="bitrix24"} 1.0' in metrics
    requests_while_halted = len(standin.log)
    await until(lambda: len(standin.log) > requests_while_halted, within=3)  # one probe
    assert len(standin.log) <= requests_while_halted + 2  # probes, not a retry storm
    rows = await outbox_of(db(tmp_path))
    assert all(r.state == "pending" and r.attempts == 0 for r in rows)
    standin.revoke(None)  # the admin fixed the webhook's rights
    await until(all_delivered(tmp_path))
    assert len(standin.leads) == 3
    # The rows are on disk a moment before the worker reads its own results: wait for it.
    await until(lambda: worker.halted_since is None, within=3)
    secret = standin.secret
    assert secret not in caplog.text
    assert secret not in str(body)
    assert all(secret not in (r.last_error or "") for r in await outbox_of(db(tmp_path)))
    assert "STOPPED" in caplog.text and "resumed" in caplog.text


async def test_wrong_secret_is_an_auth_failure_and_is_masked(
    gateway: Callable[..., Any], standin: Bitrix24StandIn, tmp_path: Path
) -> None:
    wrong = standin.webhook_url.replace(standin.secret, "wrong-secret-123")
    client = await gateway(bitrix={"webhook_url": wrong})
    await post(client, 1, "+7 916 123-45-67")
    worker = client.app[WORKER]
    await until(lambda: worker.halted_since is not None)
    problem = worker.problem() or ""
    assert "NO_AUTH_FOUND" in problem and "wrong-secret-123" not in problem
    assert standin.count(401) >= 1 and not standin.leads


async def test_send_junk_when_configured(
    aiohttp_client: Callable[..., Any], standin: Bitrix24StandIn, tmp_path: Path
) -> None:
    delivery = fast_delivery(standin.webhook_url, send_junk=True)
    settings = make_settings(tmp_path, delivery=delivery, screen={"stop_words": ["казино"]})
    client = await aiohttp_client(create_app(settings))
    await post(client, 1, "+7 916 123-45-67", comment="казино")
    await until(all_delivered(tmp_path))
    (lead,) = standin.leads.values()
    assert lead["STATUS_ID"] == "JUNK"


async def test_junk_skipped_by_default(
    aiohttp_client: Callable[..., Any], standin: Bitrix24StandIn, tmp_path: Path
) -> None:
    settings = make_settings(
        tmp_path, delivery=fast_delivery(standin.webhook_url), screen={"stop_words": ["казино"]}
    )
    client = await aiohttp_client(create_app(settings))
    await post(client, 1, "+7 916 123-45-67", comment="казино")
    await until(all_delivered(tmp_path))
    assert standin.leads == {}

    async def counted() -> bool:
        # The row is marked in the store a moment before the worker counts it.
        metrics = await (await client.get("/metrics")).text()
        return 'leadgate_deliveries_total{result="skipped",sink="bitrix24"} 1.0' in metrics

    await until(counted)


async def test_existing_contact_and_open_lead_are_attached_to(
    gateway: Callable[..., Any], standin: Bitrix24StandIn, tmp_path: Path
) -> None:
    standin.contacts[500] = {"ID": 500, "PHONE": [{"VALUE": "+7 (916) 765-43-21"}]}
    standin.leads[600] = {
        "ID": 600,
        "TITLE": "Старый лид",
        "STATUS_ID": "IN_PROCESS",
        "STATUS_SEMANTIC_ID": "P",
        "PHONE": [{"VALUE": "+79160001122"}],
    }
    standin.leads[601] = {
        "ID": 601,
        "TITLE": "Закрытый лид",
        "STATUS_ID": "CONVERTED",
        "STATUS_SEMANTIC_ID": "S",
        "PHONE": [{"VALUE": "+79167654321"}],
    }
    client = await gateway(bitrix={"find_duplicates": True})
    known = await post(client, 1, "+7 916 765-43-21")  # contact 500, lead 601 closed
    returning = await post(client, 2, "+7 916 000-11-22")  # open lead 600
    await until(all_delivered(tmp_path))
    (new_id,) = standin.by_origin()[known["lead_id"]]
    assert standin.leads[new_id]["CONTACT_ID"] == "500"
    assert returning["lead_id"] not in standin.by_origin()
    assert any(returning["event_id"] in c for c in standin.comments_on(600))
    # A later contact of the attached person lands on the same CRM lead.
    again = await post(client, 3, "+7 916 000-11-22")
    await until(all_delivered(tmp_path))
    assert any(again["event_id"] in c for c in standin.comments_on(600))


async def test_batches_hold_at_most_fifty_commands(
    gateway: Callable[..., Any], standin: Bitrix24StandIn, tmp_path: Path
) -> None:
    client = await gateway(batch_size=50)
    for i in range(120):
        await post(client, i, phone(i))
    await until(all_delivered(tmp_path), within=20)
    assert len(standin.leads) == 120
    assert max(e.commands for e in standin.log) <= 50
    assert standin.count(503) == 0 and standin.unencoded == 0


async def test_metrics_show_depth_and_age_while_the_crm_is_down(
    gateway: Callable[..., Any], standin: Bitrix24StandIn, tmp_path: Path
) -> None:
    standin.fail(10_000)
    client = await gateway(backoff_initial_seconds=5, backoff_max_seconds=5)
    await post(client, 1, "+7 916 123-45-67")
    await post(client, 2, "+7 916 765-43-21")
    await until(lambda: standin.count(500) >= 1)
    client.app[WORKER].wake()

    async def shows_depth() -> bool:
        # The stand-in has answered 500 before the worker records it: wait for both.
        text = await (await client.get("/metrics")).text()
        return (
            "leadgate_outbox_depth 2.0" in text
            and 'leadgate_deliveries_total{result="retry",sink="bitrix24"}' in text
        )

    await until(shows_depth)
    text = await (await client.get("/metrics")).text()
    age = next(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("leadgate_outbox_oldest_pending_seconds ")
    )
    assert age >= 0
    assert 'leadgate_deliveries_total{result="retry",sink="bitrix24"}' in text
    ready = await (await client.get("/readyz")).json()
    assert any("bitrix24 failing since" in p for p in ready["problems"])


async def _hammer(sinks: list[Bitrix24Sink], per_sink: int) -> None:
    async def one(sink: Bitrix24Sink) -> None:
        for _ in range(per_sink):
            with contextlib.suppress(B24Error):
                await sink.client.call("crm.lead.list", {"select": ["ID"]})

    for sink in sinks:
        await sink.start()
    try:
        await asyncio.gather(*(one(s) for s in sinks for _ in range(2)))
    finally:
        for sink in sinks:
            await sink.close()


@pytest.mark.parametrize("shared", [True, False], ids=["shared", "separate"])
async def test_replicas_on_shared_coordination_stay_within_the_portal_budget(
    shared: bool,
) -> None:
    """Two sinks (two replicas) deliver to one portal. On one coordination they take from
    one bucket and the portal never answers 503; each on its own, they overrun it."""
    portal = Bitrix24StandIn(burst=10, rate=20.0)
    await portal.start()
    try:
        settings = Bitrix24Settings(
            webhook_url=portal.webhook_url, burst=10, rate=20.0, assume_busy_on_start=False
        )
        one = InProcessCoordination()
        sinks = [
            Bitrix24Sink(
                settings,
                sellers={},
                tz=ZoneInfo("Europe/Moscow"),
                coordination=one if shared else InProcessCoordination(),
            )
            for _ in range(2)
        ]
        await _hammer(sinks, per_sink=8)  # 32 requests: the burst, then paced
        assert len(portal.log) == 32
        if shared:
            assert portal.count(503) == 0
        else:
            assert portal.count(503) > 0
    finally:
        await portal.stop()
