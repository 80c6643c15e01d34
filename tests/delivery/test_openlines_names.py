"""Customer names cleaned to Open Lines' rule: letters, spaces, hyphens, apostrophes, 25."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.delivery.openlines.names import MAX_NAME, clean, cut, user_names

ALLOWED = re.compile(r"[^\W\d_]|[ '-]")


def valid(text: str) -> bool:
    return len(text) <= MAX_NAME and all(ALLOWED.fullmatch(c) for c in text)


@pytest.mark.parametrize(
    ("full", "expected"),
    [
        ("Иван Петров", ("Иван", "Петров")),
        ("Петров Иван", ("Иван", "Петров")),
        ("Иванов Иван Иванович", ("Иван Иванович", "Иванов")),
        ("Ваня 🚜", ("Ваня", "")),
        ("ivan_1987", ("ivan", "")),
        ("Д’Артаньян", ("Д'Артаньян", "")),
        ("Анна-Мария  Смирнова-Васильева", ("Анна-Мария", "Смирнова-Васильева")),
        ("🔥🔥🔥 12345", ("Telegram", "")),
        (None, ("Telegram", "")),
        (
            "Александра Константиновна Преображенская",
            ("Александра Константиновна", "Преображенская"),
        ),
        ("Иванова Максимилиана Константиновна", ("Максимилиана", "Иванова")),
        ("Wolfeschlegelsteinhausenbergerdorff", ("Wolfeschlegelsteinhausenb", "")),
    ],
)
def test_names(full: str | None, expected: tuple[str, str]) -> None:
    assert user_names(full, "Telegram") == expected


def test_cut_prefers_a_word_boundary() -> None:
    assert cut("Мария Антуанетта Австрийская") == "Мария Антуанетта"
    assert cut("a" * 30) == "a" * 25


def test_clean_keeps_inner_hyphens_and_apostrophes_only() -> None:
    assert clean("--O'Neil--") == "O'Neil"
    assert clean("Ann - Mary") == "Ann Mary"


@given(st.text(max_size=80))
def test_whatever_comes_in_the_result_is_valid(full: str) -> None:
    name, last = user_names(full, "Чат на сайте")
    assert name and valid(name), name
    assert valid(last), last
