"""[widget.NAME]: what a config may say, and the clear refusals of what it may not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from widget_support import POLICY, settings_with_widget, widget_config

from connectors.widget.settings import OffHours, Tab, WidgetSection, contrast
from gateway.config import ConfigError, load_settings


def _problems(tmp_path: Path, widget: dict[str, Any], name: str = "site") -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_settings(None, store={"path": str(tmp_path / "x.db")}, widget={name: widget})
    return info.value.problems


def test_defaults_follow_the_spec(tmp_path: Path) -> None:
    widget = settings_with_widget(tmp_path).section(WidgetSection).widgets["site"]
    assert widget.off_hours is OffHours.HIDDEN  # «отображается только в рабочее время»
    assert widget.tabs == [Tab.CHAT, Tab.CALLBACK, Tab.FORM]
    assert widget.form.channel == "webform"
    assert widget.policy_url == POLICY


def test_no_widget_by_default(tmp_path: Path) -> None:
    settings = load_settings(None, store={"path": str(tmp_path / "x.db")})
    assert settings.section(WidgetSection).widgets == {}


def test_origins_policy_and_names_are_checked(tmp_path: Path) -> None:
    problems = _problems(tmp_path, widget_config(allowed_origins=["https://shop.ru/page"]))
    assert any(p.startswith("widget.site.allowed_origins.0:") for p in problems), problems
    problems = _problems(tmp_path, widget_config(allowed_origins=[]))
    assert any("widget.site.allowed_origins" in p for p in problems), problems
    problems = _problems(tmp_path, widget_config(policy_url="javascript:alert(1)"))
    assert any(p.startswith("widget.site.policy_url:") for p in problems), problems
    problems = _problems(tmp_path, {"allowed_origins": ["https://shop.ru"]})
    assert any(p.startswith("widget.site.policy_url:") for p in problems), problems
    problems = _problems(tmp_path, widget_config(), name="Site Two")
    assert any("widget name" in p for p in problems), problems


def test_unknown_keys_name_their_path(tmp_path: Path) -> None:
    problems = _problems(tmp_path, widget_config(colour="#000000"))
    assert problems == ["widget.site.colour: Extra inputs are not permitted"]
    problems = _problems(tmp_path, widget_config(limits={"messages_per_minute": 3}))
    assert problems == ["widget.site.limits.messages_per_minute: Extra inputs are not permitted"]


def test_unreadable_colours_are_refused(tmp_path: Path) -> None:
    assert round(contrast("#ffffff", "#000000")) == 21
    problems = _problems(tmp_path, widget_config(color="#ffff00", color_text="#ffffff"))
    assert any("contrast" in p for p in problems), problems
    problems = _problems(tmp_path, widget_config(color="blue"))
    assert any(p.startswith("widget.site.color:") for p in problems), problems


def test_the_form_tab_reuses_form_settings_without_page_only_keys(tmp_path: Path) -> None:
    problems = _problems(tmp_path, widget_config(form={"allowed_origins": ["https://x.ru"]}))
    assert any("widget.site.form" in p for p in problems), problems
    widget = (
        settings_with_widget(
            tmp_path,
            widget_config(
                form={
                    "fields": {
                        "phone": {
                            "label": "Телефон",
                            "kind": "phone",
                            "maps_to": "phone",
                            "required": True,
                        }
                    }
                }
            ),
        )
        .section(WidgetSection)
        .widgets["site"]
    )
    assert list(widget.form.fields) == ["phone"]


def test_texts_take_only_the_when_placeholder(tmp_path: Path) -> None:
    problems = _problems(tmp_path, widget_config(texts={"ru": {"closed": "Ответим {date}"}}))
    assert any("widget.site.texts.ru.closed" in p for p in problems), problems
    problems = _problems(tmp_path, widget_config(texts={"de": {"title": "Hallo"}}))
    assert any("widget.site.texts" in p for p in problems), problems


def test_env_sets_a_widget_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEADGATE_WIDGET__SITE__TITLE", "Из окружения")
    widget = settings_with_widget(tmp_path).section(WidgetSection).widgets["site"]
    assert widget.title == "Из окружения"
