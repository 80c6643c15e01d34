"""Settings: one TOML file plus LEADGATE_* environment variables (env wins).

Where the file is: `-c FILE`, else $LEADGATE_CONFIG, else ./leadgate.toml, else built-in
defaults (SQLite in the working directory, local store, the Russian calendar).
Unknown keys are errors that name their key path.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit

import phonenumbers
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from gateway import channels, envvars
from gateway.assign import AssignmentSettings, SellerSettings
from gateway.calendar import CalendarSettings
from gateway.chat_settings import ConversationSettings, InboxSettings
from gateway.delivery.openlines.settings import OpenLinesSettings
from gateway.delivery.settings import DeliverySettings
from gateway.identity import PHONE_LIST, PhoneList, normalize_phone
from gateway.models import Channel, EquipmentCategory
from gateway.secret_rules import LongSecret

DEFAULT_PATH = Path("leadgate.toml")
ENV_PATH = envvars.ENV_PATH


class Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _check_networks(items: list[str]) -> list[str]:
    for item in items:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or CIDR network") from None
    return items


Networks = Annotated[list[str], AfterValidator(_check_networks)]


class ServerSettings(Section):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    max_body_bytes: int = Field(1024 * 1024, ge=1024)
    # Proxies whose X-Forwarded-For we believe; from anyone else the header is ignored,
    # otherwise any client could pick the IP the rate limit sees.
    trusted_proxies: Networks = []
    # Slow clients (gateway.serving): a request head must arrive within header_timeout of
    # its first byte, its body within body_timeout of the head; idle keep-alive
    # connections close after keepalive; beyond max_connections new ones get a 503.
    header_timeout_seconds: float = Field(10.0, gt=0, le=600)
    body_timeout_seconds: float = Field(30.0, gt=0, le=3600)
    keepalive_seconds: float = Field(75.0, gt=0, le=3600)
    max_connections: int = Field(1000, ge=1, le=1_000_000)


class StoreSettings(Section):
    kind: Literal["sqlite", "redis"] = "sqlite"
    path: Path = Path("leadgate.db")
    # Events waiting to be committed together: one fsync serves them all.
    max_batch: int = Field(256, ge=1, le=10_000)
    # kind = "redis" (gateway.redisconn): one server (`url`), or Sentinel (`sentinels` +
    # `master`, with `url` giving only credentials, TLS and the database number).
    url: SecretStr | None = None
    sentinels: list[str] = []
    master: str = "mymaster"
    # Every key starts with this, so several gateways (or tests) can share one server.
    prefix: str = Field("leadgate:", min_length=1, max_length=64)
    # "always": refuse to start unless the server fsyncs every write before it answers
    # (a 2xx means durable). "relaxed": start anyway and say so on /readyz, /ops and in a
    # metric: an acknowledged event can be lost if the Redis host loses power.
    durability: Literal["always", "relaxed"] = "always"
    timeout_seconds: float = Field(5.0, gt=0, le=120)
    # Replication is asynchronous: what the master acknowledged and had not passed on dies
    # with it in a failover. With N > 0 an event is acknowledged only once N replicas have
    # it (WAIT); fewer within replica_wait_seconds is a 503 (the sender retries; the retry
    # is a replay). Set it to 1 with Sentinel and one replica.
    min_replicas: int = Field(0, ge=0, le=16)
    replica_wait_seconds: float = Field(1.0, gt=0, le=60)

    @model_validator(mode="after")
    def _redis_has_a_server(self) -> StoreSettings:
        if self.kind == "redis" and self.url is None and not self.sentinels:
            raise ValueError('kind = "redis" needs url = "redis://host:6379/0" or sentinels')
        for item in self.sentinels:
            host, _, port = item.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"sentinels: {item!r} is not host:port")
        return self


class DedupSettings(Section):
    window_days: int = Field(30, ge=0, le=3650)


FieldKind = Literal["text", "textarea", "phone", "email", "choice"]
FieldTarget = Literal[
    "name", "phone", "email", "company", "equipment_category", "probable_equipment", "comment"
]


class FormField(Section):
    label: str
    kind: FieldKind = "text"
    required: bool = False
    choices: list[str] | None = None
    maps_to: FieldTarget | None = None  # where the value lands in the lead; None = into the text
    max_length: int = Field(2000, ge=1, le=100_000)


def _site_fields() -> dict[str, FormField]:
    return {
        "name": FormField(label="Имя", required=True, maps_to="name", max_length=200),
        "phone": FormField(label="Телефон", kind="phone", required=True, maps_to="phone"),
        "email": FormField(label="Email", kind="email", maps_to="email", max_length=320),
        "equipment_type": FormField(
            label="Тип оборудования",
            kind="choice",
            choices=[c.value for c in EquipmentCategory],
            maps_to="equipment_category",
        ),
        "comment": FormField(label="Комментарий", kind="textarea", maps_to="comment"),
    }


class FormSettings(Section):
    title: str = "Заявка с сайта"
    fields: dict[str, FormField] = Field(default_factory=_site_fields)
    # Where a browser's plain form post is sent after success (303). None: the gateway's
    # own Russian thank-you page at /v1/forms/{form_id}/thanks.
    thank_you_url: str | None = None
    # Origins whose pages may post this form with fetch() (CORS), e.g. ["https://shop.ru"];
    # ["*"] for any. Empty: only plain HTML posts and server-to-server calls.
    allowed_origins: list[str] = []
    # A field no person sees; a bot that fills it makes a JUNK lead, not a NEW one.
    honeypot_field: str | None = "website"
    channel: Literal["webform", "callback", "chat"] = "webform"

    @field_validator("fields")
    @classmethod
    def _choices_for_choice_fields(cls, fields: dict[str, FormField]) -> dict[str, FormField]:
        for name, f in fields.items():
            if f.kind == "choice" and not f.choices:
                raise ValueError(f"field {name!r} is a choice but lists no choices")
            if f.maps_to == "equipment_category":
                allowed = {c.value for c in EquipmentCategory}
                if f.kind != "choice" or not set(f.choices or ()) <= allowed:
                    raise ValueError(
                        f"field {name!r} maps to equipment_category, so it must be a choice "
                        f"among {sorted(allowed)}"
                    )
        return fields


class RateLimitSettings(Section):
    """Per client IP on public forms: `requests` within `per_seconds`."""

    requests: int = Field(20, ge=1)
    per_seconds: float = Field(60.0, gt=0)
    exempt: Networks = []  # IPs or CIDR networks never limited (the website's own backend)


class TokenSettings(Section):
    """Named tokens, so one can be revoked without touching the others."""

    tokens: dict[str, LongSecret] = {}


class OpsSettings(Section):
    """Who may open /ops without an admin token: these networks (e.g. the office VPN)."""

    allowed_networks: Networks = []


class ScreenSettings(Section):
    """Spam rules: what matches makes a JUNK lead with the rule as its reason."""

    blocked_phones: PhoneList = []
    # The company's own numbers: never a customer's phone, in any channel.
    own_phones: PhoneList = []
    blocked_emails: list[str] = []
    blocked_domains: list[str] = []
    stop_words: list[str] = []


M = TypeVar("M", bound=BaseModel)


class Settings(BaseSettings):
    """The core's settings. What `load_settings` returns is an instance of a subclass built
    once from this and every channel spec's section (`settings_model()`); connectors read
    their own section with `settings.section(TheirSettings)`."""

    model_config = SettingsConfigDict(
        env_prefix="LEADGATE_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    phone_region: str = "RU"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # "json": one JSON object per line (for log shippers); masking applies either way.
    log_format: Literal["text", "json"] = "text"
    server: ServerSettings = ServerSettings()
    store: StoreSettings = StoreSettings()
    calendar: CalendarSettings = CalendarSettings()
    dedup: DedupSettings = DedupSettings()
    assignment: AssignmentSettings = AssignmentSettings()
    sellers: list[SellerSettings] = []
    forms: dict[str, FormSettings] = Field(default_factory=lambda: {"site": FormSettings()})
    ratelimit: RateLimitSettings = RateLimitSettings()
    orders: TokenSettings = TokenSettings()
    admin: TokenSettings = TokenSettings()
    ops: OpsSettings = OpsSettings()
    screen: ScreenSettings = ScreenSettings()
    # Factories, not instances: the delivery defaults read the channel specs, which are
    # loaded when settings are first built, not while this module is imported.
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)
    inbox: InboxSettings = InboxSettings()
    conversations: ConversationSettings = ConversationSettings()
    sources: dict[Channel, str] = Field(default_factory=channels.default_sources)
    # Bitrix24 Open Lines: chats mirrored into a line, sellers' answers taken back.
    openlines: OpenLinesSettings = OpenLinesSettings()

    @field_validator("phone_region")
    @classmethod
    def _known_region(cls, region: str) -> str:
        if region.upper() not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"{region!r} is not a region phonenumbers knows (e.g. RU, BY, KZ)")
        return region.upper()

    @field_validator("sources")
    @classmethod
    def _fill_sources(cls, given: dict[Channel, str]) -> dict[Channel, str]:
        # A file naming one channel's SOURCE_ID keeps the defaults of the others.
        return {**channels.default_sources(), **given}

    @field_validator("sellers")
    @classmethod
    def _unique_sellers(cls, sellers: list[SellerSettings]) -> list[SellerSettings]:
        seen: set[str] = set()
        for s in sellers:
            if s.id in seen:
                raise ValueError(f"seller id {s.id!r} appears twice")
            seen.add(s.id)
        return sellers

    @model_validator(mode="after")
    def _phone_lists_are_phones(self) -> Settings:
        # A blocked number that does not read as a phone would never match anything: it is
        # a typo the operator must hear about, not something to drop without a word. Numbers
        # are read by the same rule as every channel's (gateway.identity.normalize_phone).
        # Channel sections mark their lists with the PhoneList type; the region is ours.
        problems = [
            f"{key}.{i}: not a phone number (write it with + and the country code, or as a "
            f"number valid in phone_region {self.phone_region})"
            for key, values in _phone_lists(self)
            for i, raw in enumerate(values)
            if normalize_phone(raw, self.phone_region) is None
        ]
        if problems:
            raise ValueError(PATH_PROBLEMS + "\n".join(problems))
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file's values arrive as init kwargs; env must override them.
        return (env_settings, init_settings)

    def section(self, model: type[M]) -> M:
        """A channel spec's config section, typed: `settings.section(TelephonySettings)`."""
        name = _spec_sections(type(self)).get(model)
        value = getattr(self, name, None) if name is not None else None
        if not isinstance(value, model):
            raise LookupError(
                f"no config section holds {model.__name__}: is its spec registered, and were "
                "these settings built by load_settings() / settings_model()?"
            )
        return value


@functools.cache
def _spec_sections(model: type[Settings]) -> dict[type, str]:
    """Settings model of a spec section -> the section's name, for an assembled model."""
    return {
        field.annotation: name
        for name, field in model.model_fields.items()
        if name not in Settings.model_fields and isinstance(field.annotation, type)
    }


@functools.cache
def settings_model() -> type[Settings]:
    """The full settings model: the core's fields plus one section per registered channel
    spec. Built once per process; `load_settings` returns instances of it."""
    return build_settings_model(channels.specs())


def build_settings_model(specs: Sequence[channels.ChannelSpec]) -> type[Settings]:
    """The core's settings plus each spec's section. A spec section is a table like any
    other: unknown keys in it are named by path, LEADGATE_<SECTION>__<KEY> sets it."""
    sections: dict[str, Any] = {}
    for spec in specs:
        if spec.section is None or spec.settings is None:
            continue
        if spec.section in Settings.model_fields:
            raise channels.RegistryError(
                f"spec {spec.name!r}: [{spec.section}] is a core section already"
            )
        sections[spec.section] = (spec.settings, Field(default_factory=spec.settings))
    return create_model(
        "Settings",
        __base__=Settings,
        __module__=__name__,
        __doc__=Settings.__doc__,
        **sections,
    )


class ConfigError(Exception):
    """A config file that cannot be used; `problems` are "key.path: message" lines."""

    def __init__(self, source: str, problems: list[str]) -> None:
        super().__init__(f"{source}: " + "; ".join(problems))
        self.source = source
        self.problems = problems


def resolve_path(path: str | Path | None) -> Path | None:
    if path is not None:
        return Path(path)
    if env := os.environ.get(ENV_PATH):
        return Path(env)
    return DEFAULT_PATH if DEFAULT_PATH.exists() else None


# A whole-settings check whose message lines name their own key paths ("key.path: what").
PATH_PROBLEMS = "key paths follow:\n"


def _phone_lists(model: BaseModel, prefix: str = "") -> list[tuple[str, list[str]]]:
    """Every PhoneList field in the settings, core and channel sections alike, by key path."""
    found: list[tuple[str, list[str]]] = []
    for name, info in type(model).model_fields.items():
        value = getattr(model, name, None)
        if PHONE_LIST in info.metadata and isinstance(value, list):
            found.append((f"{prefix}{name}", value))
        elif isinstance(value, BaseModel):
            found += _phone_lists(value, f"{prefix}{name}.")
    return found


def _problems(exc: ValidationError) -> list[str]:
    out = []
    for err in exc.errors():
        msg = str(err["msg"])
        if not err["loc"] and PATH_PROBLEMS in msg:
            out += msg.split(PATH_PROBLEMS, 1)[1].splitlines()
            continue
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        # Never echo a rejected value: it may be a secret.
        out.append(f"{where}: {msg}")
    return out


def read_config_file(path: str | Path | None) -> tuple[str, dict[str, Any]]:
    """(where the settings come from, the file's tables) for the config in effect."""
    resolved = resolve_path(path)
    if resolved is None:
        return "built-in defaults", {}
    source = str(resolved)
    try:
        return source, tomllib.loads(resolved.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(source, ["file not found"]) from exc
    except (OSError, UnicodeDecodeError) as exc:  # a directory, no permission, not UTF-8
        raise ConfigError(source, [f"cannot read the file: {exc}"]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [f"not valid TOML: {exc}"]) from exc


S = TypeVar("S", bound=BaseSettings)


def build_settings(model: type[S], source: str, data: dict[str, Any]) -> S:
    try:
        return model(**data)
    except ValidationError as exc:
        raise ConfigError(source, _problems(exc)) from exc
    except SettingsError as exc:  # an env value that is not the JSON a list or table needs
        field = str(exc).split('"')[1] if '"' in str(exc) else "?"
        names = sorted(k for k in os.environ if k.upper().startswith(f"LEADGATE_{field.upper()}"))
        raise ConfigError(
            source,
            [
                f"environment {', '.join(names) or 'LEADGATE_' + field.upper()}: lists and "
                'tables must be JSON there, e.g. \'["10.0.0.0/8"]\' or \'{"site": "..."}\''
            ],
        ) from exc


def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """Read settings; raise ConfigError naming every bad key path."""
    source, data = read_config_file(path)
    data.update(overrides)
    if unknown := unknown_env():
        raise ConfigError(source, unknown)
    return build_settings(settings_model(), source, data)


def store_problem(store: StoreSettings) -> str | None:
    """What stops the store from opening on this machine, as a config problem: a directory
    that does not exist. A mistyped directory must not become a new, empty database (the
    gateway would start "fine" and every lead would land where nobody looks), so nothing
    is created: the working directory (the default's) exists, others are the operator's."""
    if store.kind != "sqlite":
        return None  # a server store's problems show when it connects (gateway.redisconn)
    parent = store.path.parent
    if not parent.is_dir():
        return f"store.path: directory {parent} does not exist (create it, or fix the path)"
    return None


def store_name(store: StoreSettings) -> str:
    """Where the store is, for logs and messages: the file, or the Redis server (or Sentinel
    group) and the key prefix. Never a password."""
    if store.kind == "sqlite":
        return str(store.path)
    if store.sentinels:
        where = f"sentinel {store.master} via {','.join(store.sentinels)}"
    else:
        assert store.url is not None  # StoreSettings requires url or sentinels
        parts = urlsplit(store.url.get_secret_value())
        where = f"{parts.hostname}:{parts.port or 6379}{parts.path or ''}"
    return f"redis {where} prefix {store.prefix!r}"


def _known_env_heads() -> set[str]:
    return {name.upper() for name in settings_model().model_fields}


def ignored_env() -> list[str]:
    """Container platform variables ignored at start (see gateway.envvars)."""
    return envvars.ignored_env(_known_env_heads())


def unknown_env() -> list[str]:
    """LEADGATE_* variables that name no setting (see gateway.envvars)."""
    return envvars.unknown_env(_known_env_heads())
