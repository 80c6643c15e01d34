"""Channels as plugins: the registry behind the entry point, the core's side of it, and what
the core assembles from the specs (settings, `leadgate init`, the CRM tables)."""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import tomllib
from pathlib import Path

import pytest
from pydantic import BaseModel

from connectors import registry
from connectors.email.settings import EmailSettings
from connectors.telephony.settings import TelephonySettings
from gateway import channels
from gateway.channels import (
    ENTRY_POINT_GROUP,
    ChannelDefaults,
    ChannelSpec,
    Connector,
    ConnectorContext,
    RegistryError,
)
from gateway.cli import main
from gateway.cli.init import render_config
from gateway.config import (
    ConfigError,
    Settings,
    build_settings_model,
    load_settings,
    settings_model,
)
from gateway.delivery import b24texts
from gateway.models import Channel

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("LEADGATE_"):
            monkeypatch.delenv(name)


# --- the direction of imports ------------------------------------------------------------


def _imports_of(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Call) and node.args:
            # importlib.import_module("connectors.x") / __import__("connectors")
            first = node.args[0]
            callee = ast.unparse(node.func)
            if callee.endswith(("import_module", "__import__")) and isinstance(first, ast.Constant):
                found.append((node.lineno, str(first.value)))
    return found


def test_the_core_imports_nothing_from_connectors() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{line}: {name}"
        for path in sorted((ROOT / "gateway").rglob("*.py"))
        for line, name in _imports_of(path)
        if name == "connectors" or name.startswith("connectors.")
    ]
    assert not offenders, "gateway/ must not import connectors/:\n" + "\n".join(offenders)


def test_the_import_check_sees_every_spelling(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import connectors.registry\n"
        "from connectors import webform\n"
        "import importlib\n"
        "importlib.import_module('connectors.email')\n"
        "from gateway import channels\n",
        encoding="utf-8",
    )
    names = sorted(name for _, name in _imports_of(probe))
    assert names == [
        "connectors",
        "connectors.email",
        "connectors.registry",
        "gateway",
        "importlib",
    ]


def test_only_the_registry_names_every_connector() -> None:
    # The core reaches the registry by its entry point, never by module name.
    for path in (ROOT / "gateway").rglob("*.py"):
        assert "connectors.registry" not in path.read_text(encoding="utf-8"), path
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    group = pyproject["project"]["entry-points"][ENTRY_POINT_GROUP]
    assert group == {"leadgate": "connectors.registry:SPECS"}


# --- loading the specs through the entry point --------------------------------------------


def test_specs_come_from_the_installed_entry_point() -> None:
    points = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    assert [ep.value for ep in points] == ["connectors.registry:SPECS"]
    loaded = channels.specs()
    assert list(loaded) == registry.SPECS
    assert channels.specs() is loaded  # cached: loaded once per process
    assert [s.name for s in loaded] == [
        "webform",
        "orders",
        "telephony",
        "email",
        "meta",
        "vk",
        "telegram",
        "widget",
    ]


def test_no_registry_is_a_clear_error() -> None:
    with pytest.raises(RegistryError, match=r"is leadgate installed\? pip install -e \."):
        channels.load_specs([])


def _point(name: str, value: str) -> importlib.metadata.EntryPoint:
    return importlib.metadata.EntryPoint(name=name, value=value, group=ENTRY_POINT_GROUP)


def _build_nothing(ctx: ConnectorContext) -> Connector | None:
    return None


class PluginSettings(BaseModel):
    greeting: str = "hi"


PLUGIN_SPECS = [
    ChannelSpec(
        name="plugin",
        channels={},
        section="plugin",
        settings=PluginSettings,
        build=_build_nothing,
    )
]
DUPLICATE_CHANNEL = [
    ChannelSpec(
        name="second-phone",
        channels={Channel.PHONE: ChannelDefaults(source_id="X", title="X", label="X")},
        build=_build_nothing,
    )
]
NOT_SPECS = {"webform": "not a spec"}


def test_a_plugin_package_adds_its_specs_after_leadgates() -> None:
    loaded = channels.load_specs(
        [
            _point("another", "test_channels:PLUGIN_SPECS"),
            _point("leadgate", registry.__name__ + ":SPECS"),
        ]
    )
    assert [s.name for s in loaded][-1] == "plugin"
    assert loaded[:-1] == tuple(registry.SPECS)
    model = build_settings_model(loaded)
    assert model(plugin={"greeting": "привет"}).section(PluginSettings).greeting == "привет"


def test_registry_contradictions_are_errors() -> None:
    leadgate = _point("leadgate", "connectors.registry:SPECS")
    with pytest.raises(RegistryError, match="'phone' is declared by both 'telephony' and"):
        channels.load_specs([leadgate, _point("x", "test_channels:DUPLICATE_CHANNEL")])
    with pytest.raises(RegistryError, match="not a list of ChannelSpec"):
        channels.load_specs([leadgate, _point("x", "test_channels:NOT_SPECS")])
    with pytest.raises(RegistryError, match="two channel specs are named 'webform'"):
        channels.load_specs([leadgate, _point("x", "connectors.registry:SPECS")])
    with pytest.raises(RegistryError, match="both section and settings"):
        ChannelSpec(name="half", channels={}, section="half", build=_build_nothing)
    core_clash = ChannelSpec(
        name="clash", channels={}, section="server", settings=PluginSettings, build=_build_nothing
    )
    with pytest.raises(RegistryError, match=r"\[server\] is a core section"):
        build_settings_model([core_clash])


# --- the channel tables the core uses -----------------------------------------------------

# What the tables held as literals in the core before they moved into the specs.
SOURCES = {
    "phone": "CALL",
    "email": "EMAIL",
    "webform": "WEBFORM",
    "callback": "CALLBACK",
    "orders": "STORE",
    "chat": "WEB",
    "vk": "UC_VK",
    "facebook": "UC_FACEBOOK",
    "instagram": "UC_INSTAGRAM",
    "telegram": "UC_TELEGRAM",
}
TITLES = {
    "webform": "Заявка с сайта",
    "callback": "Обратный звонок: {phone}",
    "phone": "Звонок с {phone}",
    "orders": "Заказ №{external_id}",
    "chat": "Чат на сайте: {who}",
    "email": "Письмо от {who}",
    "vk": "Сообщение ВКонтакте: {who}",
    "facebook": "Сообщение Facebook: {who}",
    "instagram": "Сообщение Instagram: {who}",
    "telegram": "Сообщение Telegram: {who}",
}
LABELS = {
    "webform": "Форма на сайте",
    "orders": "Интернет-магазин",
    "chat": "Чат на сайте",
    "callback": "Обратный звонок",
    "phone": "Телефон",
    "email": "Почта",
    "vk": "ВКонтакте",
    "facebook": "Facebook",
    "instagram": "Instagram",
    "telegram": "Telegram",
}


def test_every_channel_is_declared_by_exactly_one_spec() -> None:
    owners = [ch for spec in channels.specs() for ch in spec.channels]
    assert sorted(owners) == sorted(Channel)


def test_crm_tables_come_from_the_specs() -> None:
    assert channels.default_sources() == SOURCES
    assert channels.default_titles() == TITLES
    assert {ch.value: b24texts.channel_name(ch) for ch in Channel} == LABELS
    interest = {ch.value for ch in Channel if channels.carries_interest(ch)}
    assert interest == {"webform", "callback", "orders"}
    # ... and reach the settings: the defaults under the overrides.
    settings = load_settings(
        None,
        sources={"vk": "UC_7KQ2"},
        delivery={"bitrix24": {"titles": {"phone": "Звонок: {phone}"}}},
    )
    assert settings.sources == {**SOURCES, "vk": "UC_7KQ2"}
    assert settings.delivery.bitrix24.titles == {**TITLES, "phone": "Звонок: {phone}"}


def test_a_new_channel_gets_its_defaults_from_its_spec_alone() -> None:
    specs = [s for s in registry.SPECS if s.name != "vk"]
    mine = ChannelSpec(
        name="vk-plugin",
        channels={Channel.VK: ChannelDefaults(source_id="UC_VK2", title="ВК: {who}", label="ВК")},
        build=_build_nothing,
    )
    channels._check([*specs, mine])  # no clash: no other spec holds vk
    with pytest.raises(RegistryError, match="'vk' is declared by both 'vk' and 'vk-plugin'"):
        channels._check([*registry.SPECS, mine])


# --- the assembled settings ---------------------------------------------------------------


def test_settings_are_assembled_once_from_core_and_spec_sections() -> None:
    model = settings_model()
    assert settings_model() is model
    assert issubclass(model, Settings)
    assert {"telephony", "email"} <= set(model.model_fields)
    assert "telephony" not in Settings.model_fields  # the core knows no channel
    settings = load_settings(None)
    assert isinstance(settings, Settings)
    assert settings.section(TelephonySettings) == TelephonySettings()
    assert settings.section(EmailSettings).mailboxes == {}
    with pytest.raises(LookupError, match="no config section holds PluginSettings"):
        settings.section(PluginSettings)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "leadgate.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("toml", "where"),
    [
        ("[telegrm]\ntoken = 'x'\n", "telegrm"),  # a section no spec declares
        ("[email]\nmailbox = {}\n", "email.mailbox"),
        (
            "[email.mailboxes.sales]\nhost = 'h'\nusername = 'u'\npassword = 'p'\nport = 0\n",
            "email.mailboxes.sales.port",
        ),
        ("[telephony.cti]\ntoken = 'short'\n", "telephony.cti.token"),
    ],
)
def test_problems_in_spec_sections_are_named_by_path(tmp_path: Path, toml: str, where: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(_write(tmp_path, toml))
    assert any(p.startswith(f"{where}:") for p in info.value.problems), info.value.problems


def test_env_sets_spec_sections_and_names_unknown_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(tmp_path, "[telephony]\nblocked_numbers = ['+79000000000']\n")
    token = "a-cti-token-from-the-environment"
    monkeypatch.setenv("LEADGATE_TELEPHONY__CTI__TOKEN", token)
    monkeypatch.setenv("LEADGATE_EMAIL__OWN_ADDRESSES", '["Boss@Example.ru"]')
    settings = load_settings(path)
    telephony = settings.section(TelephonySettings)
    assert telephony.cti.token is not None and telephony.cti.token.get_secret_value() == token
    assert telephony.blocked_numbers == ["+79000000000"]  # the file's keys stay
    assert settings.section(EmailSettings).own_addresses == ["boss@example.ru"]

    monkeypatch.setenv("LEADGATE_TELEGRM__TOKEN", "x")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    # telegram is a spec section now: the typo is named, with the section it looks like.
    assert info.value.problems == [
        "environment LEADGATE_TELEGRM__TOKEN: no setting of that name "
        "(did you mean LEADGATE_TELEGRAM__TOKEN?)"
    ]


# --- leadgate init ------------------------------------------------------------------------

_EXAMPLE = re.compile(r"^#\s?(?=\[|[A-Za-z0-9_\"-]+\s*=)")


def uncomment(text: str) -> str:
    """The template with its commented example tables and keys switched on."""
    return "\n".join(_EXAMPLE.sub("", line) for line in text.splitlines())


def test_init_writes_every_spec_section_and_check_config_accepts_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["init"]) == 0
    text = (tmp_path / "leadgate.toml").read_text(encoding="utf-8")
    for spec in channels.specs():
        assert spec.init_snippet in text, spec.name
        if spec.section is not None:
            assert f"\n[{spec.section}]\n" in text, spec.section
    assert "[email]" in text and "[telephony]" in text
    # The forms' thank-you page is the gateway's own unless one is named.
    assert "\nthank_you_url" not in text and "# thank_you_url" in text
    assert "# allowed_origins = [" in text
    # The SOURCE_ID defaults are listed, commented, as the specs declare them.
    for channel, source in SOURCES.items():
        assert f'# {channel} = "{source}"' in text
    assert main(["check-config"]) == 0
    assert "ok" in capsys.readouterr().out


def test_init_examples_are_valid_once_uncommented(tmp_path: Path) -> None:
    text = uncomment(render_config())
    settings = load_settings(_write(tmp_path, text))
    assert settings.section(EmailSettings).mailboxes["sales"].host == "imap.yandex.ru"
    assert settings.section(TelephonySettings).any_provider
    assert settings.sources["vk"] == "UC_VK"


@pytest.mark.parametrize(
    "spec", [s for s in registry.SPECS if s.init_snippet], ids=lambda s: s.name
)
def test_each_snippet_is_its_own_section_and_valid(spec: ChannelSpec) -> None:
    assert spec.section is not None and spec.settings is not None
    as_written = tomllib.loads(spec.init_snippet)
    assert list(as_written) == [spec.section]  # starts with its table: nothing leaks
    spec.settings.model_validate(as_written[spec.section])
    examples = tomllib.loads(uncomment(spec.init_snippet))
    assert list(examples) == [spec.section]
    assert examples[spec.section] != as_written[spec.section]  # it did give examples
    spec.settings.model_validate(examples[spec.section])


def test_every_spec_with_a_section_has_a_snippet() -> None:
    for spec in registry.SPECS:
        assert (spec.section is None) == (not spec.init_snippet), spec.name
