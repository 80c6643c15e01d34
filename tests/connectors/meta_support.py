"""Shared pieces of the Meta tests: the fixtures, Meta's signing, an app wired to the
Graph API stand-in.

The signing here is written from Meta's documentation ("sha256=" + lowercase hex of
HMAC-SHA256 over the payload as sent), independently of connectors/meta.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from conftest import make_settings
from meta_standin import MetaGraphStandIn
from store_view import all_leads

from gateway.inbox import InboxStats
from gateway.keys import METRICS, STORE
from gateway.models import Lead
from gateway.web import create_app

FIXTURES = Path(__file__).parent / "fixtures" / "meta"
APP_SECRET = "meta-app-secret-for-tests"  # the key the Cyrillic fixture was signed with
VERIFY_TOKEN = "verify-token-for-tests-6f1c"
PAGE_ID = "111899832631525"  # the Page of the botman fixtures
PAGE_TOKEN = "EAAPageTokenForTests0001"
LEAD_PAGE_ID = "153125381133"  # entry id of Meta's Lead Ads sample
LEAD_PAGE_TOKEN = "EAALeadPageTokenForTests02"
IG_ID = "17841400000000001"
IG_TOKEN = "IGQVJInstagramTokenForTests03"
PSID = "1433960459967306"  # the sender of the botman fixtures

Client = TestClient[Any, Any]
MakeClient = Callable[..., Awaitable[Client]]


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def fixture(name: str) -> Any:
    return json.loads(fixture_bytes(name))


def fill(name: str, values: dict[str, Any]) -> Any:
    """A doc example published with unquoted placeholders (<AD_ID>), filled in: each
    placeholder is replaced by the JSON of its value (a quoted placeholder by the value's
    text). Placeholders not named are an error, so nothing is silently left as written."""
    text = (FIXTURES / name).read_text(encoding="utf-8")

    def quoted(m: re.Match[str]) -> str:
        return json.dumps(str(values[m.group(1)]))

    def bare(m: re.Match[str]) -> str:
        return json.dumps(values[m.group(1)])

    text = re.sub(r'"<([A-Z0-9_.]+)>"', quoted, text)
    text = re.sub(r"<([A-Z0-9_.]+)>", bare, text)
    text = re.sub(r",(\s*[}\]])", r"\1", text)  # Meta's trailing commas
    return json.loads(text)


def envelope(obj: str, account: str, *items: dict[str, Any], time: int = 1458692752478) -> Any:
    """A webhook body around messaging items (Meta's doc examples show the items alone)."""
    return {"object": obj, "entry": [{"id": account, "time": time, "messaging": list(items)}]}


def sign(body: bytes, secret: str = APP_SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def as_meta_sends(data: Any) -> bytes:
    """JSON as Meta sends it: non-ASCII escaped as \\uXXXX."""
    return json.dumps(data, ensure_ascii=True, separators=(",", ":")).encode()


async def post(client: Client, body: bytes, signature: str | None = "sign") -> Any:
    headers = {"Content-Type": "application/json"}
    if signature == "sign":
        headers["X-Hub-Signature-256"] = sign(body)
    elif signature is not None:
        headers["X-Hub-Signature-256"] = signature
    return await client.post("/v1/meta", data=body, headers=headers)


def meta_config(graph: str, **overrides: Any) -> dict[str, Any]:
    section: dict[str, Any] = {
        "app_secret": APP_SECRET,
        "verify_token": VERIFY_TOKEN,
        "graph_base": graph,
        "instagram_graph_base": graph,
        "graph_timeout_seconds": 5,
        "pages": [
            {"id": PAGE_ID, "token": PAGE_TOKEN},
            {"id": LEAD_PAGE_ID, "token": LEAD_PAGE_TOKEN},
        ],
        "instagram": [{"id": IG_ID, "token": IG_TOKEN, "api": "instagram_login"}],
    }
    section.update(overrides)
    return section


@pytest.fixture
async def graph() -> AsyncIterator[MetaGraphStandIn]:
    server = MetaGraphStandIn()
    await server.start()
    server.account(PAGE_ID, PAGE_TOKEN)
    server.account(LEAD_PAGE_ID, LEAD_PAGE_TOKEN)
    server.account(IG_ID, IG_TOKEN, instagram_login=True)
    server.app_secret = APP_SECRET  # "Require App Secret": every Page call proves itself
    yield server
    await server.stop()


# Retries in milliseconds instead of seconds (the inbox's and the message worker's).
FAST_INBOX = {"backoff_initial_seconds": 0.02, "backoff_max_seconds": 0.05, "poll_seconds": 0.05}
FAST_SENDING = {
    "backoff_initial_seconds": 0.02,
    "backoff_max_seconds": 0.05,
    "poll_seconds": 0.05,
    "halt_probe_seconds": 0.3,
}


@pytest.fixture
def make_client(aiohttp_client: Any, tmp_path: Path, graph: MetaGraphStandIn) -> MakeClient:
    async def make(**overrides: Any) -> Client:
        meta = meta_config(graph.url, **overrides.pop("meta", {}))
        overrides["inbox"] = {**FAST_INBOX, **overrides.get("inbox", {})}
        overrides["conversations"] = {**FAST_SENDING, **overrides.get("conversations", {})}
        settings = make_settings(tmp_path, meta=meta, **overrides)
        client: Client = await aiohttp_client(create_app(settings))
        return client

    return make


async def eventually(
    check: Callable[[], Awaitable[Any]], within: float = 15.0, what: str = "condition"
) -> Any:
    """Wait for `check` to return something truthy (a condition, never a fixed sleep)."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        found = await check()
        if found:
            return found
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what} not met in {within} s")
        await asyncio.sleep(0.02)


async def drained(client: Client) -> dict[str, InboxStats]:
    """The inbox once nothing in it waits to be handled (dead entries may remain)."""
    seen: dict[str, InboxStats] = {}

    async def idle() -> bool:
        seen.clear()
        seen.update(await client.app[STORE].inbox_stats())
        return not any(s.pending for s in seen.values())

    await eventually(idle, what="inbox drained")
    return seen


def metric(client: Client, name: str, **labels: str) -> float:
    value: float | None = client.app[METRICS].registry.get_sample_value(name, labels)
    return value or 0.0


async def leads(client: Client) -> list[Lead]:
    return await all_leads(client.app[STORE])


def text_item(
    mid: str, text: str, sender: str = PSID, *, at_ms: int = 1772445600000
) -> dict[str, Any]:
    """A Messenger message item in the shape of Meta's "Text Message" example."""
    return {
        "sender": {"id": sender},
        "recipient": {"id": PAGE_ID},
        "timestamp": at_ms,
        "message": {"mid": mid, "text": text},
    }


def text_body(mid: str, text: str, sender: str = PSID, *, at_ms: int = 1772445600000) -> bytes:
    return as_meta_sends(envelope("page", PAGE_ID, text_item(mid, text, sender, at_ms=at_ms)))


def sample_lead(standin: MetaGraphStandIn, lead_id: str, **answers: str) -> None:
    """Meta's sample lead under `lead_id`, its answers changed or added as given (each
    lead its own email: the same address twice is one person, one lead)."""
    lead = fixture("lead_retrieve_response.meta-docs.json")
    lead["ad_id"], lead["form_id"] = "12312312312", "12312312312"
    answers.setdefault("email", f"joe.{lead_id}@example.com")
    fields = {f["name"]: f["values"] for f in lead["field_data"]}
    fields.update({k: [v] for k, v in answers.items()})
    lead["field_data"] = [{"name": k, "values": v} for k, v in fields.items()]
    standin.add_lead(LEAD_PAGE_ID, lead, lead_id=lead_id)
