"""The `[widget.NAME]` config sections: one per site widget (chat, callback, form).

Declared by connectors.widget.spec; the core assembles `[widget]` into the settings model.
Every key under `[widget]` is a widget name, so a site with two brands runs two widgets
with their own origins, colours and texts. Nothing under `[widget]`: no widget routes.
"""

from __future__ import annotations

import re
import string
from enum import StrEnum
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.config import FormSettings

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
_COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class OffHours(StrEnum):
    """What the widget shows while chat and callback are closed."""

    HIDDEN = "hidden"  # nothing at all (the customer's spec: shown only in working time)
    FORM_AND_CALLBACK = "form_and_callback"  # the form and a callback request, with when


class Tab(StrEnum):
    CHAT = "chat"
    CALLBACK = "callback"
    FORM = "form"


PrechatField = Literal["name", "phone", "email"]
Lang = Literal["ru", "en"]


def _origin(value: str) -> str:
    """'https://shop.example.ru' (scheme, host, optional port; nothing else), as a browser
    sends it in the Origin header."""
    parts = urlsplit(value)
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or parts.username
        or value.endswith("/")
    ):
        raise ValueError(
            f"{value!r} is not an origin: write scheme and host (and port), e.g. "
            "'https://shop.example.ru', without a path or a trailing slash"
        )
    return value.lower()


Origin = Annotated[str, AfterValidator(_origin)]


def _http_url(value: str) -> str:
    # Shown to visitors as a link: a javascript: or data: URL would be script on their page.
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} is not an http(s) URL")
    return value


HttpUrl = Annotated[str, AfterValidator(_http_url)]


def _luminance(color: str) -> float:
    def channel(hex2: str) -> float:
        c = int(hex2, 16) / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(color[i : i + 2]) for i in (1, 3, 5))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: str, b: str) -> float:
    """WCAG 2 contrast ratio of two #RRGGBB colours (1 to 21)."""
    la, lb = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


# WCAG AA for normal text: the launcher's label and the header's title sit on the colour.
MIN_CONTRAST = 4.5


class WidgetLimits(_Section):
    """Abuse limits. Per client IP (one per IPv6 /64) and per visitor (the browser's token);
    a visitor over a limit reads a message saying how long to wait, never a silent failure."""

    # Callback requests and form posts together.
    submissions_per_ip: int = Field(5, ge=1, le=10_000)
    submissions_window_seconds: float = Field(600.0, gt=0, le=86_400)
    # New chat conversations (a visitor token seen for the first time).
    conversations_per_ip: int = Field(5, ge=1, le=10_000)
    conversations_window_seconds: float = Field(3600.0, gt=0, le=86_400)
    # Chat messages.
    messages_per_visitor: int = Field(20, ge=1, le=10_000)
    messages_per_ip: int = Field(60, ge=1, le=100_000)
    messages_window_seconds: float = Field(60.0, gt=0, le=86_400)
    # One chat message, in characters (a longer one is refused with a message, not cut).
    max_message_chars: int = Field(2000, ge=10, le=20_000)
    # Open chat sockets per client IP on one gateway process.
    sockets_per_ip: int = Field(20, ge=1, le=10_000)


class WidgetTexts(_Section):
    """Texts the operator writes for one language; what is left out comes from the catalog."""

    title: str | None = Field(None, min_length=1, max_length=60)
    launcher: str | None = Field(None, min_length=1, max_length=40)
    greeting: str | None = Field(None, min_length=1, max_length=500)
    # Shown on the callback and form tabs while closed; {when}: «в понедельник, 12 января,
    # после 10:00» in the visitor's language and time zone.
    closed: str | None = Field(None, min_length=1, max_length=300)
    callback_intro: str | None = Field(None, min_length=1, max_length=300)
    form_intro: str | None = Field(None, min_length=1, max_length=300)

    @field_validator("closed")
    @classmethod
    def _only_when(cls, text: str | None) -> str | None:
        if text is None:
            return text
        try:
            used = {n for _, n, _, _ in string.Formatter().parse(text) if n is not None}
        except ValueError as exc:
            raise ValueError(f"not a valid template: {exc}") from None
        if used - {"when"}:
            raise ValueError(f"unknown placeholder(s) {sorted(used - {'when'})}; only {{when}}")
        return text


def _widget_form() -> FormSettings:
    return FormSettings(title="Заявка из виджета")


class WidgetSettings(_Section):
    """One widget: `[widget.NAME]`."""

    # Sites whose pages may show this widget; every request from another origin is refused.
    allowed_origins: list[Origin] = Field(min_length=1)
    # The privacy policy the visitor consents to (152-ФЗ) before sending a phone or email.
    policy_url: HttpUrl
    policy_version: str | None = Field(None, min_length=1, max_length=100)
    # The header's title in every language ([widget.NAME.texts.NAME] title overrides it per
    # language); None: «Мы на связи» from the catalog.
    title: str | None = Field(None, min_length=1, max_length=60)
    color: str = "#1f5fbf"  # the accent: launcher, header, buttons
    color_text: str = "#ffffff"  # text on the accent
    position: Literal["right", "left"] = "right"
    tabs: list[Tab] = Field(
        default_factory=lambda: [Tab.CHAT, Tab.CALLBACK, Tab.FORM], min_length=1
    )
    off_hours: OffHours = OffHours.HIDDEN
    # Asked before the first chat message (all optional for the visitor unless required).
    prechat: list[PrechatField] = Field(default_factory=lambda: ["name", "phone"])
    prechat_required: bool = False
    # The form tab: fields, labels and honeypot as in [forms.NAME] (parsed the same way).
    form: FormSettings = Field(default_factory=_widget_form)
    texts: dict[Lang, WidgetTexts] = {}
    limits: WidgetLimits = WidgetLimits()

    @field_validator("color", "color_text")
    @classmethod
    def _hex_color(cls, value: str) -> str:
        if not _COLOR.fullmatch(value):
            raise ValueError(f"{value!r} is not a colour like '#1f5fbf'")
        return value.lower()

    @field_validator("tabs", "prechat")
    @classmethod
    def _unique(cls, items: list[str]) -> list[str]:
        if len(set(items)) != len(items):
            raise ValueError("an item is listed twice")
        return items

    @field_validator("form")
    @classmethod
    def _form_fits_the_widget(cls, form: FormSettings) -> FormSettings:
        # These belong to a plain HTML form; the widget has its own origins and answers.
        if form.allowed_origins:
            raise ValueError("allowed_origins is set on the widget itself, not on its form")
        if form.thank_you_url is not None:
            raise ValueError("the widget answers inside itself: thank_you_url does not apply")
        return form

    @model_validator(mode="after")
    def _readable(self) -> WidgetSettings:
        ratio = contrast(self.color, self.color_text)
        if ratio < MIN_CONTRAST:
            raise ValueError(
                f"color {self.color} and color_text {self.color_text} have a contrast of "
                f"{ratio:.1f}:1; text on the accent needs at least {MIN_CONTRAST}:1 (WCAG AA)"
            )
        if self.prechat_required and not self.prechat:
            raise ValueError("prechat_required needs at least one prechat field")
        return self


class WidgetSection(BaseModel):
    """`[widget]`: each key is a widget's name, each value its `[widget.NAME]` table."""

    model_config = ConfigDict(frozen=True, extra="allow")
    __pydantic_extra__: dict[str, WidgetSettings] = Field(init=False)

    @model_validator(mode="after")
    def _names(self) -> WidgetSection:
        bad = [name for name in self.widgets if not _NAME.fullmatch(name)]
        if bad:
            raise ValueError(
                f"widget name(s) {bad}: use 1-40 of a-z, 0-9, '-', '_' (it is part of the URL)"
            )
        return self

    @property
    def widgets(self) -> dict[str, WidgetSettings]:
        return dict(self.__pydantic_extra__ or {})
