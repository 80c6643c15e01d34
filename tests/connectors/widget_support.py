"""Shared pieces of the widget tests: settings, a movable clock, the app with that clock."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from conftest import make_settings

from connectors.widget import spec as widget_spec
from connectors.widget.connector import build
from gateway.channels import ChannelSpec, specs
from gateway.config import Settings

MSK = ZoneInfo("Europe/Moscow")
ORIGIN = "https://shop.example.ru"
POLICY = "https://shop.example.ru/privacy"


def msk(*args: int) -> datetime:
    return datetime(*args, tzinfo=MSK)  # type: ignore[misc]


class Clock:
    """The gateway's "now": real time shifted, so it moves on while a test waits (the page
    must switch at 19:00 by itself), and set to any moment a test needs."""

    def __init__(self, at: datetime | None = None) -> None:
        self.offset = timedelta()
        if at is not None:
            self.set(at)

    def set(self, at: datetime) -> None:
        self.offset = at - datetime.now(UTC)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


def widget_config(**overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "allowed_origins": [ORIGIN],
        "policy_url": POLICY,
        "policy_version": "2025-01-10",
    }
    config.update(overrides)
    return config


def settings_with_widget(
    tmp_path: Path, widget: dict[str, Any] | None = None, **kw: Any
) -> Settings:
    return make_settings(tmp_path, widget={"site": widget or widget_config()}, **kw)


def specs_with_clock(clock: Callable[[], datetime]) -> Sequence[ChannelSpec]:
    """The registered specs, the widget's built with `clock` (create_app takes specs)."""
    out = []
    for spec in specs():
        if spec.name == widget_spec.SPEC.name:
            spec = dataclasses.replace(spec, build=lambda ctx: build(ctx, clock=clock))
        out.append(spec)
    return out
