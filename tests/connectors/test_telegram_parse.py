"""Telegram updates as leadgate reads them: the recorded payloads of
tests/connectors/fixtures/telegram/updates/ (sources in SOURCES.md) through parse_update."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from connectors.telegram.updates import chat_of, lenient, parse_update
from gateway.models import AutoAnswer, Channel

UPDATES = Path(__file__).parent / "fixtures" / "telegram" / "updates"
NOW = datetime(2026, 1, 10, 18, 0, tzinfo=UTC)


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads((UPDATES / name).read_bytes())
    return data


def as_update(message: dict[str, Any], update_id: int = 7) -> dict[str, Any]:
    """Two fixtures are recorded Message objects (no Update envelope was published)."""
    return {"update_id": update_id, "message": message}


def greet(locale: str | None) -> AutoAnswer:
    return AutoAnswer(text=f"hello {locale}", ask_phone=True)


def parse(data: dict[str, Any]) -> Any:
    return parse_update("shop", data, received_at=NOW, region="RU", greeting=greet)


def test_a_private_text_message() -> None:
    data = load("private_text_message.teloxide.json")
    parsed = parse(data)
    assert parsed.kind == "message"
    event = parsed.event
    assert event.channel is Channel.TELEGRAM
    assert event.external_id == "shop:218485655:6557"
    assert event.text == "hello there"
    assert event.occurred_at == datetime.fromtimestamp(1569518342, UTC)
    assert event.received_at == NOW
    assert event.contact.name == "Waffle"
    assert event.contact.handles == ("tg:218485655",)
    assert event.thread is not None
    assert (event.thread.account, event.thread.chat, event.thread.locale) == (
        "shop",
        "218485655",
        "en",
    )
    assert event.meta["username"] == "WaffleLapkin"
    assert event.raw == data  # kept as received
    assert event.answer is None and event.edits is None and event.creates_lead


def test_start_asks_for_the_greeting_with_the_phone_button() -> None:
    parsed = parse(load("start_command.core-telegram-webhooks-example.json"))
    assert parsed.kind == "start"
    assert parsed.event.answer == AutoAnswer(text="hello None", ask_phone=True)
    assert parsed.event.contact.name == "Test Firstname Test Lastname"
    # The old official example has no is_bot in "from": read as a person.
    data = load("start_command.core-telegram-webhooks-example.json")
    data["message"]["text"] = "/start campaign_autumn-2026"
    data["message"]["from"]["language_code"] = "ru"
    parsed = parse(data)
    assert parsed.event.meta["start"] == "campaign_autumn-2026"
    assert parsed.event.answer == AutoAnswer(text="hello ru", ask_phone=True)


def test_an_edit_names_the_message_it_edits() -> None:
    parsed = parse(load("edited_message.core-telegram-webhooks-example.json"))
    assert parsed.kind == "edit"
    event = parsed.event
    assert event.edits == "shop:1111111:1365"
    assert event.external_id == "shop:1111111:1365:edit:10000"
    assert event.text == "Edited text"
    assert event.occurred_at == datetime.fromtimestamp(1441646600, UTC)  # edit_date
    assert event.answer is None


def test_files_are_kept_as_metadata_with_their_file_id() -> None:
    doc = parse(load("document_message.core-telegram-webhooks-example.json")).event
    (attachment,) = doc.attachments
    assert (attachment.kind, attachment.name, attachment.content_type, attachment.size) == (
        "document",
        "Testfile.pdf",
        "application/pdf",
        536392,
    )
    assert attachment.ref == "AwADBAADbXXXXXXXXXXXGBdhD2l6_XX"
    assert doc.text is None
    photo = parse(as_update(load("message_photo_caption_4_sizes.teloxide.json"))).event
    (picture,) = photo.attachments
    sizes = load("message_photo_caption_4_sizes.teloxide.json")["photo"]
    assert picture.kind == "photo" and picture.ref == sizes[-1]["file_id"]  # the largest
    assert picture.size == sizes[-1]["file_size"]
    assert photo.text == "www.example.com"  # the caption
    cyrillic = parse(as_update(load("message_photo_3_sizes_cyrillic.teloxide.json"))).event
    assert cyrillic.contact.name == "Андрей Власов"
    assert cyrillic.text is None  # a photo without a caption: its line shows the file


def test_the_customers_own_contact_is_their_phone_and_someone_elses_is_not() -> None:
    own = load("contact_own_redacted.tdlib-telegram-bot-api-issue-778.json")
    # The reporter redacted the number; a real-shaped one in its place (no "+", as sent).
    own["message"]["contact"]["phone_number"] = "79161234567"
    parsed = parse(own)
    assert parsed.kind == "contact"
    assert parsed.event.contact.phones == ("+79161234567",)
    # first_name came as null (tdlib/telegram-bot-api#778): read, not refused.
    assert parsed.event.contact.name is None
    foreign = copy.deepcopy(own)
    foreign["message"]["contact"]["user_id"] = 22222
    parsed = parse(foreign)
    assert parsed.kind == "foreign_contact"
    assert parsed.event.contact.phones == ()
    assert "+79161234567" in (parsed.event.text or "")
    no_account = copy.deepcopy(own)
    del no_account["message"]["contact"]["user_id"]  # a phone-book contact
    assert parse(no_account).event.contact.phones == ()


@pytest.mark.parametrize(
    "name",
    [
        "supergroup_command_reply_large_ids.teloxide.json",
        "supergroup_story_message_large_ids.teloxide.json",
        "supergroup_pinned_message.teloxide.json",
    ],
)
def test_groups_are_not_leads(name: str) -> None:
    assert parse(load(name)).kind == "group"
    assert parse(load(name)).event is None


def test_bots_blocks_and_other_updates_make_no_event() -> None:
    data = load("private_text_message.teloxide.json")
    data["message"]["from"]["is_bot"] = True
    assert parse(data).kind == "bot"
    assert parse(load("my_chat_member_kicked_private.teloxide.json")).kind == "blocked"
    assert parse(
        load("callback_query_inline_message.core-telegram-webhooks-example.json")
    ).kind == ("other")


def test_an_ephemeral_message_is_keyed_by_its_update() -> None:
    data = load("private_text_message_2.teloxide.json")
    data["message"]["message_id"] = 0  # Bot API 10: scheduled/ephemeral messages
    assert parse(data).event.external_id == "shop:408258968:u306197398"


def test_not_an_update_is_refused_clearly() -> None:
    with pytest.raises(ValidationError):
        parse({"update_id": 1, "message": {"text": "no chat, no date"}})


def test_lenient_mends_only_what_real_servers_break() -> None:
    data = {"from": {"id": 1, "first_name": None}, "document": {"file_id": "x"}}
    assert lenient(data) == {
        "from": {"id": 1, "first_name": "", "is_bot": False},
        "document": {"file_id": "x", "file_unique_id": ""},
    }


@pytest.mark.parametrize(
    "name",
    [
        "private_text_message.teloxide.json",
        "edited_message.core-telegram-webhooks-example.json",
        "my_chat_member_kicked_private.teloxide.json",
        "start_command.core-telegram-webhooks-example.json",
    ],
)
def test_an_update_names_its_chat_for_the_inbox_order(name: str) -> None:
    data = load(name)
    if "update_id" not in data:
        data = as_update(data)
    body = next(v for k, v in data.items() if k != "update_id")
    assert chat_of(data) == str(body["chat"]["id"])


def test_an_update_about_no_chat_has_no_order() -> None:
    assert chat_of({"update_id": 1, "inline_query": {"id": "5", "query": "x"}}) is None
    assert chat_of([1, 2]) is None
