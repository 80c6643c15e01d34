"""Replaying the vendor corpus's calls (tests/connectors/fixtures/vendor/) into a gateway,
for the full calls docs/channels/telephony.md shows and tests/test_doc_examples.py re-runs.

A call is named in the docs by a marker `<!-- replay: TOKEN TOKEN … -->`, each token a
fixture `provider/file` (Zadarma: one request per file) or `provider/file#i` / `#i-j`
(requests i..j of a file holding a sequence).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aiohttp import FormData
from aiohttp.test_utils import TestClient

VENDOR = Path(__file__).parent / "connectors" / "fixtures" / "vendor"
ZADARMA_SECRET = "test-secret"  # the corpus is signed with it (SOURCES.md)
MANGO_KEY = "5f4dcc3b5aa765d61d8327deb882cf99"
MANGO_SALT = "fixture-mango-salt"
CTI_TOKEN = "docs-replay-cti-token-4b7e21"

TELEPHONY = {
    # The corpus was recorded in 2025: replayed today it is older than any freshness window.
    "zadarma": {"api_secret": ZADARMA_SECRET, "max_age_hours": 0},
    "mango": {"api_key": MANGO_KEY, "api_salt": MANGO_SALT},
    "cti": {"token": CTI_TOKEN},
}
SELLERS = [
    {"id": "ivanova", "name": "Анна Иванова", "extension": "100"},
    {"id": "petrov", "name": "Пётр Петров", "extension": "123"},
]


def requests(token: str) -> tuple[str, list[dict[str, Any]]]:
    name, _, part = token.partition("#")
    provider = name.split("/", 1)[0]
    data = json.loads((VENDOR / f"{name}.json").read_text(encoding="utf-8"))
    found = data.get("requests", [data])
    if part:
        first, _, last = part.partition("-")
        found = found[int(first) : int(last or first) + 1]
    return provider, found


async def post(client: TestClient[Any, Any], provider: str, req: dict[str, Any]) -> str:
    """One recorded request, posted as its vendor posts it; the answer's status and body."""
    if provider == "zadarma":
        resp = await client.post(
            "/v1/telephony/zadarma", data=req["form"], headers=req.get("headers", {})
        )
    elif provider == "mango":
        resp = await client.post(f"/v1/telephony/mango/{req['path']}", data=req["form"])
    elif "json" in req:
        resp = await client.post(f"/v1/telephony/cti/{CTI_TOKEN}", json=req["json"])
    else:
        form = FormData()
        for key, value in req["form"]:
            form.add_field(key, value)
        resp = await client.post(f"/v1/telephony/cti/{CTI_TOKEN}", data=form)
    return f"{resp.status} {await resp.text()}".strip()


async def replay(client: TestClient[Any, Any], marker: str) -> list[str]:
    answers = []
    for token in marker.split():
        provider, reqs = requests(token)
        for req in reqs:
            answers.append(await post(client, provider, req))
    return answers
