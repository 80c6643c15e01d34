"""Config mistakes are caught by check-config, naming the key, never at the first request."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import ConfigError, load_settings


@pytest.mark.parametrize(
    ("overrides", "where"),
    [
        ({"server": {"trusted_proxies": ["10.0.0.0/33"]}}, "server.trusted_proxies"),
        ({"ratelimit": {"exempt": ["not-an-ip"]}}, "ratelimit.exempt"),
        ({"phone_region": "ZZ"}, "phone_region"),
        (
            {
                "forms": {
                    "site": {
                        "fields": {
                            "kind": {
                                "label": "Вид",
                                "kind": "choice",
                                "choices": ["Гигантское"],
                                "maps_to": "equipment_category",
                            }
                        }
                    }
                }
            },
            "forms.site.fields",
        ),
    ],
)
def test_bad_values_name_their_key(overrides: dict[str, object], where: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(None, **overrides)
    assert any(p.startswith(where) for p in caught.value.problems), caught.value.problems


def test_good_values_pass_and_region_is_upper_cased() -> None:
    settings = load_settings(
        None,
        phone_region="by",
        server={"trusted_proxies": ["10.0.0.0/8", "::1"]},
        ratelimit={"exempt": ["192.0.2.7"]},
    )
    assert settings.phone_region == "BY"


def test_unreadable_config_is_a_config_error_not_a_traceback(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path)  # a directory
    assert "cannot read" in caught.value.problems[0]
    bad = tmp_path / "latin1.toml"
    bad.write_bytes("log_level = '\xe9'".encode("latin-1"))
    with pytest.raises(ConfigError):
        load_settings(bad)


def test_config_flag_works_after_any_subcommand() -> None:
    from gateway.cli import hoist_config

    assert hoist_config(["leads", "list", "-c", "prod.toml", "--json"]) == [
        "-c",
        "prod.toml",
        "leads",
        "list",
        "--json",
    ]
    assert hoist_config(["calendar", "--config=x.toml"]) == ["--config=x.toml", "calendar"]
    assert hoist_config(["serve"]) == ["serve"]


def test_check_config_accepts_c_after_the_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gateway.cli import main

    cfg = tmp_path / "x.toml"
    cfg.write_text('phone_region = "ZZ"\n')
    assert main(["check-config", "-c", str(cfg)]) == 2
    assert "phone_region" in capsys.readouterr().err


def test_env_list_that_is_not_json_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEADGATE_SERVER__TRUSTED_PROXIES", "10.0.0.0/8")
    with pytest.raises(ConfigError) as caught:
        load_settings(None)
    assert "LEADGATE_SERVER__TRUSTED_PROXIES" in caught.value.problems[0]
    monkeypatch.setenv("LEADGATE_SERVER__TRUSTED_PROXIES", '["10.0.0.0/8"]')
    assert load_settings(None).server.trusted_proxies == ["10.0.0.0/8"]


def test_misspelt_env_variable_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEADGATE_SERVR__PORT", "9000")
    with pytest.raises(ConfigError) as caught:
        load_settings(None)
    assert caught.value.problems == [
        "environment LEADGATE_SERVR__PORT: no setting of that name"
        " (did you mean LEADGATE_SERVER__PORT?)"
    ]


def test_init_file_is_owner_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["init"]) == 0
    assert (tmp_path / "leadgate.toml").stat().st_mode & 0o777 == 0o600


SHORT = "short-secret-15"  # 15 characters: one too few
BOT_TOKEN = "8162115592:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw0"


@pytest.mark.parametrize("value", ["", "   ", SHORT])
@pytest.mark.parametrize(
    ("overrides", "where"),
    [
        (lambda v: {"admin": {"tokens": {"ops": v}}}, "admin.tokens.ops"),
        (lambda v: {"orders": {"tokens": {"site": v}}}, "orders.tokens.site"),
        (
            lambda v: {"telegram": {"bots": {"shop": {"token": BOT_TOKEN, "secret_token": v}}}},
            "telegram.bots.shop.secret_token",
        ),
        (
            lambda v: {"vk": {"communities": [{"group_id": 1, "confirmation": "ab", "secret": v}]}},
            "vk.communities.0.secret",
        ),
        (
            lambda v: {"meta": {"app_secret": v, "verify_token": "v" * 16}},
            "meta.app_secret",
        ),
        (
            lambda v: {"meta": {"app_secret": "a" * 32, "verify_token": v}},
            "meta.verify_token",
        ),
        (lambda v: {"telephony": {"cti": {"token": v}}}, "telephony.cti.token"),
        (
            lambda v: {"delivery": {"webhook": {"url": "https://crm.example/hook", "secret": v}}},
            "delivery.webhook.secret",
        ),
    ],
)
def test_short_or_empty_secrets_are_refused_naming_the_key(
    overrides: object, where: str, value: str
) -> None:
    assert callable(overrides)
    with pytest.raises(ConfigError) as caught:
        load_settings(None, **overrides(value))
    named = [p for p in caught.value.problems if p.startswith(where)]
    assert named, caught.value.problems
    if value.strip():
        assert "at least 16 characters" in named[0]
    assert SHORT not in str(caught.value)  # never the value itself


def test_secrets_of_16_characters_pass() -> None:
    good = "0123456789abcdef"
    settings = load_settings(
        None,
        admin={"tokens": {"ops": good}},
        orders={"tokens": {"site": good}},
        telephony={"cti": {"token": good}},
    )
    assert settings.admin.tokens["ops"].get_secret_value() == good
