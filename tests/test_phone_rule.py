"""One rule for numbers written without "+", the same for every channel and for config lists:
national in phone_region when valid there, else international when valid.

The numbers are the ones real PBXs and their vendors' own examples send (see
tests/connectors/fixtures/vendor/SOURCES.md): Zammad's CTI docs and specs, the
laravel-zadarma and twenty-zadarma webhook tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import ADMIN_AUTH

from gateway.config import ConfigError, load_settings
from gateway.identity import find_phones, normalize_phone


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("442037691880", "RU", "+442037691880"),  # a UK number as a PBX sends it
        ("493023125741", "RU", "+493023125741"),  # Zammad's CTI docs, Berlin
        ("492214710334", "RU", "+492214710334"),  # Zammad's CTI docs, Cologne
        ("48123123123", "RU", "+48123123123"),  # laravel-zadarma's NOTIFY_START caller
        ("48792010388", "RU", "+48792010388"),  # twenty-zadarma's NOTIFY_END caller
        ("491715000000", "RU", "+491715000000"),  # Zammad's blocked caller id
        ("49 30 23125741", "RU", "+493023125741"),  # with the separators people type
        # national wins whenever it is valid in the region
        ("4951234567", "RU", "+74951234567"),
        ("79161234567", "RU", "+79161234567"),
        ("89161234567", "RU", "+79161234567"),
        ("8 (916) 123-45-67", "RU", "+79161234567"),
        ("8 10 44 20 3769 1880", "RU", "+442037691880"),  # RU's own international prefix
        ("0044 20 3769 1880", "RU", "+442037691880"),
        ("0301234567", "DE", "+49301234567"),  # national in another region
        # invalid both ways stays invalid: no key that would merge strangers
        ("4912347114711", "RU", None),  # Zammad spec's caller: no valid number anywhere
        ("7800123456789", "RU", None),  # the Mango manual's placeholder
        ("12345678", "RU", None),
        ("1234567", "RU", None),
        ("+4912347114711", "RU", None),  # a "+" number is only ever international
        ("anonymous", "RU", None),
        ("44203769188O", "RU", None),  # a letter is no digit
    ],
)
def test_numbers_without_plus(raw: str, region: str, expected: str | None) -> None:
    assert normalize_phone(raw, region) == expected


def test_free_text_still_uses_the_regions_matcher() -> None:
    # Signatures in mail are matched as before; the rule is for fields that hold a number.
    assert find_phones("тел. 8 (916) 123-45-67", "RU") == ("+79161234567",)


def test_config_lists_follow_the_rule(tmp_path: Path) -> None:
    settings = load_settings(
        None,
        store={"path": str(tmp_path / "db")},
        screen={"blocked_phones": ["442037691880", "8 916 000-00-01"]},
        telephony={"blocked_numbers": ["493023125741"]},
    )
    assert settings.screen.blocked_phones == ["442037691880", "8 916 000-00-01"]


def test_an_invalid_configured_number_is_a_config_error_naming_its_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(
            None,
            store={"path": str(tmp_path / "db")},
            screen={"blocked_phones": ["+7 916 000-00-01", "12345"]},
            telephony={"blocked_numbers": ["4912347114711"]},
        )
    problems = caught.value.problems
    assert any(p.startswith("screen.blocked_phones.1: not a phone number") for p in problems)
    assert any(p.startswith("telephony.blocked_numbers.0: not a phone number") for p in problems)
    assert len(problems) == 2
    # The rejected value is not echoed (config errors are printed and logged).
    assert not any("12345" in p or "4912347114711" in p for p in problems)


def test_phone_region_decides_the_national_reading(tmp_path: Path) -> None:
    # "0301234567" is a Berlin number only when the business is in Germany.
    load_settings(
        None,
        store={"path": str(tmp_path / "db")},
        phone_region="DE",
        screen={"blocked_phones": ["0301234567"]},
    )
    with pytest.raises(ConfigError, match=r"screen\.blocked_phones\.0"):
        load_settings(
            None,
            store={"path": str(tmp_path / "db")},
            phone_region="RU",
            screen={"blocked_phones": ["0301234567"]},
        )


async def test_a_web_form_reads_the_number_by_the_same_rule(client: Any) -> None:
    """The rule lives in one place (gateway.identity): a form gets it as calls do."""
    resp = await client.post("/v1/forms/site", json={"name": "John", "phone": "442037691880"})
    assert resp.status == 201
    lead_id = (await resp.json())["lead_id"]
    lead = await (await client.get(f"/v1/leads/{lead_id}", headers=ADMIN_AUTH)).json()
    assert lead["contact"]["phones"] == ["+442037691880"]
