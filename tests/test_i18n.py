"""Customer-facing text: Russian first, translatable, catalogs complete and in sync."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from gateway.i18n import LOCALE_DIR, format_when, gettext_for, negotiate

ROOT = Path(__file__).resolve().parent.parent


def _source_msgids() -> set[str]:
    found: set[str] = set()
    for directory in (ROOT / "gateway", ROOT / "connectors"):
        for _file, _line, message, _comments, _ctx in extract_from_dir(
            directory, keywords={"N_": None, "_": None}, method_map=[("**.py", "python")]
        ):
            found.add(message if isinstance(message, str) else message[0])
    return found


def _catalog(path: Path) -> Any:
    with path.open("rb") as fh:
        return read_po(fh)


def test_template_lists_every_marked_string() -> None:
    template = {m.id for m in _catalog(LOCALE_DIR / "leadgate.pot") if m.id}
    missing = _source_msgids() - template
    assert not missing, f"run pybabel extract (see gateway/i18n.py); missing: {missing}"


def test_every_catalog_translates_every_string() -> None:
    template = {m.id for m in _catalog(LOCALE_DIR / "leadgate.pot") if m.id}
    for po in LOCALE_DIR.glob("*/LC_MESSAGES/leadgate.po"):
        catalog = _catalog(po)
        untranslated = {i for i in template if not (catalog.get(i) and catalog.get(i).string)}
        assert not untranslated, f"{po}: untranslated {untranslated}"


def test_negotiation_prefers_russian_when_unsure() -> None:
    assert negotiate(None) == "ru"
    assert negotiate("de-DE,de;q=0.9") == "ru"
    assert negotiate("en-US,en;q=0.8,ru;q=0.5") == "en"
    assert negotiate("ru-RU,en;q=0.5") == "ru"
    assert negotiate(";;q=bad,,") == "ru"


def test_english_catalog_translates_and_keeps_placeholders() -> None:
    _ = gettext_for("en")
    assert _("Заполните поле «{label}»").format(label="Name") == "Please fill in “Name”"
    assert gettext_for("ru")("Проверьте поля формы") == "Проверьте поля формы"


def test_dates_read_in_the_readers_language() -> None:
    at = datetime(2026, 1, 12, 7, 0, tzinfo=UTC)
    assert format_when(at, "ru", "Europe/Moscow") == "понедельник, 12 января, 10:00"
    assert format_when(at, "en", "Europe/Moscow") == "Monday, 12 January, 10:00"


async def test_form_errors_follow_accept_language(client: Any) -> None:
    body = {"name": "", "phone": "12"}
    ru = await client.post("/v1/forms/site", json=body)
    en = await client.post("/v1/forms/site", json=body, headers={"Accept-Language": "en"})
    assert ru.status == en.status == 422
    assert (await ru.json())["fields"]["name"] == "Заполните поле «Имя»"
    en_body = await en.json()
    assert en_body["fields"]["name"] == "Please fill in “Имя”"
    assert en_body["detail"] == "Please check the form fields"


def test_when_we_open_reads_naturally_in_each_language() -> None:
    from gateway.i18n import describe_opening

    monday = datetime(2026, 1, 12, 7, 0, tzinfo=UTC)  # 10:00 in Moscow
    saturday = datetime(2026, 1, 10, 18, 0, tzinfo=UTC)
    tz = "Europe/Moscow"
    assert describe_opening(monday, saturday, tz, "ru") == "в понедельник, 12 января, после 10:00"
    assert describe_opening(monday, saturday, tz, "en-US") == "on Monday, January 12, after 10:00"
    tuesday = datetime(2026, 1, 13, 7, 0, tzinfo=UTC)
    assert describe_opening(tuesday, saturday, tz, "ru").startswith("во вторник, 13 января")
    # Opening later today, and next year.
    early = datetime(2026, 1, 12, 4, 0, tzinfo=UTC)
    assert describe_opening(monday, early, tz, "ru") == "сегодня после 10:00"
    new_year = datetime(2027, 1, 11, 7, 0, tzinfo=UTC)
    december = datetime(2026, 12, 31, 12, 0, tzinfo=UTC)
    assert describe_opening(new_year, december, tz, "ru") == (
        "в понедельник, 11 января 2027\u202fг., после 10:00"
    )
    # A language we have no catalog for: babel's own words, not a mix; unknown: Russian.
    assert describe_opening(monday, saturday, tz, "de") == "Montag, 12 Januar, 10:00"
    assert describe_opening(monday, saturday, tz, "xx") == (
        "в понедельник, 12 января, после 10:00"
    )
