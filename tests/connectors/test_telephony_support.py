"""Shared helpers for the telephony tests: recorded fixtures, signing, posting, reading back.

The signing here is written from the providers' documentation, independently of
connectors/telephony, so a test that passes proves the connector agrees with the docs.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from aiohttp import FormData
from aiohttp.test_utils import TestClient
from store_view import all_events, all_leads, all_outbox, all_quarantine, read

from connectors.telephony.connector import TelephonyConnector
from gateway.keys import CONNECTORS
from gateway.models import LeadStatus
from gateway.store.base import LeadQuery, Store

FIXTURES = Path(__file__).parent / "fixtures" / "telephony"
ZADARMA_SECRET = "fixture-zadarma-api-secret-7c1e"
MANGO_KEY = "fixture0mango0vpbx0api0key0a1b2c"
MANGO_SALT = "fixture0mango0salt0d3e4f5"
CTI_TOKEN = "fixture-cti-token-5d2a9e71b04c"
AFTER_HOURS_FILE = "5f2c1b8e9a0d4c3b"

Client = TestClient[Any, Any]

# Zadarma's documented signature strings, per event.
_ZD_SIGNED = {
    "NOTIFY_START": ("caller_id", "called_did", "call_start"),
    "NOTIFY_INTERNAL": ("caller_id", "called_did", "call_start"),
    "NOTIFY_END": ("caller_id", "called_did", "call_start"),
    "NOTIFY_IVR": ("caller_id", "called_did", "call_start"),
    "NOTIFY_ANSWER": ("caller_id", "destination", "call_start"),
    "NOTIFY_OUT_START": ("internal", "destination", "call_start"),
    "NOTIFY_OUT_END": ("internal", "destination", "call_start"),
    "NOTIFY_RECORD": ("pbx_call_id", "call_id_with_rec"),
}


def zadarma_signature(form: dict[str, str], secret: str = ZADARMA_SECRET) -> str:
    text = "".join(form.get(k, "") for k in _ZD_SIGNED.get(form["event"], ()))
    hexdigest = hmac.new(secret.encode(), text.encode(), hashlib.sha1).hexdigest()
    return base64.b64encode(hexdigest.encode()).decode()


def zadarma_request(form: dict[str, str], secret: str = ZADARMA_SECRET) -> dict[str, Any]:
    return {"form": form, "headers": {"Signature": zadarma_signature(form, secret)}}


def mango_request(
    path: str, data: dict[str, Any], key: str = MANGO_KEY, salt: str = MANGO_SALT
) -> dict[str, Any]:
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    sign = hashlib.sha256((key + text + salt).encode()).hexdigest()
    return {"path": path, "form": {"vpbx_api_key": key, "sign": sign, "json": text}}


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))
    return data


def telephony_config(**zadarma: Any) -> dict[str, Any]:
    return {
        # The recorded calls are from 2025: no freshness window here. It has its own tests
        # (test_telephony_replay.py).
        "zadarma": {"api_secret": ZADARMA_SECRET, "max_age_hours": 0, **zadarma},
        "mango": {"api_key": MANGO_KEY, "api_salt": MANGO_SALT},
        "cti": {"token": CTI_TOKEN},
    }


def sellers() -> list[dict[str, Any]]:
    return [
        {"id": "anna", "name": "Анна", "crm_user_id": 1, "extension": "101"},
        {"id": "boris", "name": "Борис", "crm_user_id": 2, "extension": "102"},
    ]


def connector(client: Client) -> TelephonyConnector:
    for c in client.app[CONNECTORS]:
        if isinstance(c, TelephonyConnector):
            return c
    raise AssertionError("telephony connector not mounted")


def set_clock(client: Client, at: Callable[[], datetime]) -> None:
    connector(client).clock = at


async def send(
    client: Client, provider: str, req: dict[str, Any], *, token: str = CTI_TOKEN
) -> tuple[int, Any]:
    """Post one recorded request the way the provider does; (status, parsed body)."""
    if provider == "zadarma":
        resp = await client.post(
            "/v1/telephony/zadarma", data=req["form"], headers=req.get("headers", {})
        )
    elif provider == "mango":
        resp = await client.post(f"/v1/telephony/mango/{req['path']}", data=req["form"])
    elif "json" in req:
        resp = await client.post(f"/v1/telephony/cti/{token}", json=req["json"])
    else:
        form = FormData()
        for key, value in req["form"]:
            form.add_field(key, value)
        resp = await client.post(f"/v1/telephony/cti/{token}", data=form)
    raw = await resp.read()
    body: Any = raw.decode()
    if resp.content_type == "application/json":
        body = orjson.loads(raw)
    return resp.status, body


@dataclass(frozen=True)
class Row:
    external_id: str
    lead_id: str | None
    outcome: str
    meta: dict[str, Any]
    attachments: list[dict[str, Any]]
    occurred_at: str


async def rows(db_path: Path) -> list[Row]:
    """Every stored event, in the order stored (through the Store protocol)."""
    out = []
    for stored in await read(db_path, all_events):
        record = stored.record.model_dump(mode="json")
        out.append(
            Row(
                stored.record.external_id,
                stored.lead_id,
                stored.record.outcome.value,
                record["meta"],
                record["attachments"],
                record["occurred_at"],
            )
        )
    return out


async def count(db_path: Path, what: str) -> int:
    """How many of `what` the store holds: leads (or leads:NEW, leads:JUNK), events,
    outbox, quarantine (or quarantine:CHANNEL), checkpoints."""
    kind, _, detail = what.partition(":")

    async def counted(store: Store) -> int:
        if kind == "leads":
            status = LeadStatus(detail) if detail else None
            return len(await all_leads(store, LeadQuery(status=status, limit=500)))
        if kind == "events":
            return len(await all_events(store))
        if kind == "outbox":
            return len(await all_outbox(store))
        if kind == "quarantine":
            return len(await all_quarantine(store, detail or None))
        if kind == "checkpoints":
            return len(await store.list_checkpoints())
        raise ValueError(what)

    return await read(db_path, counted)
