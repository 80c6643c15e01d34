"""The pure parse functions of the VK connector, on real-format objects (fixtures/vk)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from connectors.vk import parse
from connectors.vk.api import THROTTLE_WAIT, VkError, error_kind
from connectors.vk.envelope import EnvelopeInvalid, read_envelope
from connectors.vk.messages import message_event, read_message
from connectors.vk.sender import outcome, random_id
from gateway.conversations import SendStatus
from gateway.models import Channel

FIXTURES = Path(__file__).parent / "fixtures" / "vk"
AT = datetime(2025, 11, 24, 13, 5, tzinfo=UTC)  # a few minutes after the fixtures' dates


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    return data


COMMON = {"group_id": 11111111, "community": "Оборудование", "received_at": AT}


def test_lead_form_from_the_comfort_fixture() -> None:
    obj = load("lead_forms_new.comfort-test.json")["object"]
    event = parse.parse_lead_form(obj, **COMMON)
    assert event.channel is Channel.VK
    assert event.external_id == "11111111:lead:39842910"
    assert event.contact.name == "Ivan Ivanov"
    assert event.contact.phones == ("+78005553535",)
    assert event.contact.handles == ("vk:111111111",)
    assert event.text == (
        "Заявка из лид-формы «Оформить заказ»\n"
        "Ваш заказ в виде «ссылка или артикул — количество»: 29128569\n"
        "Доставка: До подъезда (100 ₽)"
    )
    assert event.source_detail == "Оборудование, лид-форма «Оформить заказ»"
    assert event.meta["form_id"] == 1 and event.meta["form_name"] == "Оформить заказ"
    assert event.meta["ad_id"] is None and event.meta["via"] == "callback"
    assert event.occurred_at == AT  # the event carries no date: receipt time


def test_lead_form_with_every_standard_answer_and_a_checkbox() -> None:
    obj = load("lead_forms_new.full.schema-built.json")["object"]
    event = parse.parse_lead_form(obj, **COMMON, name="Не этот")
    # The typed-in name wins over the profile's, in the order a Russian reads it.
    assert event.contact.name == "Иван Сергеевич Петров"
    assert event.contact.phones == ("+79161234567",)
    assert event.contact.emails == ("ivan.petrov@example.ru",)
    assert event.text == (
        "Заявка из лид-формы «Подбор оборудования»\n"
        "Какое оборудование вас интересует?: Подъёмник двухстоечный, 4 т\n"
        "Что ещё нужно: Монтаж, Доставка\n"
        "Объявление: 68412530"
    )
    assert event.meta["ad_id"] == 68412530


def test_lead_form_of_getleads_takes_question_labels_and_the_date() -> None:
    page = load("leadForms.getLeads.schema-built.json")["response"]
    form = load("leadForms.list.schema-built.json")["response"][0]
    questions = {q["key"]: q["label"] for q in form["questions"]}
    event = parse.parse_lead_form(
        page["leads"][0],
        **COMMON,
        questions=questions,
        form_id=1,
        form_name="Оформить заказ",
        via="catch_up",
    )
    assert event.external_id == "11111111:lead:39842913"
    assert event.contact.name == "Мария"
    assert event.contact.phones == ("+79031112233",)
    assert "Ваш заказ в виде «ссылка или артикул — количество»: 29128569 — 2" in event.text
    assert "Доставка: До подъезда (100 ₽), Подъём на этаж" in event.text
    assert event.occurred_at == datetime.fromtimestamp(1763989300, UTC)
    assert event.meta["form_id"] == 1 and event.meta["via"] == "catch_up"


def test_lead_form_keeps_an_answer_that_is_not_a_phone() -> None:
    obj = {
        "lead_id": 5,
        "user_id": 7,
        "answers": [{"key": "phone_number", "question": "Телефон", "answer": "позвоните"}],
    }
    event = parse.parse_lead_form(obj, **COMMON)
    assert event.contact.phones == ()
    assert "Телефон: позвоните" in (event.text or "")


@pytest.mark.parametrize(
    "obj",
    [
        {"user_id": 1, "answers": []},
        {"lead_id": 1, "answers": "x"},
        {"lead_id": True, "answers": []},
    ],
)
def test_lead_form_without_its_id_or_answers_is_invalid(obj: dict[str, Any]) -> None:
    with pytest.raises(parse.ObjectInvalid):
        parse.parse_lead_form(obj, **COMMON)


def test_wall_reply_links_the_post_and_finds_the_phone() -> None:
    obj = load("wall_reply_new.schema-built.json")["object"]
    event = parse.parse_wall_reply(obj, **COMMON, name="Мария Смирнова")
    assert event is not None
    assert event.external_id == "11111111:wall_reply:-11111111_512"
    assert event.contact.handles == ("vk:612444319",)
    assert event.contact.phones == ("+79167654321",)
    assert event.contact.name == "Мария Смирнова"
    link = "https://vk.com/wall-11111111_143?reply=512"
    assert event.text is not None and event.text.startswith(f"Комментарий к записи {link}\n")
    assert event.meta["post_link"] == link
    assert event.occurred_at == datetime.fromtimestamp(1763989200, UTC)
    assert event.creates_lead


def test_wall_reply_of_a_community_is_not_a_customer() -> None:
    obj = dict(load("wall_reply_new.schema-built.json")["object"], from_id=-11111111)
    assert parse.parse_wall_reply(obj, **COMMON) is None


def test_wall_reply_as_activity_only() -> None:
    obj = load("wall_reply_new.schema-built.json")["object"]
    event = parse.parse_wall_reply(obj, **COMMON, creates_lead=False)
    assert event is not None and not event.creates_lead


def test_market_order_reads_like_a_store_order() -> None:
    obj = load("market_order_new.schema-built.json")["object"]
    event = parse.parse_market_order(obj, **COMMON, name="Павел Дуров")
    assert event.external_id == "11111111:order:17"
    assert event.text == (
        "Заказ №11111111-17 в магазине ВКонтакте\n"
        "Компрессор поршневой 500 л/мин × 1 — 45 000 ₽\n"
        "Шланг армированный 10 м × 2 — 1 250 ₽\n"
        "Итого: 47 500 ₽\n"
        "Адрес: Тула, ул. Советская, 1\n"
        "Комментарий: Позвоните перед доставкой"
    )
    assert event.meta["total"] == "47500" and event.meta["currency"] == "RUB"
    assert event.meta["items"] == 2
    assert event.interest.probable_equipment == (
        "Компрессор поршневой 500 л/мин × 1 — 45 000 ₽\nШланг армированный 10 м × 2 — 1 250 ₽"
    )
    assert event.contact.handles == ("vk:111111111",)


def test_market_order_without_price_texts_renders_the_amount() -> None:
    obj = {
        "id": 3,
        "user_id": 5,
        "items_count": 4,
        "total_price": {"amount": "1234550", "currency": {"id": 643, "name": "RUB"}},
        "preview_order_items": [{"title": "Домкрат", "quantity": 1}],
    }
    event = parse.parse_market_order(obj, **COMMON)
    assert event.text == (
        "Заказ №3 в магазине ВКонтакте\nДомкрат × 1\n… и ещё позиций: 3\nИтого: 12 345.50 RUB"
    )


def test_messages_permission_is_a_fact_never_a_lead() -> None:
    allow = load("message_allow.schema-built.json")
    deny = load("message_deny.schema-built.json")
    event = parse.parse_messages_permission(
        allow["object"], allowed=True, event_key=allow["event_id"], **COMMON
    )
    assert event is not None and not event.creates_lead
    assert event.text == "Разрешил сообщения от сообщества"
    assert event.meta["key"] == "site_widget"
    assert event.external_id == f"11111111:allow:463526827:{allow['event_id']}"
    event = parse.parse_messages_permission(
        deny["object"], allowed=False, event_key=deny["event_id"], **COMMON
    )
    assert event is not None and event.meta["kind"] == parse.KIND_MESSAGES_DENIED


def test_vk_time_believes_recent_dates_only() -> None:
    assert parse.vk_time(int((AT - timedelta(hours=1)).timestamp()), AT) == AT - timedelta(hours=1)
    assert parse.vk_time(int((AT - timedelta(days=30)).timestamp()), AT) == AT
    assert parse.vk_time(int((AT + timedelta(days=1)).timestamp()), AT) == AT
    assert parse.vk_time(10**20, AT) == AT
    assert parse.vk_time("1763989200", AT) == AT


def test_attachments_are_metadata() -> None:
    post = load("wall_post_new_photo.firebase-bot-test.json")["object"]
    (photo,) = parse.attachments_of(post["attachments"])
    assert photo.content_type == "vk/photo"
    assert photo.url == "https://vk.com/photo11111_457243812"


# --- the envelope ----------------------------------------------------------------------


def test_envelope_of_a_captured_event() -> None:
    data = load("message_new_v5.131_client_info.pastebin.json")
    envelope = read_envelope(data)
    assert envelope.type == "message_new" and envelope.group_id == 214167102
    assert envelope.event_id == "da1b15e9f6d0c3c8a0c937e048cdd3e2b43794d0"
    assert envelope.version == "5.131" and envelope.key == envelope.event_id


def test_envelope_without_event_id_gets_a_stable_key() -> None:
    data = load("message_new_pre5103_bare.issue40.json")
    first, again = read_envelope(data), read_envelope(json.loads(json.dumps(data)))
    assert first.event_id is None and first.key.startswith("sha256:")
    assert first.key == again.key


@pytest.mark.parametrize(
    "data", [{}, {"type": "x"}, {"type": "", "group_id": 1}, {"type": "x", "group_id": -5}]
)
def test_envelope_needs_type_and_group(data: dict[str, Any]) -> None:
    with pytest.raises(EnvelopeInvalid):
        read_envelope(data)


# --- messages --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "peer", "author", "cmid", "customer", "locale"),
    [
        ("message_new_v5.103plus.vkbottle-test.json", 1, 1, 1234, True, "ru"),
        ("message_new_v5.131_client_info.pastebin.json", 2000000066, 612444319, 2169, False, "ru"),
        ("message_new_pre5103_bare.issue40.json", 463526827, 463526827, 38, True, None),
        ("message_new_pre5103_bare_chat.issue40.json", 2000000001, 463526827, 69, False, None),
        ("message_reply_pre5103_bare.issue40.json", 463526827, -168230748, 39, False, None),
    ],
)
def test_both_message_shapes_are_read(
    name: str, peer: int, author: int, cmid: int, customer: bool, locale: str | None
) -> None:
    msg = read_message(load(name)["object"])
    assert msg is not None
    assert (msg.peer_id, msg.from_id, msg.cmid) == (peer, author, cmid)
    assert msg.from_customer is customer and msg.locale == locale


def test_a_message_event_is_a_thread_line() -> None:
    obj = load("message_new_pre5103_bare.issue40.json")["object"]
    msg = read_message(
        dict(obj, text="Мой телефон 8 916 123-45-67", fwd_messages=[{"text": "цена?"}])
    )
    assert msg is not None
    event = message_event(msg, **COMMON, name="Иван Петров")
    assert event.external_id == "11111111:msg:463526827:38"
    assert event.thread is not None
    assert (event.thread.account, event.thread.chat) == ("11111111", "463526827")
    assert event.contact.phones == ("+79161234567",)
    assert event.text == "Мой телефон 8 916 123-45-67\n> цена?"
    assert event.edits is None and event.creates_lead
    edit = message_event(msg, **COMMON, edit_key="1531466700")
    assert edit.edits == event.external_id
    assert edit.external_id == "11111111:msg:463526827:38:edit:1531466700"


def test_an_object_without_a_message_is_not_read() -> None:
    assert read_message({"client_info": {}}) is None
    assert read_message({"message": {"peer_id": 1, "from_id": 1}}) is None


# --- sending ---------------------------------------------------------------------------


def test_random_id_is_ours_stable_and_in_range() -> None:
    ids = {random_id(f"01JD{n:022d}") for n in range(2000)}
    assert len(ids) == 2000
    assert all(0 < r < 2**63 for r in ids)
    assert random_id("01JDXYZ") == random_id("01JDXYZ")


@pytest.mark.parametrize(
    ("code", "status", "words"),
    [
        (901, SendStatus.UNDELIVERABLE, "VK 901"),
        (900, SendStatus.UNDELIVERABLE, "VK 900"),
        (950, SendStatus.UNDELIVERABLE, "окно ответа закрыто"),
        (914, SendStatus.UNDELIVERABLE, "VK 914"),
        (6, SendStatus.RETRY, "VK 6"),
        (9, SendStatus.RETRY, "VK 9"),
        (29, SendStatus.RETRY, "VK 29"),
        (5, SendStatus.HALT, "VK 5"),
        (27, SendStatus.HALT, "VK 27"),
        (10, SendStatus.RETRY, "error 10"),
    ],
)
def test_vk_errors_become_send_outcomes(code: int, status: SendStatus, words: str) -> None:
    result = outcome(VkError(error_kind(code), code, "VK's words", method="messages.send"))
    assert result.status is status and result.reason is not None and words in result.reason
    if code in (6, 9, 29):
        assert result.retry_after == THROTTLE_WAIT[code]


@pytest.mark.parametrize(
    ("name", "peer"),
    [
        ("message_new_v5.103plus.vkbottle-test.json", "message.peer_id"),
        ("message_new_pre5103_bare.issue40.json", "peer_id"),
        ("message_reply_pre5103_bare.issue40.json", "peer_id"),
        ("message_allow.schema-built.json", "user_id"),
    ],
)
def test_an_event_names_its_dialog_for_the_inbox_order(name: str, peer: str) -> None:
    data = load(name)
    data.setdefault("group_id", 1)  # the recorded object came without its envelope's
    envelope = read_envelope(data)
    value: Any = envelope.object
    for part in peer.split("."):
        value = value[part]
    assert envelope.peer == str(value)
