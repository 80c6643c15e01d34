"""Lead -> Bitrix24 fields, without HTTP: ФИО split, titles, fields, encoding, settings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from b24_standin import php_params
from pydantic import ValidationError

from gateway.config import ConfigError, load_settings
from gateway.coordination import InProcessCoordination
from gateway.delivery.b24client import (
    B24Error,
    LeakyBucket,
    classify,
    command,
    encode_params,
    portal_of,
)
from gateway.delivery.b24mapping import (
    event_comment,
    lead_fields,
    marker,
    render_title,
    split_name,
    title_values,
)
from gateway.delivery.settings import Bitrix24Settings, DeliverySettings
from gateway.models import (
    Attachment,
    Channel,
    Contact,
    EquipmentCategory,
    EventRecord,
    Interest,
    Lead,
    LeadStatus,
    Outcome,
)

MSK = ZoneInfo("Europe/Moscow")
T0 = datetime(2026, 1, 12, 8, 0, tzinfo=UTC)  # 11:00 in Moscow


def make_lead(**kw: Any) -> Lead:
    base: dict[str, Any] = {
        "id": "01LEAD",
        "status": LeadStatus.NEW,
        "channel": Channel.PHONE,
        "source_id": "CALL",
        "contact": Contact(
            name="Иванов Иван Иванович",
            phones=("+79161234567",),
            emails=("ivan@example.ru",),
            company="ООО Ромашка",
        ),
        "interest": Interest(
            equipment_category=EquipmentCategory.LARGE, probable_equipment="Станок ТВ-4, 250 000"
        ),
        "assigned_to": "anna",
        "after_hours": False,
        "sla_due_at": T0 + timedelta(minutes=15),
        "created_at": T0,
        "updated_at": T0,
        "last_event_at": T0,
    }
    base.update(kw)
    return Lead(**base)


def make_event(**kw: Any) -> EventRecord:
    base: dict[str, Any] = {
        "id": "01EVENT",
        "channel": Channel.PHONE,
        "external_id": "call-77",
        "occurred_at": T0,
        "received_at": T0,
        "outcome": Outcome.CREATED,
        "text": "Пропущенный звонок",
        "utm": {"utm_source": "yandex", "utm_medium": "cpc", "other": "x"},
        "source_detail": "+74950000000",
    }
    base.update(kw)
    return EventRecord(**base)


# --- ФИО -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("full", "expected"),
    [
        (
            "Иванов Иван Иванович",
            {"LAST_NAME": "Иванов", "NAME": "Иван", "SECOND_NAME": "Иванович"},
        ),
        (
            "Иван Иванович Иванов",
            {"NAME": "Иван", "SECOND_NAME": "Иванович", "LAST_NAME": "Иванов"},
        ),
        (
            "Петрова Анна Сергеевна",
            {"LAST_NAME": "Петрова", "NAME": "Анна", "SECOND_NAME": "Сергеевна"},
        ),
        ("Анна", {"NAME": "Анна"}),
        ("  Анна  ", {"NAME": "Анна"}),
        ("Иван Петрович", {"NAME": "Иван", "SECOND_NAME": "Петрович"}),
        ("Иван Петров", {"NAME": "Иван", "LAST_NAME": "Петров"}),
        ("Петров Иван", {"LAST_NAME": "Петров", "NAME": "Иван"}),
        ("Ирина Петрова", {"NAME": "Ирина", "LAST_NAME": "Петрова"}),
        ("Петрова Ирина", {"LAST_NAME": "Петрова", "NAME": "Ирина"}),
        ("Вишневский Олег", {"LAST_NAME": "Вишневский", "NAME": "Олег"}),
        ("John Smith", {"NAME": "John", "LAST_NAME": "Smith"}),
        ("Anna Maria Schmidt", {"NAME": "Anna Maria Schmidt"}),
        (
            "Мамедов Али Гусейн оглы",
            {"LAST_NAME": "Мамедов", "NAME": "Али", "SECOND_NAME": "Гусейн оглы"},
        ),
        ("", {}),
        (None, {}),
    ],
)
def test_split_name_auto(full: str | None, expected: dict[str, str]) -> None:
    assert split_name(full) == expected


def test_split_name_explicit_orders() -> None:
    assert split_name("Иван Иванович Иванов", "whole") == {"NAME": "Иван Иванович Иванов"}
    assert split_name("Иванов Иван", "first_last") == {"NAME": "Иванов", "LAST_NAME": "Иван"}
    assert split_name("Иван Петров", "last_first") == {"LAST_NAME": "Иван", "NAME": "Петров"}
    assert split_name("A B C", "first_last") == {"NAME": "A", "LAST_NAME": "C", "SECOND_NAME": "B"}


# --- titles --------------------------------------------------------------------------------


def test_title_templates_fill_in_and_fall_back() -> None:
    lead = make_lead()
    values = title_values(lead, make_event())
    assert render_title("Звонок с {phone}", values) == "Звонок с +7 916 123-45-67"
    assert render_title("Заявка с сайта", values) == "Заявка с сайта"
    nameless = make_lead(contact=Contact(emails=("a@b.ru",)))
    # A placeholder with nothing to say gives "channel: who" instead of a dangling title.
    assert render_title("Звонок с {phone}", title_values(nameless, None)) == "Телефон: a@b.ru"


def test_title_placeholders_are_checked_at_config_time() -> None:
    with pytest.raises(ValidationError, match="unknown placeholder"):
        Bitrix24Settings(titles={Channel.PHONE: "Звонок {phone.__class__}"})
    with pytest.raises(ValidationError, match="unknown placeholder"):
        Bitrix24Settings(titles={Channel.PHONE: "{secret}"})
    given = Bitrix24Settings(titles={Channel.PHONE: "Call {phone}"})
    assert given.titles[Channel.PHONE] == "Call {phone}"
    assert given.titles[Channel.WEBFORM] == "Заявка с сайта"  # the others keep their defaults


# --- crm.lead.add fields -------------------------------------------------------------------


def test_lead_fields_full_mapping() -> None:
    settings = Bitrix24Settings(
        category_field="UF_CRM_1706782596",
        category_values={EquipmentCategory.LARGE: "45", EquipmentCategory.SMALL: "46"},
        equipment_field="UF_CRM_EQUIPMENT",
    )
    fields = lead_fields(make_lead(), make_event(), settings, assigned_by=12, tz=MSK)
    assert fields["TITLE"] == "Звонок с +7 916 123-45-67"
    assert (fields["LAST_NAME"], fields["NAME"], fields["SECOND_NAME"]) == (
        "Иванов",
        "Иван",
        "Иванович",
    )
    assert fields["COMPANY_TITLE"] == "ООО Ромашка"
    assert fields["PHONE"] == [{"VALUE": "+79161234567", "VALUE_TYPE": "WORK"}]
    assert fields["EMAIL"] == [{"VALUE": "ivan@example.ru", "VALUE_TYPE": "WORK"}]
    assert fields["SOURCE_ID"] == "CALL"
    assert fields["SOURCE_DESCRIPTION"] == "leadgate: Телефон (+74950000000)"
    assert fields["STATUS_ID"] == "NEW"
    assert fields["ASSIGNED_BY_ID"] == 12
    assert fields["UTM_SOURCE"] == "yandex" and fields["UTM_MEDIUM"] == "cpc"
    assert "UTM_OTHER" not in fields
    assert fields["UF_CRM_1706782596"] == "45"  # the enum item id, not the label
    assert fields["UF_CRM_EQUIPMENT"] == "Станок ТВ-4, 250 000"
    assert (fields["ORIGINATOR_ID"], fields["ORIGIN_ID"]) == ("leadgate", "01LEAD")
    assert "Пропущенный звонок" in fields["COMMENTS"]
    assert "12.01.2026 11:00" in fields["COMMENTS"]  # local time of the calendar


def test_lead_fields_minimal_and_junk() -> None:
    lead = make_lead(
        status=LeadStatus.JUNK,
        junk_reason="stop word: казино",
        contact=Contact(name="Анна"),
        interest=Interest(),
        after_hours=True,
        after_hours_reason="holiday: Новогодние каникулы",
        next_open_at=T0 + timedelta(days=1),
    )
    fields = lead_fields(lead, None, Bitrix24Settings(), assigned_by=None, tz=MSK)
    assert fields["STATUS_ID"] == "JUNK"
    assert fields["NAME"] == "Анна"
    for absent in ("PHONE", "EMAIL", "COMPANY_TITLE", "ASSIGNED_BY_ID", "LAST_NAME"):
        assert absent not in fields
    assert "Нерабочее время — праздник: Новогодние каникулы" in fields["COMMENTS"]
    assert "Спам: stop word: казино" in fields["COMMENTS"]


def test_category_label_is_sent_when_no_enum_id_is_configured() -> None:
    settings = Bitrix24Settings(category_field="UF_CRM_CATEGORY")
    fields = lead_fields(make_lead(), None, settings, assigned_by=None, tz=MSK)
    assert fields["UF_CRM_CATEGORY"] == "Крупное"


def test_merge_comment_carries_the_event_and_a_marker() -> None:
    event = make_event(
        id="01MERGED",
        channel=Channel.EMAIL,
        text="Пришлите КП",
        contact=Contact(name="Иван", emails=("ivan@example.ru",)),
        attachments=(Attachment(name="ТЗ.pdf"),),
    )
    text = event_comment(make_lead(), event, "01MERGED", MSK)
    assert text.startswith("Повторное обращение: Почта, 12.01.2026 11:00")
    assert "Контакт: Иван, ivan@example.ru" in text
    assert "Пришлите КП" in text and "ТЗ.pdf" in text
    assert text.endswith(marker("01MERGED"))


# --- encoding ------------------------------------------------------------------------------


def test_commands_are_url_encoded_php_style_and_round_trip() -> None:
    params = {
        "fields": {
            "TITLE": "Заявка & «скидка» = 10%?",
            "PHONE": [{"VALUE": "+79161234567", "VALUE_TYPE": "WORK"}],
            "OPENED": True,
            "SKIP": None,
        },
        "params": {"REGISTER_SONET_EVENT": "Y"},
    }
    cmd = command("crm.lead.add", params)
    method, _, query = cmd.partition("?")
    assert method == "crm.lead.add"
    assert " " not in query and "«" not in query and "+7" not in query  # all encoded
    assert "fields[PHONE][0][VALUE]=%2B79161234567" in query
    decoded = php_params(query)
    assert decoded["fields"]["TITLE"] == "Заявка & «скидка» = 10%?"
    assert decoded["fields"]["PHONE"] == [{"VALUE": "+79161234567", "VALUE_TYPE": "WORK"}]
    assert decoded["fields"]["OPENED"] == "Y"
    assert "SKIP" not in decoded["fields"]


def test_customer_text_cannot_use_batch_result_macros() -> None:
    query = encode_params({"fields": {"COMMENTS": "see $result[c0][ID]"}})
    assert php_params(query)["fields"]["COMMENTS"] == "see $ result[c0][ID]"


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (401, "NO_AUTH_FOUND", "halt"),
        (401, "expired_token", "halt"),
        (403, "INVALID_CREDENTIALS", "halt"),
        (403, "insufficient_scope", "halt"),
        (503, "OVERLOAD_LIMIT", "halt"),
        (503, "QUERY_LIMIT_EXCEEDED", "throttle"),
        (429, "OPERATION_TIME_LIMIT", "throttle"),
        (500, "INTERNAL_SERVER_ERROR", "retry"),
        (502, "HTTP_502", "retry"),
        (None, "INTERNAL_SERVER_ERROR", "retry"),
        (400, "ERROR_CORE", "permanent"),
        (None, "ERROR_CORE", "permanent"),
    ],
)
def test_error_kinds(status: int | None, code: str, kind: str) -> None:
    assert classify(status, code) == kind
    assert B24Error(kind, code).kind == kind


class Clock:
    """Coordination's clock and the bucket's sleep in one: sleeping moves time on."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


async def test_leaky_bucket_keeps_one_request_of_headroom() -> None:
    clock = Clock()
    coordination = InProcessCoordination(clock=clock)
    bucket = LeakyBucket(coordination, "portal.bitrix24.ru", 50, 2.0, sleep=clock.sleep)
    for _ in range(49):
        await bucket.acquire()
    assert clock.slept == []
    await bucket.acquire()  # the 50th waits: the portal allows 50
    assert clock.slept == [pytest.approx(0.5)]
    busy_clock = Clock()
    busy = LeakyBucket(
        InProcessCoordination(clock=busy_clock),
        "portal.bitrix24.ru",
        50,
        2.0,
        full=True,
        sleep=busy_clock.sleep,
    )
    await busy.acquire()
    assert busy_clock.slept == [pytest.approx(0.5)]


async def test_replicas_on_shared_coordination_share_one_budget() -> None:
    """Two sinks (two replicas) on one coordination: 49 requests between them, then both
    wait; a 503 seen by one empties the bucket for the other too."""
    clock = Clock()
    shared = InProcessCoordination(clock=clock)
    a = LeakyBucket(shared, "portal.bitrix24.ru", 50, 2.0, sleep=clock.sleep)
    b = LeakyBucket(shared, "portal.bitrix24.ru", 50, 2.0, sleep=clock.sleep)
    for i in range(49):
        await (a if i % 2 else b).acquire()
    assert clock.slept == []
    await b.acquire()
    assert clock.slept == [pytest.approx(0.5)]
    other_portal = LeakyBucket(shared, "other.bitrix24.ru", 50, 2.0, sleep=clock.sleep)
    await other_portal.acquire()  # another portal has a budget of its own
    assert len(clock.slept) == 1
    clock.now += 100  # everything refilled
    await a.wait_ready()  # a holds a token for its next request...
    await a.fill()  # ...until the portal answers 503: the token is dropped with the rest
    await b.acquire()
    assert clock.slept[-1] == pytest.approx(0.5)
    await a.acquire()
    assert clock.slept[-1] == pytest.approx(0.5)


def test_the_bucket_key_is_the_portal_never_the_secret() -> None:
    url = "https://Portal.Bitrix24.ru/rest/1/s3cr3tvalue/"
    assert portal_of(url) == "portal.bitrix24.ru"


# --- settings --------------------------------------------------------------------------------


def test_webhook_url_shape_is_checked_without_echoing_the_secret(tmp_path: Any) -> None:
    bad = "https://portal.bitrix24.ru/rest/1/s3cr3tvalue/crm.lead.add.json"
    with pytest.raises(ConfigError) as err:
        load_settings(None, delivery={"sink": "bitrix24", "bitrix24": {"webhook_url": bad}})
    assert "s3cr3tvalue" not in str(err.value)
    assert any("delivery.bitrix24.webhook_url" in p for p in err.value.problems)
    good = DeliverySettings(
        sink="bitrix24", bitrix24={"webhook_url": "https://portal.bitrix24.ru/rest/1/s3cr3tvalue"}
    )
    assert good.bitrix24.webhook_url is not None
    assert good.bitrix24.webhook_url.get_secret_value().endswith("/rest/1/s3cr3tvalue/")
    assert "s3cr3tvalue" not in repr(good)


def test_sink_needs_its_settings() -> None:
    with pytest.raises(ValidationError, match="webhook_url is not set"):
        DeliverySettings(sink="bitrix24")
    with pytest.raises(ValidationError, match=r"webhook\.url and webhook\.secret"):
        DeliverySettings(sink="webhook", webhook={"url": "https://crm.example/hook"})
    with pytest.raises(ValidationError, match="custom field name"):
        Bitrix24Settings(category_field="CATEGORY")
    with pytest.raises(ConfigError) as err:
        load_settings(None, delivery={"sinc": "local"})
    assert any(p.startswith("delivery.sinc") for p in err.value.problems)
