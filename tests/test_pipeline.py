"""The pipeline end to end: dedup across channels, screening, calendar, assignment, metrics."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from conftest import ADMIN_AUTH, ORDER_AUTH
from prometheus_client.parser import text_string_to_metric_families

from gateway.config import Settings
from gateway.metrics import Metrics
from gateway.models import Channel, Contact, Lead, LeadEvent, LeadStatus, Outcome
from gateway.pipeline import Pipeline
from gateway.store.base import LeadQuery
from gateway.store.sqlite import SQLiteStore
from gateway.web import create_app, make_pipeline

Client = TestClient[Any, Any]
ClientFactory = Callable[..., Any]


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def event(
    external_id: str,
    occurred_at: datetime,
    *,
    channel: Channel = Channel.WEBFORM,
    phones: tuple[str, ...] = (),
    emails: tuple[str, ...] = (),
    text: str | None = None,
    junk_reason: str | None = None,
) -> LeadEvent:
    return LeadEvent(
        channel=channel,
        external_id=external_id,
        occurred_at=occurred_at,
        received_at=occurred_at,
        contact=Contact(name="Тест", phones=phones, emails=emails),
        text=text,
        junk_reason=junk_reason,
    )


@pytest.fixture
async def pipeline_factory(
    settings_factory: Callable[..., Settings],
) -> AsyncIterator[Callable[..., Any]]:
    """Build the app's own pipeline on a SQLite store we open and close ourselves."""
    stores: list[SQLiteStore] = []

    async def build(**overrides: Any) -> Pipeline:
        settings = settings_factory(**overrides)
        store = SQLiteStore(settings.store.path)
        await store.open()
        stores.append(store)
        return make_pipeline(settings, store, Metrics())

    yield build
    for store in stores:
        await store.close()


async def get_lead(pipeline: Pipeline, lead_id: str | None) -> Lead:
    assert lead_id is not None
    found = await pipeline.store.get_lead(lead_id)
    assert found is not None
    return found


async def http_lead(client: Client, lead_id: str) -> dict[str, Any]:
    resp = await client.get(f"/v1/leads/{lead_id}", headers=ADMIN_AUTH)
    assert resp.status == 200
    body: dict[str, Any] = await resp.json()
    return body


# --- dedup -----------------------------------------------------------------------------------


async def test_same_phone_in_three_formats_across_channels_is_one_lead(client: Client) -> None:
    first = await client.post("/v1/forms/site", json={"name": "Иван", "phone": "8 (916) 123-45-67"})
    second = await client.post(
        "/v1/orders",
        json={"order_id": "D-1", "customer": {"name": "Иван П.", "phone": "+7 916 1234567"}},
        headers=ORDER_AUTH,
    )
    third = await client.post(
        "/v1/forms/site",
        data={"name": "Иван Петрович", "phone": "79161234567", "email": "ivan@example.ru"},
    )
    receipts = [await r.json() for r in (first, second, third)]
    assert [r.status for r in (first, second, third)] == [201, 201, 201]
    assert [r["outcome"] for r in receipts] == ["created", "merged", "merged"]
    assert len({r["lead_id"] for r in receipts}) == 1

    lead = await http_lead(client, receipts[0]["lead_id"])
    assert [e["id"] for e in lead["events"]] == [r["event_id"] for r in receipts]
    assert [e["channel"] for e in lead["events"]] == ["webform", "orders", "webform"]
    assert [e["outcome"] for e in lead["events"]] == ["created", "merged", "merged"]
    assert [e["matched_on"] for e in lead["events"]] == [None, "phone", "phone"]
    # The lead keeps its first channel and name, and learns the email from the third contact.
    assert lead["channel"] == "webform"
    assert lead["contact"]["name"] == "Иван"
    assert lead["contact"]["phones"] == ["+79161234567"]
    assert lead["contact"]["emails"] == ["ivan@example.ru"]
    resp = await client.get("/v1/leads", headers=ADMIN_AUTH)
    assert len((await resp.json())["leads"]) == 1


async def test_same_email_in_other_case_merges(client: Client) -> None:
    first = await client.post(
        "/v1/forms/site",
        json={"name": "Мария", "phone": "+79031110000", "email": "Maria.Ivanova@Mail.RU"},
    )
    second = await client.post(
        "/v1/orders",
        json={"order_id": "E-1", "customer": {"email": "maria.ivanova@mail.ru"}},
        headers=ORDER_AUTH,
    )
    a, b = await first.json(), await second.json()
    assert b["outcome"] == "merged"
    assert b["lead_id"] == a["lead_id"]
    lead = await http_lead(client, a["lead_id"])
    assert lead["events"][1]["matched_on"] == "email"


async def test_different_people_are_different_leads(client: Client) -> None:
    a = await client.post("/v1/forms/site", json={"name": "А", "phone": "+79031110001"})
    b = await client.post("/v1/forms/site", json={"name": "Б", "phone": "+79031110002"})
    ra, rb = await a.json(), await b.json()
    assert (ra["outcome"], rb["outcome"]) == ("created", "created")
    assert ra["lead_id"] != rb["lead_id"]


async def test_contact_after_window_is_new_lead_for_previous_seller(
    pipeline_factory: Callable[..., Any],
) -> None:
    pipeline: Pipeline = await pipeline_factory(dedup={"window_days": 30})
    phone = ("+79161234567",)
    old = await pipeline.accept(event("old-1", at("2025-10-01T12:00:00+03:00"), phones=phone))
    old_lead = await get_lead(pipeline, old.lead_id)
    owner = old_lead.assigned_to
    assert owner is not None

    # Within the window: merged.
    inside = await pipeline.accept(event("in-1", at("2025-10-20T12:00:00+03:00"), phones=phone))
    assert inside.outcome is Outcome.MERGED
    assert inside.lead_id == old.lead_id

    # Round robin would now hand a new person to the other seller.
    other = await pipeline.accept(
        event("x-1", at("2026-01-13T12:00:00+03:00"), phones=("+79030000001",))
    )
    assert (await get_lead(pipeline, other.lead_id)).assigned_to != owner

    # 31+ days after the last contact: a new lead, but the same seller (sticky).
    late = await pipeline.accept(
        event("late-1", at("2026-01-13T12:05:00+03:00"), phones=phone, channel=Channel.ORDERS)
    )
    assert late.outcome is Outcome.CREATED
    assert late.lead_id != old.lead_id
    new_lead = await get_lead(pipeline, late.lead_id)
    assert new_lead.assigned_to == owner
    assert new_lead.assignment_reason == "sticky: previous seller"
    # The old lead is untouched.
    assert len((await get_lead(pipeline, old.lead_id)).events) == 2


async def test_window_counts_from_last_event_not_first(
    pipeline_factory: Callable[..., Any],
) -> None:
    pipeline: Pipeline = await pipeline_factory(dedup={"window_days": 10})
    phone = ("+79161234567",)
    first = await pipeline.accept(event("w-1", at("2026-02-02T12:00:00+03:00"), phones=phone))
    for n, day in enumerate(("2026-02-10", "2026-02-18", "2026-02-26")):
        r = await pipeline.accept(event(f"w-{n + 2}", at(f"{day}T12:00:00+03:00"), phones=phone))
        assert r.outcome is Outcome.MERGED
        assert r.lead_id == first.lead_id


async def test_junk_event_never_merges_into_real_lead(client: Client) -> None:
    real = await (
        await client.post("/v1/forms/site", json={"name": "Иван", "phone": "+79161234567"})
    ).json()
    bot = await client.post(
        "/v1/forms/site",
        json={"name": "Bot", "phone": "+79161234567", "website": "http://spam"},
    )
    junk = await bot.json()
    assert junk["outcome"] == "created"
    assert junk["lead_id"] != real["lead_id"]
    assert (await http_lead(client, junk["lead_id"]))["status"] == "JUNK"
    real_lead = await http_lead(client, real["lead_id"])
    assert real_lead["status"] == "NEW"
    assert len(real_lead["events"]) == 1
    assert real_lead["contact"]["name"] == "Иван"


async def test_junk_lead_never_absorbs_real_events(client: Client) -> None:
    junk = await (
        await client.post(
            "/v1/forms/site",
            json={"name": "Bot", "phone": "+79161234567", "website": "x"},
        )
    ).json()
    real = await (
        await client.post("/v1/forms/site", json={"name": "Иван", "phone": "+79161234567"})
    ).json()
    assert real["outcome"] == "created"
    assert real["lead_id"] != junk["lead_id"]
    real_lead = await http_lead(client, real["lead_id"])
    assert real_lead["status"] == "NEW"
    assert real_lead["assigned_to"] in {"anna", "boris"}
    assert len((await http_lead(client, junk["lead_id"]))["events"]) == 1
    # A later real contact joins the real lead, not the junk one.
    again = await (
        await client.post("/v1/forms/site", json={"name": "Иван", "phone": "89161234567"})
    ).json()
    assert again["outcome"] == "merged"
    assert again["lead_id"] == real["lead_id"]


# --- screening --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("contact", "reason"),
    [
        ({"phone": "+7 916 000-00-01"}, "blocked phone"),
        ({"phone": "+79031234500", "email": "Boss@SPAM.example"}, "blocked domain"),
        ({"phone": "+79031234501", "email": "known@bad.example"}, "blocked email"),
        ({"phone": "+79031234502", "comment": "Лучшее КАЗИНО онлайн"}, "stop word: казино"),
    ],
)
async def test_screen_rules_make_junk_with_reason(
    aiohttp_client: ClientFactory,
    settings_factory: Callable[..., Settings],
    contact: dict[str, str],
    reason: str,
) -> None:
    settings = settings_factory(
        screen={
            "blocked_phones": ["8 916 000-00-01"],
            "blocked_emails": ["KNOWN@bad.example"],
            "blocked_domains": ["spam.example"],
            "stop_words": ["Казино"],
        }
    )
    client: Client = await aiohttp_client(create_app(settings))
    resp = await client.post("/v1/forms/site", json={"name": "Кто-то", **contact})
    assert resp.status == 201
    lead = await http_lead(client, (await resp.json())["lead_id"])
    assert lead["status"] == "JUNK"
    assert lead["junk_reason"] == reason
    assert lead["assigned_to"] is None
    # Clean contacts still make NEW leads.
    ok = await client.post("/v1/forms/site", json={"name": "Иван", "phone": "+79169998877"})
    assert (await http_lead(client, (await ok.json())["lead_id"]))["status"] == "NEW"


# --- calendar ---------------------------------------------------------------------------------


async def test_holiday_event_is_after_hours_with_next_open_and_sla(
    pipeline_factory: Callable[..., Any],
) -> None:
    pipeline: Pipeline = await pipeline_factory()
    receipt = await pipeline.accept(
        event("cal-1", at("2026-01-05T12:00:00+03:00"), phones=("+79161234567",))
    )
    lead = await get_lead(pipeline, receipt.lead_id)
    assert lead.after_hours is True
    assert lead.after_hours_reason is not None
    assert "Новогодние каникулы" in lead.after_hours_reason
    assert lead.next_open_at == at("2026-01-12T10:00:00+03:00")
    assert lead.sla_due_at == at("2026-01-12T10:15:00+03:00")
    assert lead.assigned_to in {"anna", "boris"}


async def test_in_hours_event_has_sla_in_business_minutes(
    pipeline_factory: Callable[..., Any],
) -> None:
    pipeline: Pipeline = await pipeline_factory()
    r = await pipeline.accept(
        event("cal-2", at("2026-01-13T12:00:00+03:00"), phones=("+79161234567",))
    )
    lead = await get_lead(pipeline, r.lead_id)
    assert lead.after_hours is False
    assert lead.after_hours_reason is None
    assert lead.next_open_at is None
    assert lead.sla_due_at == at("2026-01-13T12:15:00+03:00")

    # Ten minutes before closing: five today, ten tomorrow morning.
    r = await pipeline.accept(
        event("cal-3", at("2026-01-13T18:50:00+03:00"), phones=("+79031112233",))
    )
    lead = await get_lead(pipeline, r.lead_id)
    assert lead.after_hours is False
    assert lead.sla_due_at == at("2026-01-14T10:05:00+03:00")


async def test_evening_and_weekend_reasons(pipeline_factory: Callable[..., Any]) -> None:
    pipeline: Pipeline = await pipeline_factory(calendar={"reaction_minutes": 30})
    evening = await get_lead(
        pipeline,
        (
            await pipeline.accept(
                event("cal-4", at("2026-01-16T20:00:00+03:00"), phones=("+79031112201",))
            )
        ).lead_id,
    )
    assert evening.after_hours is True
    assert evening.after_hours_reason == "outside hours: 10:00–19:00"
    assert evening.next_open_at == at("2026-01-19T10:00:00+03:00")  # Friday evening -> Monday
    assert evening.sla_due_at == at("2026-01-19T10:30:00+03:00")

    saturday = await get_lead(
        pipeline,
        (
            await pipeline.accept(
                event("cal-5", at("2026-01-17T12:00:00+03:00"), phones=("+79031112202",))
            )
        ).lead_id,
    )
    assert saturday.after_hours_reason == "weekend: суббота"


# --- assignment -------------------------------------------------------------------------------


async def test_round_robin_alternates_between_sellers(client: Client) -> None:
    owners = []
    for n in range(6):
        resp = await client.post(
            "/v1/forms/site", json={"name": f"Клиент {n}", "phone": f"+7903111{n:04d}"}
        )
        lead = await http_lead(client, (await resp.json())["lead_id"])
        owners.append(lead["assigned_to"])
    assert set(owners) == {"anna", "boris"}
    assert all(a != b for a, b in itertools.pairwise(owners))


async def test_round_robin_direct_in_hours(pipeline_factory: Callable[..., Any]) -> None:
    pipeline: Pipeline = await pipeline_factory()
    start = at("2026-01-13T11:00:00+03:00")
    owners = []
    for n in range(8):
        r = await pipeline.accept(
            event(f"rr-{n}", start + timedelta(minutes=n), phones=(f"+7903222{n:04d}",))
        )
        owners.append((await get_lead(pipeline, r.lead_id)).assigned_to)
    assert owners.count("anna") == owners.count("boris") == 4
    assert all(a != b for a, b in itertools.pairwise(owners))


async def test_in_order_strategy_always_takes_first_on_duty(
    pipeline_factory: Callable[..., Any],
) -> None:
    pipeline: Pipeline = await pipeline_factory(assignment={"strategy": "in_order"})
    for n in range(3):
        r = await pipeline.accept(
            event(f"io-{n}", at("2026-01-13T11:00:00+03:00"), phones=(f"+7903333{n:04d}",))
        )
        assert (await get_lead(pipeline, r.lead_id)).assigned_to == "anna"


async def test_inactive_seller_gets_nothing(pipeline_factory: Callable[..., Any]) -> None:
    pipeline: Pipeline = await pipeline_factory(
        sellers=[
            {"id": "anna", "name": "Анна", "active": False},
            {"id": "boris", "name": "Борис"},
        ]
    )
    for n in range(3):
        r = await pipeline.accept(
            event(f"ia-{n}", at("2026-01-13T11:00:00+03:00"), phones=(f"+7903444{n:04d}",))
        )
        assert (await get_lead(pipeline, r.lead_id)).assigned_to == "boris"


async def test_no_sellers_leaves_lead_unassigned_and_readyz_degraded(
    aiohttp_client: ClientFactory, settings_factory: Callable[..., Settings]
) -> None:
    client: Client = await aiohttp_client(create_app(settings_factory(sellers=[])))
    resp = await client.post("/v1/forms/site", json={"name": "Иван", "phone": "+79161234567"})
    assert resp.status == 201
    lead = await http_lead(client, (await resp.json())["lead_id"])
    assert lead["assigned_to"] is None
    assert lead["status"] == "NEW"

    ready = await client.get("/readyz")
    assert ready.status == 200  # still accepting leads
    body = await ready.json()
    assert body["status"] == "degraded"
    assert any("sellers" in p for p in body["problems"])
    metrics = await (await client.get("/metrics")).text()
    assert "leadgate_ready 0.0" in metrics
    assert "leadgate_unassigned_leads_total 1.0" in metrics


async def test_readyz_ok_with_sellers(client: Client) -> None:
    ready = await client.get("/readyz")
    assert ready.status == 200
    assert await ready.json() == {"status": "ok", "problems": []}
    health = await client.get("/healthz")
    assert health.status == 200
    assert await health.json() == {"status": "ok"}


# --- metrics ----------------------------------------------------------------------------------


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                out[tuple(sorted(sample.labels.items()))] = sample.value
    return out


async def test_outcome_counts_in_metrics(client: Client) -> None:
    await client.post("/v1/forms/site", json={"name": "А", "phone": "+79161234567"})
    await client.post("/v1/forms/site", json={"name": "А", "phone": "89161234567"})
    order = {"order_id": "M-1", "customer": {"phone": "+79031234567"}}
    await client.post("/v1/orders", json=order, headers=ORDER_AUTH)
    await client.post("/v1/orders", json=order, headers=ORDER_AUTH)
    await client.post("/v1/orders", json=order, headers=ORDER_AUTH)
    await client.post("/v1/forms/site", json={"name": "x"})  # 422
    await client.post("/v1/orders", json=order)  # 401

    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.content_type == "text/plain"
    text = await resp.text()
    events = samples(text, "leadgate_events_total")
    assert events == {
        (("channel", "webform"), ("outcome", "created")): 1.0,
        (("channel", "webform"), ("outcome", "merged")): 1.0,
        (("channel", "orders"), ("outcome", "created")): 1.0,
        (("channel", "orders"), ("outcome", "replayed")): 2.0,
    }
    rejections = samples(text, "leadgate_rejections_total")
    assert rejections[(("reason", "invalid_fields"), ("route", "/v1/forms/{form_id}"))] == 1.0
    assert rejections[(("reason", "unauthorized"), ("route", "/v1/orders"))] == 1.0
    latency = samples(text, "leadgate_request_seconds_count")
    assert latency[(("method", "POST"), ("route", "/v1/forms/{form_id}"))] == 3.0
    assert latency[(("method", "POST"), ("route", "/v1/orders"))] == 4.0


async def test_junk_and_after_hours_metrics(pipeline_factory: Callable[..., Any]) -> None:
    pipeline: Pipeline = await pipeline_factory()
    await pipeline.accept(
        event(
            "j-1", at("2026-01-05T12:00:00+03:00"), phones=("+79161234567",), junk_reason="honeypot"
        )
    )
    await pipeline.accept(event("j-2", at("2026-01-13T12:00:00+03:00"), phones=("+79031112233",)))
    junk = {
        s.labels["reason"]: s.value
        for f in pipeline.metrics.registry.collect()
        for s in f.samples
        if s.name == "leadgate_junk_leads_total"
    }
    assert junk == {"honeypot": 1.0}
    after = {
        s.labels["channel"]: s.value
        for f in pipeline.metrics.registry.collect()
        for s in f.samples
        if s.name == "leadgate_after_hours_events_total"
    }
    assert after == {"webform": 1.0}
    leads = await pipeline.store.list_leads(LeadQuery())
    assert sorted(lead.status for lead in leads) == [LeadStatus.JUNK, LeadStatus.NEW]


async def test_new_contact_after_the_deadline_passed_asks_for_a_new_reaction(
    pipeline_factory: Callable[..., Any],
) -> None:
    """Found in review: a customer calling again days later joined their open lead, whose
    callback deadline was days in the past, so the new call had none."""
    pipeline: Pipeline = await pipeline_factory()
    phone = ("+79161234567",)
    first = await pipeline.accept(event("c1", at("2026-11-20T12:00:00+03:00"), phones=phone))
    lead = await get_lead(pipeline, first.lead_id)
    assert lead.sla_due_at == at("2026-11-20T12:15:00+03:00")
    again = await pipeline.accept(event("c2", at("2026-11-26T11:00:00+03:00"), phones=phone))
    assert again.outcome is Outcome.MERGED
    lead = await get_lead(pipeline, first.lead_id)
    assert lead.sla_due_at == at("2026-11-26T11:15:00+03:00")
    # A third contact while that deadline still runs keeps the earlier deadline.
    await pipeline.accept(event("c3", at("2026-11-26T11:05:00+03:00"), phones=phone))
    lead = await get_lead(pipeline, first.lead_id)
    assert lead.sla_due_at == at("2026-11-26T11:15:00+03:00")


async def test_our_own_outgoing_contact_does_not_reset_the_deadline(
    pipeline_factory: Callable[..., Any],
) -> None:
    pipeline: Pipeline = await pipeline_factory()
    phone = ("+79161234567",)
    first = await pipeline.accept(event("c1", at("2026-11-20T12:00:00+03:00"), phones=phone))
    outgoing = event("out-1", at("2026-11-26T11:00:00+03:00"), phones=phone).model_copy(
        update={"creates_lead": False, "channel": Channel.PHONE}
    )
    assert (await pipeline.accept(outgoing)).outcome is Outcome.MERGED
    lead = await get_lead(pipeline, first.lead_id)
    assert lead.sla_due_at == at("2026-11-20T12:15:00+03:00")


async def test_a_late_event_goes_to_a_seller_on_duty_now(
    pipeline_factory: Callable[..., Any],
) -> None:
    """A call notification retried a day late (it happened Monday in anna's shift, it
    reached us Tuesday in boris's): the lead is worked now, by who is on duty now."""
    pipeline: Pipeline = await pipeline_factory(
        sellers=[
            {"id": "anna", "name": "Анна", "schedule": {"mon": ["10:00-19:00"]}},
            {"id": "boris", "name": "Борис", "schedule": {"tue": ["10:00-19:00"]}},
        ]
    )
    late = event("call-late", at("2026-01-12T15:00:00+03:00"), phones=("+79031110001",))
    late = late.model_copy(update={"received_at": at("2026-01-13T11:00:00+03:00")})
    lead = await get_lead(pipeline, (await pipeline.accept(late)).lead_id)
    assert lead.assigned_to == "boris"
    # ... and one that came in after hours today waits for the next seller on duty.
    evening = event("call-evening", at("2026-01-12T15:00:00+03:00"), phones=("+79031110002",))
    evening = evening.model_copy(update={"received_at": at("2026-01-13T20:00:00+03:00")})
    lead = await get_lead(pipeline, (await pipeline.accept(evening)).lead_id)
    assert (lead.assigned_to, lead.assignment_reason) == ("anna", "next on duty")
