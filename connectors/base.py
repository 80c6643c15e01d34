"""The one small contract every channel connector follows.

A connector turns vendor input into LeadEvents with a pure parse function (testable
without HTTP), verifies its sender, and hands events to `ctx.pipeline.accept`. It never
touches storage, calendars or sellers itself. Webhook channels declare routes; pollers
(IMAP) declare a long-running `run()` task.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from aiohttp import web

from gateway.config import Settings
from gateway.coordination import Coordination
from gateway.http import Network
from gateway.metrics import Metrics
from gateway.pipeline import Pipeline


@dataclass(frozen=True, slots=True)
class ConnectorContext:
    settings: Settings
    pipeline: Pipeline
    metrics: Metrics
    coordination: Coordination
    trusted_proxies: Sequence[Network] = field(default_factory=list)
    # Readiness checks a connector registers (name -> problem in words, or None); the app
    # adds them to /readyz. For pollers, whose health no request would reveal.
    readiness: dict[str, Callable[[], str | None]] = field(default_factory=dict)


class Connector(Protocol):
    name: str

    def routes(self) -> Sequence[web.AbstractRouteDef]:
        """HTTP routes, mounted as given (paths start with /v1/)."""

    def tasks(self) -> Sequence[Callable[[], Awaitable[None]]]:
        """Long-running coroutines (pollers) started with the app, cancelled at shutdown."""


ConnectorFactory = Callable[[ConnectorContext], Connector | None]
"""Builds a connector from settings, or None when its channel is not configured."""
