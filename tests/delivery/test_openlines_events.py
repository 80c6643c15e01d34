"""Connector events read from Bitrix24's documented examples; BB-code made plain text."""

from __future__ import annotations

import pytest
from b24_openlines_standin import php_pairs
from test_openlines_vendor import load

from gateway.delivery.openlines.bbcode import to_plain
from gateway.delivery.openlines.events import (
    EventInvalid,
    dialog_finishes,
    seller_answers,
)
from gateway.delivery.openlines.form import nest


def test_the_documented_message_add() -> None:
    fields = nest(php_pairs(load("events/OnImConnectorMessageAdd.json-representation.json")))
    [answer] = seller_answers(fields)
    assert answer.connector == "myconnector"
    assert answer.line == "107"
    assert answer.chat == "channel-123"
    assert answer.key == "1807:86497"
    assert answer.user_id == "27"
    assert to_plain(answer.text) == "Klaus Weber:\nGuten Tag!"


def test_the_documented_dialog_finish() -> None:
    fields = nest(php_pairs(load("events/OnImConnectorDialogFinish.json-representation.json")))
    [finish] = dialog_finishes(fields)
    assert finish.chat == "8"
    assert finish.session == "3282"


def test_files_of_an_operator_message_become_links() -> None:
    fields = nest(
        [
            ("data[MESSAGES][0][im][chat_id]", "49"),
            ("data[MESSAGES][0][im][message_id]", "1209"),
            ("data[MESSAGES][0][chat][id]", "c1"),
            ("data[MESSAGES][0][message][files][0][name]", "price.pdf"),
            ("data[MESSAGES][0][message][files][0][link]", "https://p.example/disk/1"),
            ("data[MESSAGES][0][message][files][1][link]", "javascript:alert(1)"),
        ]
    )
    [answer] = seller_answers(fields)
    assert [(f.name, f.url) for f in answer.files] == [("price.pdf", "https://p.example/disk/1")]


@pytest.mark.parametrize(
    "pairs",
    [
        [("data[CONNECTOR]", "x")],
        [("data[MESSAGES][0][chat][id]", "c1")],
        [("event", "ONIMCONNECTORMESSAGEADD")],
    ],
)
def test_answers_without_their_ids_are_invalid(pairs: list[tuple[str, str]]) -> None:
    with pytest.raises(EventInvalid):
        seller_answers(nest(pairs))


@pytest.mark.parametrize(
    ("bb", "plain"),
    [
        ("[b]Анна:[/b] [br]Здравствуйте!", "Анна:\nЗдравствуйте!"),
        ("Смотрите [url=https://shop.ru/x]каталог[/url]", "Смотрите каталог (https://shop.ru/x)"),
        ("[URL]https://shop.ru[/URL]", "https://shop.ru"),
        ("[USER=5]Борис[/USER], подключитесь", "Борис, подключитесь"),
        ("[quote]цена?[/quote][br]1000 ₽", "«цена?»\n1000 ₽"),
        ("[i]курсив[/i] и [color=#ff0000]цвет[/color]", "курсив и цвет"),
        ("5 &gt; 3 &amp; [icon=x.png]", "5 > 3 &"),
        ("[script]не тег[/script]", "[script]не тег[/script]"),
    ],
)
def test_bbcode_to_plain(bb: str, plain: str) -> None:
    assert to_plain(bb) == plain
