"""A poison update (one Telegram sends that fails validation or handling) never blocks a
bot (finding F07).

Long polling: aiogram validates the whole getUpdates answer at once, so one update it
cannot read used to fail the call forever at the same offset ("network" errors, nothing
after it ever arrived). Now each update is read on its own: a poison one is kept in the
quarantine with its raw JSON, counted (leadgate_telegram_poison_updates_total) and logged,
and the offset moves past it in the same write. Webhook mode: such an update is
acknowledged (200, never a 500) and ends in the dead-letter queue with the reason."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from telegram_standin import BotApiStandin
from test_conversations import eventually
from test_telegram_bot import TOKEN, Gateway, gateway_factory, standin, update

from gateway.inbox import InboxState

__all__ = ["gateway_factory", "standin"]

POLLING = {"mode": "polling", "secret_token": None, "poll_timeout_seconds": 1}

# Each is an update Telegram could send that aiogram's Update model refuses.
POISON: list[dict[str, Any]] = [
    {"update_id": 602, "message": {"message_id": "not a number", "date": 0}},
    {"update_id": 603, "message": "a string where an object belongs"},
    {"update_id": 604, "edited_message": {"chat": {"id": 1}, "date": "yesterday"}},
]


async def test_polling_quarantines_a_poison_update_and_moves_on(
    gateway_factory: Callable[..., Awaitable[Gateway]], standin: BotApiStandin
) -> None:
    standin.push(TOKEN, update("первое", update_id=601, message_id=1))
    for poison in POISON:
        standin.push(TOKEN, poison)
    standin.push(TOKEN, update("второе", update_id=605, message_id=2))
    gw = await gateway_factory(POLLING)
    lead = await gw.one_lead()

    async def both() -> dict[str, Any] | None:
        got = await gw.lead(lead["id"])
        return got if len(got["messages"]) == 2 else None

    got = await eventually(both)
    assert [m["text"] for m in got["messages"]] == ["первое", "второе"]
    assert await gw.store.get_checkpoint("telegram:shop:offset") == "606"
    kept = await gw.store.list_quarantine("telegram")
    assert [orjson.loads(q.body)["update_id"] for q in kept] == [602, 603, 604]
    assert all(q.reason.startswith("shop: not a Telegram update") for q in kept)
    metrics = await gw.metrics()
    assert 'leadgate_telegram_poison_updates_total{bot="shop",stage="getupdates"} 3.0' in metrics
    assert 'reason="network"' not in metrics  # it never looked like a failing network

    async def confirmed() -> bool:
        return not standin.bots[TOKEN].updates

    await eventually(confirmed)


async def test_polling_a_batch_of_nothing_but_poison_still_moves_on(
    gateway_factory: Callable[..., Awaitable[Gateway]], standin: BotApiStandin
) -> None:
    standin.push(TOKEN, POISON[0])
    gw = await gateway_factory(POLLING)

    async def moved() -> str | None:
        return await gw.store.get_checkpoint("telegram:shop:offset")

    assert await eventually(moved) == "603"
    assert len(await gw.store.list_quarantine("telegram")) == 1


async def test_webhook_acknowledges_a_poison_update_and_dead_letters_it(
    gateway_factory: Callable[..., Awaitable[Gateway]],
) -> None:
    gw = await gateway_factory()
    for poison in POISON:
        resp = await gw.post(poison)
        assert resp.status == 200, await resp.text()
    assert (await gw.post(update("после яда", update_id=700))).status == 200
    lead = await gw.one_lead()
    assert lead["messages"][0]["text"] == "после яда"

    async def dead() -> list[Any] | None:
        found = await gw.store.list_inbox(InboxState.DEAD)
        return found if len(found) == len(POISON) else None

    for entry in await eventually(dead):
        assert entry.attempts == 1, entry.last_error  # not retried: it cannot do better
        assert entry.last_error is not None and entry.last_error.startswith("unprocessable")
    metrics = await gw.metrics()
    assert 'leadgate_telegram_poison_updates_total{bot="shop",stage="handling"} 3.0' in metrics
