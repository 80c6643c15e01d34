"""Never a 500: the real-format VK events mutated at random (seeded), with the right secret
and group, so every one reaches the parsers. Each answer is `ok`, the confirmation string
or a 4xx JSON error; whatever was stored or quarantined is well-formed."""

from __future__ import annotations

import random
from typing import Any

from vk_standin import VkStandIn
from vk_support import (
    CONFIRMATION,
    FIXTURES,
    GROUP,
    SECRET,
    MakeClient,
    event,
    make_client,
    standin,
    vk_events,
)

from gateway.keys import STORE

__all__ = ["make_client", "standin"]

ODD: list[Any] = [
    None,
    True,
    0,
    -1,
    2**70,
    1.5e300,
    "",
    " ",
    "٣٣٣",
    "\u0000",
    "x" * 3000,
    "\U0001f4de",
    [],
    ["a", 1],
    {},
    {"value": 5},
    [{"key": "k"}],
]
KEEP = {"secret", "group_id"}  # mutated, these only test the doorman, not the parsers


def mutate(rng: random.Random, data: Any, depth: int = 0) -> Any:
    if isinstance(data, dict) and data and depth < 4:
        out = dict(data)
        for key in rng.sample(sorted(out), rng.randint(1, min(3, len(out)))):
            if depth == 0 and key in KEEP:
                continue
            roll = rng.random()
            if roll < 0.2:
                del out[key]
            elif roll < 0.6:
                out[key] = mutate(rng, out[key], depth + 1)
            else:
                out[key] = rng.choice(ODD)
        return out
    if isinstance(data, list) and data and depth < 4:
        out_list = list(data)
        i = rng.randrange(len(out_list))
        out_list[i] = mutate(rng, out_list[i], depth + 1)
        return out_list
    return rng.choice(ODD)


SOURCES = sorted(
    p.name
    for p in FIXTURES.glob("*.json")
    if p.name.startswith(("lead_forms_new", "wall_reply", "market_order", "message_", "group_"))
    or p.name.startswith("callback_confirmation")
)


async def test_mutated_events_never_break_the_gateway(
    make_client: MakeClient, standin: VkStandIn
) -> None:
    client = await make_client()
    rng = random.Random(20261130)
    answers: dict[int, int] = {}
    for round_ in range(400):
        base = event(rng.choice(SOURCES), group_id=GROUP, secret=SECRET)
        body = mutate(rng, base)
        body["event_id"] = f"fuzz{round_:036d}"
        resp = await client.post("/v1/vk", json=body)
        answers[resp.status] = answers.get(resp.status, 0) + 1
        text = await resp.text()
        if resp.status == 200:
            assert text in ("ok", CONFIRMATION), text
        else:
            assert 400 <= resp.status < 500, (resp.status, text, body)
            assert resp.content_type == "application/json"
    assert answers.get(200, 0) > 300, answers
    for stored in await vk_events(client):
        assert stored.record.external_id.startswith(f"{GROUP}:")
        assert stored.record.contact.handles == () or all(
            h.startswith("vk:") and h[3:].isdigit() for h in stored.record.contact.handles
        )
    for kept in await client.app[STORE].list_quarantine("vk", limit=1000):
        assert SECRET.encode() not in kept.body
