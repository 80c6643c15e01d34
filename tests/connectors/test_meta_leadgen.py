"""A Lead Ads lead's answers (Meta's Retrieving Leads sample) -> the LeadEvent. Pure."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from meta_support import fixture, fixture_bytes

from connectors.meta.leadgen import LeadUnreadable, lead_event, read_lead
from connectors.meta.webhook import Leadgen, parse
from gateway.models import Channel

RECEIVED = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def sample_change(n: int = 0) -> Leadgen:
    return parse(fixture_bytes("leadgen_webhook_two_changes.meta-docs.json")).leadgen[n]


def test_meta_sample_lead() -> None:
    answer = fixture("lead_retrieve_response.meta-docs.json")
    answer["id"] = "123123123123"  # Meta prints <LEAD_ID>; the webhook named this one
    lead = read_lead(answer)
    assert lead.created_at == datetime(2015, 2, 28, 8, 49, 14, tzinfo=UTC)
    event = lead_event(sample_change(), lead, received_at=RECEIVED)
    assert event.channel is Channel.FACEBOOK
    assert event.external_id == "leadgen:123123123123"
    assert event.occurred_at == lead.created_at
    assert event.contact.name == "Joe Example"
    assert event.contact.emails == ("joe@example.com",)
    assert event.text == "Заявка из формы Lead Ads\nCar make: Honda\nSelected dealer: 99213450"
    # The sample's ad_id/form_id are Meta's placeholders; the answer's own win when given.
    assert event.source_detail == "form <FORM_ID>, ad <AD_ID>"
    assert event.meta["leadgen_id"] == "123123123123"
    assert event.meta["adgroup_id"] == "12312312312"
    assert event.meta["page_id"] == "123123123"


def test_standard_and_custom_questions() -> None:
    answer = {
        "id": "9000000000000001",
        "created_time": "2026-03-02T09:15:00+0000",
        "field_data": [
            {"name": "first_name", "values": ["Иван"]},
            {"name": "last_name", "values": ["Петров"]},
            {"name": "phone_number", "values": ["+79161234567"]},
            {"name": "work_email", "values": ["I.Petrov@Example.RU"]},
            {"name": "company_name", "values": ["ООО Ромашка"]},
            {"name": "city", "values": ["Москва"]},
            {"name": "какое_оборудование_нужно?", "values": ["Подъёмник", "Шиномонтаж"]},
            {"name": "empty", "values": []},
            {"name": "budget", "values": [450000]},
            "junk",
        ],
    }
    event = lead_event(sample_change(1), read_lead(answer), received_at=RECEIVED)
    assert event.contact.name == "Иван Петров"
    assert event.contact.phones == ("+79161234567",)
    assert event.contact.emails == ("i.petrov@example.ru",)
    assert event.contact.company == "ООО Ромашка"
    assert event.text == (
        "Заявка из формы Lead Ads\n"
        "Город: Москва\n"
        "Какое оборудование нужно?: Подъёмник, Шиномонтаж\n"
        "Budget: 450000"
    )
    # No ad or form in the answer: the webhook's ids are kept.
    assert event.source_detail == "form 12312312312, ad 12312312312"


def test_a_phone_that_does_not_read_as_one_is_kept_as_text() -> None:
    answer = {"id": "1", "field_data": [{"name": "phone_number", "values": ["звоните вечером"]}]}
    event = lead_event(sample_change(), read_lead(answer), received_at=RECEIVED)
    assert event.contact.phones == ()
    assert "Телефон: звоните вечером" in (event.text or "")
    # No created_time in the answer: the webhook's time.
    assert event.occurred_at == datetime.fromtimestamp(1440120384, UTC)


def test_an_instagram_lead_is_an_instagram_event() -> None:
    answer = {"id": "2", "platform": "ig", "field_data": [{"name": "full_name", "values": ["A"]}]}
    event = lead_event(sample_change(), read_lead(answer), received_at=RECEIVED)
    assert event.channel is Channel.INSTAGRAM and event.meta["platform"] == "ig"


@pytest.mark.parametrize(
    "answer",
    [{}, {"id": ""}, {"id": "1"}, {"id": "1", "field_data": "x"}, {"id": True, "field_data": []}],
)
def test_answers_that_are_no_lead(answer: dict[str, object]) -> None:
    with pytest.raises(LeadUnreadable):
        read_lead(answer)
