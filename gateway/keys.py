"""Typed application keys (aiohttp AppKey), so handlers get typed objects, not dict lookups."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.broadcast import Broadcast
from gateway.channels import Connector
from gateway.config import Settings
from gateway.coordination import Coordination
from gateway.metrics import Metrics
from gateway.pipeline import Pipeline
from gateway.store.base import Store
from gateway.supervisor import Supervisor

SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", Metrics)
STORE: web.AppKey[Store] = web.AppKey("store")
# What replicas agree on beside the store (leases, shared limits); see gateway.coordination.
COORDINATION: web.AppKey[Coordination] = web.AppKey("coordination")
# Fan-out to every replica's live connections (gateway.broadcast).
BROADCAST: web.AppKey[Broadcast] = web.AppKey("broadcast")
PIPELINE = web.AppKey("pipeline", Pipeline)
CONNECTORS: web.AppKey[list[Connector]] = web.AppKey("connectors")
SUPERVISOR = web.AppKey("supervisor", Supervisor)
# Extra readiness checks connectors and workers register: name -> problem or None.
READINESS: web.AppKey[dict[str, Any]] = web.AppKey("readiness")
