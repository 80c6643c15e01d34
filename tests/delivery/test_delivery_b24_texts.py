"""What a seller reads in Bitrix24, without HTTP: call facts, interest, form fields, after-hours
reasons, the COMMENTS of a repeat-request lead, and ФИО / company from what a contact gave."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from test_delivery_mapping import MSK, T0, make_event, make_lead

from gateway.delivery.b24mapping import (
    fill_fields,
    lead_fields,
    person_fields,
    repeat_lead_fields,
    split_name,
    with_filled,
)
from gateway.delivery.b24texts import after_hours_ru, event_comment, is_request, marker
from gateway.delivery.settings import Bitrix24Settings
from gateway.models import Attachment, Channel, Contact, EquipmentCategory, Interest, Outcome

NAMES = {"anna": "Анна"}


def fact(kind: str, **meta: Any) -> Any:
    return make_event(
        id="01FACT",
        external_id="zadarma:in_1:end",
        text=None,
        contact=Contact(),
        source_detail=None,
        outcome=Outcome.MERGED,
        meta={"kind": kind, "provider": "zadarma", "call_id": "in_1", **meta},
    )


# --- call facts --------------------------------------------------------------------------------


def test_missed_call_says_when_to_call_back() -> None:
    lead = make_lead(sla_due_at=T0 + timedelta(minutes=15))  # 11:15 in Moscow
    event = fact(
        "call_result",
        direction="in",
        answered=False,
        missed=True,
        disposition="busy",
        summary="Пропущенный звонок: занято",
    )
    text = event_comment(lead, event, "01FACT", MSK, NAMES)
    assert text.splitlines()[0] == "Пропущенный звонок: занято. Перезвонить до 12.01.2026 11:15"
    assert "Повторное обращение" not in text  # a fact about the call, not a new contact
    assert text.endswith(marker("01FACT"))


def test_missed_call_past_deadline_asks_for_a_call_back_now() -> None:
    lead = make_lead(sla_due_at=T0 - timedelta(days=2))
    event = fact("call_result", direction="in", answered=False, summary="Пропущенный звонок: x")
    first = event_comment(lead, event, "01FACT", MSK).splitlines()[0]
    assert first == "Пропущенный звонок: x. Перезвонить как можно скорее"


def test_answered_call_names_the_seller_and_the_talk_time() -> None:
    event = fact(
        "call_result",
        direction="in",
        answered=True,
        missed=False,
        duration=95,
        answered_by="anna",
        answered_by_extension="101",
        summary="Разговор, 1 мин 35 с, ответил(а) anna",
    )
    text = event_comment(make_lead(), event, "01FACT", MSK, NAMES)
    assert text.splitlines()[0] == "Разговор 1 мин 35 с, ответил(а) Анна"
    # Without a seller for the extension: the PBX's name, else the extension.
    event = fact("call_result", direction="in", answered=True, duration=7, answered_by=None,
                 answered_by_extension="105")  # fmt: skip
    assert event_comment(make_lead(), event, "01FACT", MSK).startswith(
        "Разговор 7 с, ответил(а) доб. 105"
    )


def test_recording_is_a_link() -> None:
    url = "https://api.zadarma.com/v1/pbx/record/request/?call_id=1741680135.2458761"
    event = fact("call_recording", recording_id="1741680135.2458761", recording_url=url)
    event = event.model_copy(update={"attachments": (Attachment(name="call.mp3", url=url),)})
    assert event_comment(make_lead(), event, "01FACT", MSK).splitlines()[0] == (
        f"Запись разговора: {url}"
    )


def test_repeat_call_and_outgoing_call() -> None:
    call = make_event(
        id="01CALL",
        text=None,
        outcome=Outcome.MERGED,
        meta={"kind": "call", "direction": "in", "summary": "Входящий звонок с +79161234567"},
    )
    text = event_comment(make_lead(), call, "01CALL", MSK)
    assert text.startswith("Повторное обращение: Телефон, 12.01.2026 11:00\nВходящий звонок с")
    assert is_request(call)
    out = make_event(
        id="01OUT",
        text=None,
        outcome=Outcome.MERGED,
        meta={
            "kind": "call",
            "direction": "out",
            "summary": "Исходящий звонок на +7916 с доб. 101",
        },
    )
    assert not is_request(out)
    assert event_comment(make_lead(), out, "01OUT", MSK).startswith(
        "Исходящий звонок на +7916 с доб. 101, 12.01.2026 11:00"
    )
    assert not is_request(fact("call_result"))


# --- interest and form fields ----------------------------------------------------------------


def form_event(**kw: Any) -> Any:
    base: dict[str, Any] = {
        "id": "01FORM",
        "channel": Channel.WEBFORM,
        "external_id": "01FORM",
        "text": "Нужен пресс",
        "source_detail": "site",
        "contact": Contact(name="Иван Петров", phones=("+79161234567",)),
        "meta": {"form_title": "Заявка", "extra_fields": {"city": "Тула", "budget": "2 млн"}},
    }
    base.update(kw)
    return make_event(**base)


def test_new_lead_comments_keep_category_equipment_and_extra_fields_by_default() -> None:
    lead = make_lead(
        channel=Channel.WEBFORM,
        interest=Interest(
            equipment_category=EquipmentCategory.LARGE, probable_equipment="Пресс П-100"
        ),
    )
    fields = lead_fields(lead, form_event(), Bitrix24Settings(), assigned_by=None, tz=MSK)
    comments = fields["COMMENTS"]
    assert "Категория оборудования: Крупное" in comments
    assert "Вероятное оборудование: Пресс П-100" in comments
    assert "Другие поля формы:\ncity: Тула\nbudget: 2 млн" in comments
    assert not any(k.startswith("UF_") for k in fields)  # no custom field configured


def test_order_cart_is_not_repeated_as_probable_equipment() -> None:
    cart = "Токарный станок × 1 — 250 000 ₽"
    lead = make_lead(
        channel=Channel.ORDERS,
        interest=Interest(equipment_category=EquipmentCategory.LARGE, probable_equipment=cart),
    )
    order = make_event(channel=Channel.ORDERS, text=f"Заказ №A-1\n{cart}")
    comments = lead_fields(lead, order, Bitrix24Settings(), assigned_by=None, tz=MSK)["COMMENTS"]
    assert "Категория оборудования: Крупное" in comments
    assert comments.count(cart) == 1


def test_merge_comment_has_interest_and_form_fields() -> None:
    lead = make_lead(
        interest=Interest(equipment_category=EquipmentCategory.LARGE, probable_equipment="Пресс")
    )
    text = event_comment(lead, form_event(outcome=Outcome.MERGED), "01FORM", MSK)
    assert "Интерес: Крупное; Пресс" in text
    assert "city: Тула" in text
    # A call says nothing about interest: no line from an earlier form on it.
    call = make_event(outcome=Outcome.MERGED, meta={"kind": "call", "direction": "in"})
    assert "Интерес" not in event_comment(lead, call, "01EVENT", MSK)


# --- after hours -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "said"),
    [
        ("outside hours: 10:00–19:00", "вне рабочих часов (10:00–19:00)"),
        ("weekend: суббота", "выходной (суббота)"),
        ("holiday: Новогодние каникулы", "праздник: Новогодние каникулы"),
        (
            "outside hours: нерабочий день по графику (суббота)",
            "нерабочий день по графику (суббота)",
        ),
        ("something else", "something else"),
        (None, None),
    ],
)
def test_after_hours_reasons_in_russian(reason: str | None, said: str | None) -> None:
    assert after_hours_ru(reason) == said


def test_after_hours_line_is_russian() -> None:
    lead = make_lead(
        after_hours=True,
        after_hours_reason="weekend: суббота",
        next_open_at=T0 + timedelta(days=2),
    )
    comments = lead_fields(lead, None, Bitrix24Settings(), assigned_by=None, tz=MSK)["COMMENTS"]
    assert "Нерабочее время — выходной (суббота); в работу с 14.01.2026 11:00" in comments
    assert "weekend" not in comments


# --- ФИО and company -------------------------------------------------------------------------


def test_first_patronymic_last_name_is_read_by_the_middle_word() -> None:
    assert split_name("Роман Аркадьевич Абрамович") == {
        "NAME": "Роман",
        "SECOND_NAME": "Аркадьевич",
        "LAST_NAME": "Абрамович",
    }
    assert split_name("Абрамович Роман Аркадьевич") == {
        "LAST_NAME": "Абрамович",
        "NAME": "Роман",
        "SECOND_NAME": "Аркадьевич",
    }


@pytest.mark.parametrize("name", ["ООО Ромашка", "ИП Сидоров", "АО «Станкомаш»", "ЗАО Альфа",
                                  "ПАО Бета", "ОАО Гамма", 'ооо "Ромашка"'])  # fmt: skip
def test_legal_form_is_a_company_not_a_person(name: str) -> None:
    assert person_fields(name, None) == {"COMPANY_TITLE": name}
    # With a company already given, the text stays whole in NAME: nothing is lost.
    assert person_fields(name, "Другая фирма") == {"NAME": name, "COMPANY_TITLE": "Другая фирма"}
    assert person_fields(name, name) == {"COMPANY_TITLE": name}


def test_legal_form_name_in_a_new_lead() -> None:
    lead = make_lead(contact=Contact(name="ООО Ромашка", phones=("+79161234567",)))
    fields = lead_fields(lead, None, Bitrix24Settings(), assigned_by=None, tz=MSK)
    assert fields["COMPANY_TITLE"] == "ООО Ромашка"
    assert not any(k in fields for k in ("NAME", "LAST_NAME", "SECOND_NAME"))


# --- merge fill-ins ----------------------------------------------------------------------------

UF = {"category_field": "UF_CRM_CAT", "equipment_field": "UF_CRM_EQ"}


def test_fill_only_what_the_crm_lead_lacks() -> None:
    settings = Bitrix24Settings(**UF, category_values={EquipmentCategory.LARGE: "45"})
    lead = make_lead(
        interest=Interest(equipment_category=EquipmentCategory.LARGE, probable_equipment="Пресс")
    )
    event = form_event(
        contact=Contact(
            name="Иван Петров",
            phones=("+79161234567", "+79167654321"),
            emails=("ivan@example.ru",),
            company="Ромашка",
        )
    )
    current = {
        "ID": "5",
        "NAME": None,
        "LAST_NAME": "",
        "COMPANY_TITLE": None,
        "PHONE": [{"ID": "9", "VALUE": "8 (916) 123-45-67", "VALUE_TYPE": "WORK"}],
        "UF_CRM_CAT": None,
        "UF_CRM_EQ": "",
    }
    fill = fill_fields(current, lead, event, settings)
    assert fill == {
        "NAME": "Иван",
        "LAST_NAME": "Петров",
        "COMPANY_TITLE": "Ромашка",
        "PHONE": [{"VALUE": "+79167654321", "VALUE_TYPE": "WORK"}],  # the known one is not re-added
        "EMAIL": [{"VALUE": "ivan@example.ru", "VALUE_TYPE": "WORK"}],
        "UF_CRM_CAT": "45",
        "UF_CRM_EQ": "Пресс",
    }
    # Once filled, the same event brings nothing new.
    assert fill_fields(with_filled(current, fill), lead, event, settings) == {}


def test_fill_never_overwrites_a_sellers_input() -> None:
    settings = Bitrix24Settings(**UF)
    lead = make_lead(interest=Interest(equipment_category=EquipmentCategory.SMALL))
    event = form_event(contact=Contact(name="Иван Петров", company="Ромашка"))
    current = {
        "NAME": "Ваня",  # typed by the seller: the whole ФИО stays as it is
        "COMPANY_TITLE": "ООО Ромашка-2",
        "UF_CRM_CAT": "46",
        "EMAIL": [{"ID": "3", "VALUE": "IVAN@example.ru"}],
    }
    assert fill_fields(current, lead, event, settings) == {}
    # A call brings no interest: the UF fields stay untouched even when empty.
    call = make_event(contact=Contact(phones=("+79161234567",)), meta={"kind": "call"})
    assert fill_fields({"PHONE": [{"VALUE": "+79161234567"}]}, lead, call, settings) == {}


# --- a repeat request on a closed CRM lead ---------------------------------------------------


def test_repeat_lead_fields() -> None:
    lead = make_lead(
        channel=Channel.WEBFORM,
        source_id="WEBFORM",
        contact=Contact(name="Иван Петров", phones=("+79161234567",), emails=("i@x.ru",)),
        interest=Interest(),
        sla_due_at=T0 + timedelta(minutes=15),
    )
    call = make_event(
        id="01CALL2",
        text=None,
        outcome=Outcome.MERGED,
        meta={"kind": "call", "direction": "in", "summary": "Входящий звонок с +79161234567"},
    )
    fields = repeat_lead_fields(
        lead,
        call,
        "01CALL2",
        Bitrix24Settings(),
        previous_id="17",
        previous_semantic="S",
        source_id="CALL",
        assigned_by=3,
        tz=MSK,
    )
    assert fields["ORIGIN_ID"] == "01LEAD:01CALL2"
    assert fields["ORIGINATOR_ID"] == "leadgate"
    assert fields["TITLE"] == "Звонок с +7 916 123-45-67"  # the request's channel, not the lead's
    assert fields["SOURCE_ID"] == "CALL"
    assert fields["STATUS_ID"] == "NEW"
    assert fields["ASSIGNED_BY_ID"] == 3
    assert (fields["NAME"], fields["LAST_NAME"]) == ("Иван", "Петров")
    assert fields["EMAIL"] == [{"VALUE": "i@x.ru", "VALUE_TYPE": "WORK"}]
    comments = fields["COMMENTS"]
    assert comments.startswith("Повторное обращение: предыдущий лид №17 сконвертирован")
    assert "Входящий звонок с +79161234567" in comments
    assert "Взять в работу до 12.01.2026 11:15" in comments
    assert comments.endswith(marker("01CALL2"))
