"""The plugin contract between the core and the channel connectors.

A connector package declares one `ChannelSpec`: its channels and their CRM defaults, its
config section and settings model, its commented `leadgate init` snippet, and how to build
the running `Connector` (routes, supervised background tasks, readiness, shutdown). The
list of specs lives in `connectors/registry.py`; the core finds it through the Python entry
point group `leadgate.channels` (declared in pyproject.toml), so nothing in `gateway/`
imports `connectors/` by name and a third-party package could add a channel the same way.

The core assembles from the specs: the settings model (gateway.config.settings_model), the
`init` template (gateway.cli.init), the channel tables of delivery (below) and the docs
checks. Kept light on purpose: gateway.config imports this module, so it imports the heavier
core (settings, pipeline, metrics) for type checking only.
"""

from __future__ import annotations

import argparse
import functools
import importlib.metadata
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from pydantic import BaseModel

from gateway.broadcast import Broadcast, InProcessBroadcast
from gateway.coordination import Coordination, InProcessCoordination
from gateway.models import Channel, Receipt

if TYPE_CHECKING:
    from aiohttp import web

    from gateway.chats import Chats
    from gateway.config import Settings
    from gateway.http import Network
    from gateway.inbox import Inbox
    from gateway.metrics import Metrics
    from gateway.pipeline import Pipeline
    from gateway.store.base import QuarantineEntry

ENTRY_POINT_GROUP = "leadgate.channels"


class RegistryError(RuntimeError):
    """The channel specs cannot be found or contradict each other."""


@dataclass(frozen=True, slots=True)
class ChannelDefaults:
    """What the CRM gets for a channel unless the config says otherwise."""

    source_id: str  # Bitrix24 SOURCE_ID ([sources] overrides it)
    title: str  # lead TITLE template ([delivery.bitrix24.titles] overrides it)
    label: str  # the channel as a seller reads it in the lead's comments
    # Its events carry the customer's interest (form fields, a cart): the interest fields
    # and the interest line of the comments are filled from them.
    carries_interest: bool = False


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """A background job of a connector, run under the supervisor (gateway.supervisor).

    `run` is meant to run until cancelled; if it raises (or returns) it is restarted with
    backoff. A `singleton` task runs only in the replica holding the coordination lease
    `task:<name>` (a mailbox folder, a Telegram long poll): `lease_seconds` is how long a
    dead holder keeps others waiting.
    """

    name: str
    run: Callable[[], Awaitable[None]]
    singleton: bool
    lease_seconds: float = 30.0


class Connector(Protocol):
    """A running channel: what the app mounts, supervises, asks about and shuts down.

    Two more methods are optional (a connector without them keeps the defaults):
    `status() -> Mapping[str, StatusValue]`, a few lines for the /ops page (see
    ReportsStatus; default: none), and `async replay_quarantined(entry)`, running a kept
    input through the connector again (see ReplaysQuarantine; default: a person handles it).
    """

    name: str

    def routes(self) -> Sequence[web.AbstractRouteDef]:
        """HTTP routes, mounted as given (paths start with /v1/)."""

    def tasks(self) -> Sequence[TaskSpec]:
        """Background jobs (pollers), started with the app under the supervisor."""

    def readiness(self) -> str | None:
        """The connector's problem in words for /readyz, or None when all is well."""

    async def shutdown(self) -> None:
        """Release what the connector holds; runs after its tasks were cancelled."""


# A status value: text (a gateway.texts.Text is shown in the reader's language), a count,
# a moment (shown in the calendar's time zone), or None for "never"/"unknown".
StatusValue = str | int | datetime | None


@runtime_checkable
class ReportsStatus(Protocol):
    """Optional: what a connector tells ops beyond readiness (a mailbox connected and last
    read, webhooks accepted and refused). Keys are short labels (Russian msgids marked with
    N_ are translated on the page; other keys, such as a mailbox name, are shown as they
    are). Called on every /ops refresh: keep it cheap and free of personal data."""

    def status(self) -> Mapping[str, StatusValue]: ...


class ReplayRefused(Exception):
    """A kept input still cannot become an event; the message says why, for a person."""


@runtime_checkable
class ReplaysQuarantine(Protocol):
    """Optional: run an input this connector quarantined through it again (after a person
    asked for it with `leadgate quarantine release`, typically once a newer version reads
    what an older one could not). Returns the receipt of the event it made, or None when the
    input reads fine but makes no event; raises ReplayRefused when it still cannot be read.
    It goes through the pipeline like live input, so an input already taken is `replayed`."""

    async def replay_quarantined(self, entry: QuarantineEntry) -> Receipt | None: ...


def connector_status(connector: Connector) -> Mapping[str, StatusValue]:
    """A connector's status lines; none when it does not report any."""
    return connector.status() if isinstance(connector, ReportsStatus) else {}


@dataclass(frozen=True, slots=True)
class ConnectorContext:
    """What the core hands a connector. A connector reads its own config section with
    `ctx.settings.section(ItsSettings)` (typed), never a core attribute by another name."""

    settings: Settings
    pipeline: Pipeline
    metrics: Metrics
    # What replicas must agree on (leases, shared limits); in-process by default.
    coordination: Coordination = field(default_factory=InProcessCoordination)
    # "Something new for topic T" to every replica (gateway.broadcast): how a reply sent
    # by one replica reaches a customer's live connection held by another.
    broadcast: Broadcast = field(default_factory=InProcessBroadcast)
    trusted_proxies: Sequence[Network] = field(default_factory=list)
    # Extra readiness checks (name -> problem in words, or None); the app adds them to
    # /readyz beside each connector's own readiness().
    readiness: dict[str, Callable[[], str | None]] = field(default_factory=dict)

    @property
    def inbox(self) -> Inbox:
        """Push input: `put` it before answering the vendor, `register` the handler that
        turns it into events (gateway.inbox)."""
        return self.pipeline.inbox

    @property
    def chats(self) -> Chats:
        """Chat channels: `register_sender`, `register_account` (gateway.chats)."""
        return self.pipeline.chats


# A channel's CLI command: parsed arguments and the loaded settings -> exit status.
ChannelCommand = Callable[[argparse.Namespace, "Settings"], int]
# Adds a channel's commands to `leadgate`: gets the top-level subparsers, adds its own
# parser(s), and sets `channel_command` (a ChannelCommand) as each action's default.
CliHook = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]


@dataclass(frozen=True, slots=True)
class ChannelSpec:
    """One connector package, as the core knows it."""

    name: str  # the package, e.g. "telephony"
    channels: Mapping[Channel, ChannelDefaults]
    # Builds the connector, or None when its channel is not configured.
    build: Callable[[ConnectorContext], Connector | None]
    section: str | None = None  # its config section, e.g. "telephony"
    settings: type[BaseModel] | None = None  # that section's model (all fields defaulted)
    init_snippet: str = ""  # its commented part of `leadgate init`, starting with a table
    cli: CliHook | None = None  # its `leadgate <name> ...` commands, if any

    def __post_init__(self) -> None:
        if (self.section is None) != (self.settings is None):
            raise RegistryError(f"spec {self.name!r}: give both section and settings, or neither")


# --- loading the specs ---------------------------------------------------------------------


def load_specs(entry_points: Iterable[importlib.metadata.EntryPoint]) -> tuple[ChannelSpec, ...]:
    """The specs the entry points name, checked: each channel, section and name once."""
    # leadgate's own registry first, then any plugin package's, in a stable order.
    ordered = sorted(entry_points, key=lambda ep: (ep.name != "leadgate", ep.name))
    if not ordered:
        raise RegistryError(
            f"no channel registry found (entry point group {ENTRY_POINT_GROUP!r}): "
            "is leadgate installed? pip install -e ."
        )
    found: list[ChannelSpec] = []
    for ep in ordered:
        loaded = ep.load()
        if not isinstance(loaded, Sequence) or not all(isinstance(s, ChannelSpec) for s in loaded):
            raise RegistryError(f"entry point {ep.value!r} is not a list of ChannelSpec")
        found.extend(loaded)
    _check(found)
    return tuple(found)


def _check(found: Sequence[ChannelSpec]) -> None:
    names: set[str] = set()
    sections: set[str] = set()
    owner: dict[Channel, str] = {}
    for spec in found:
        if spec.name in names:
            raise RegistryError(f"two channel specs are named {spec.name!r}")
        names.add(spec.name)
        if spec.section is not None:
            if spec.section in sections:
                raise RegistryError(f"two channel specs use the config section [{spec.section}]")
            sections.add(spec.section)
        for channel in spec.channels:
            if channel in owner:
                raise RegistryError(
                    f"channel {channel.value!r} is declared by both {owner[channel]!r} "
                    f"and {spec.name!r}"
                )
            owner[channel] = spec.name


@functools.cache
def specs() -> tuple[ChannelSpec, ...]:
    """Every registered spec, loaded once per process."""
    return load_specs(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))


# --- what the core looks up per channel ----------------------------------------------------


@functools.cache
def channel_defaults() -> Mapping[Channel, ChannelDefaults]:
    return {ch: d for spec in specs() for ch, d in spec.channels.items()}


def default_sources() -> dict[Channel, str]:
    """Bitrix24 SOURCE_ID by channel, before [sources] overrides."""
    return {ch: d.source_id for ch, d in channel_defaults().items()}


def default_titles() -> dict[Channel, str]:
    """Lead TITLE templates by channel, before [delivery.bitrix24.titles] overrides."""
    return {ch: d.title for ch, d in channel_defaults().items()}


def label(channel: Channel) -> str:
    """The channel as a seller reads it («Форма на сайте»)."""
    found = channel_defaults().get(channel)
    return found.label if found is not None else channel.value


def carries_interest(channel: Channel) -> bool:
    found = channel_defaults().get(channel)
    return found is not None and found.carries_interest
