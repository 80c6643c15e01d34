"""Never a 500: recorded webhooks mutated at random (seeded), correctly signed, so every one
reaches the parsers. Each answer must be 200 or a 400 with a JSON error, and what was stored
must still be well-formed."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import pytest
from conftest import make_settings
from store_view import all_leads, read
from test_telephony_support import (
    FIXTURES,
    count,
    load,
    mango_request,
    rows,
    sellers,
    send,
    telephony_config,
    zadarma_request,
)

from gateway.web import create_app

E164 = re.compile(r"^\+[1-9]\d{6,14}$")
ODD_TEXT = [
    "",
    " ",
    "0",
    "-5",
    "x" * 300,
    "2025-13-45 99:99:99",
    "1999-12-31 23:59:59",
    "0001-01-01 00:00:00",
    "9999-12-31 23:59:59",
    "anonymous",
    "+",
    "٣٣٣",
    "\u0000",
    "\U0001f4de",
    "9" * 40,
    "answered",
    "NOTIFY_END",
]
ODD_VALUES: list[Any] = [
    *ODD_TEXT,
    None,
    True,
    0,
    -1,
    2**70,
    1.5e300,
    [],
    ["a", 1],
    {},
    {"number": 5},
]


def mutate_text(rng: random.Random, form: dict[str, str]) -> dict[str, str]:
    out = dict(form)
    for key in rng.sample(sorted(out), rng.randint(1, 3)):
        if key == "event" and rng.random() < 0.7:
            continue
        if rng.random() < 0.3:
            del out[key]
        else:
            out[key] = rng.choice(ODD_TEXT)
    return out


def mutate_value(rng: random.Random, data: Any, depth: int = 0) -> Any:
    if isinstance(data, dict) and data and depth < 3:
        out = dict(data)
        for key in rng.sample(sorted(out), rng.randint(1, min(3, len(out)))):
            roll = rng.random()
            if roll < 0.25:
                del out[key]
            elif roll < 0.5 and isinstance(out[key], dict):
                out[key] = mutate_value(rng, out[key], depth + 1)
            else:
                out[key] = rng.choice(ODD_VALUES)
        return out
    return rng.choice(ODD_VALUES)


@pytest.mark.parametrize("seed", range(3))
async def test_mutated_webhooks_never_fail(aiohttp_client: Any, tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    settings = make_settings(tmp_path, telephony=telephony_config(), sellers=sellers())
    client = await aiohttp_client(create_app(settings))
    requests: list[tuple[str, dict[str, Any]]] = []
    for path in sorted(FIXTURES.glob("*.json")):
        fixture = load(path.stem)
        for req in fixture["requests"]:
            for _ in range(6):
                if fixture["provider"] == "zadarma":
                    form = mutate_text(rng, req["form"])
                    if form.get("event") not in (None, ""):
                        requests.append(("zadarma", zadarma_request(form)))
                elif fixture["provider"] == "mango":
                    data = mutate_value(rng, json.loads(req["form"]["json"]))
                    requests.append(("mango", mango_request(req["path"], data)))
                elif "json" in req:
                    requests.append(("cti", {"json": mutate_value(rng, req["json"])}))
                else:
                    pairs = [
                        (k, rng.choice(ODD_TEXT) if rng.random() < 0.4 else v)
                        for k, v in req["form"]
                        if rng.random() < 0.9
                    ]
                    requests.append(("cti", {"form": pairs}))
    rng.shuffle(requests)
    statuses: dict[int, int] = {}
    for provider, req in requests:
        status, body = await send(client, provider, req)
        statuses[status] = statuses.get(status, 0) + 1
        assert status in (200, 400), (provider, req, status, body)
        if status == 400:
            assert isinstance(body, dict) and isinstance(body["error"], str)
    assert statuses.get(200, 0) > 50 and statuses.get(400, 0) > 50, statuses

    db = tmp_path / "leadgate.db"
    for row in await rows(db):
        assert row.meta["kind"] in ("call", "call_result", "call_recording")
    conn_leads = await count(db, "leads")
    assert conn_leads == sum(1 for r in await rows(db) if r.outcome == "created")
    for lead in await read(db, all_leads):
        assert all(E164.match(p) for p in lead.contact.phones)
