"""The settings of the read-only commands: the store and the calendar checked as strictly
as for `serve`, the server-only sections taken as they are (see ClientSettings)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from pydantic import Field, create_model
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from gateway.calendar import CalendarSettings
from gateway.config import (
    ConfigError,
    Settings,
    StoreSettings,
    build_settings,
    read_config_file,
    settings_model,
    unknown_env,
)

__all__ = ["ClientSettings", "ConfigError", "client_settings_model", "load_client_settings"]


class ClientSettings(BaseSettings):
    """The settings of the read-only commands (`leads`, `outbox`, `quarantine`, `calendar`).

    The file is checked as strictly as for `serve` — unknown keys are errors — except the
    sections that hold what only the server uses: `[delivery]` and every channel section
    are taken as they are. So a secret given to `serve` alone (a mailbox password, the
    Bitrix24 webhook URL, by environment) does not stop a person from listing leads.
    `client_settings_model()` adds the other sections to this base.
    """

    model_config = SettingsConfigDict(
        env_prefix="LEADGATE_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    store: StoreSettings = StoreSettings()
    calendar: CalendarSettings = CalendarSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (env_settings, init_settings)


# Core sections a read-only command does not check (see ClientSettings).
_SERVER_ONLY = ("delivery",)


@functools.cache
def client_settings_model() -> type[ClientSettings]:
    fields: dict[str, Any] = {}
    for name, info in settings_model().model_fields.items():
        if name in ClientSettings.model_fields:
            continue
        if name in _SERVER_ONLY or name not in Settings.model_fields:
            fields[name] = (dict[str, Any], Field(default_factory=dict))
        else:
            fields[name] = (info.annotation, info)
    return create_model("ClientSettings", __base__=ClientSettings, __module__=__name__, **fields)


def load_client_settings(path: str | Path | None = None) -> ClientSettings:
    """The settings of a read-only command; see ClientSettings."""
    source, data = read_config_file(path)
    if unknown := unknown_env():
        raise ConfigError(source, unknown)
    return build_settings(client_settings_model(), source, data)
