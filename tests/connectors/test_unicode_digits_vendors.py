"""Ids and times spelt in digits that are not ASCII, in VK and Meta payloads (finding F06).

"²".isdigit() is true and int("²") raises: such a field used to raise ValueError inside
the inbox worker, so an authentic event was retried with backoff until it went dead as
"gave up after N attempts" instead of being named unreadable at once (VK), or a whole
Meta body was never read (Meta). Now the field is simply not a number."""

from __future__ import annotations

from meta_support import PAGE_ID, as_meta_sends, envelope, text_item
from vk_support import GROUP, MakeClient, community, event, make_client, send, standin

from connectors.meta.webhook import parse
from gateway.inbox import InboxState
from gateway.keys import STORE

__all__ = ["make_client", "standin"]


async def test_vk_author_id_in_superscript_digits_is_unreadable_at_once(
    make_client: MakeClient,
) -> None:
    client = await make_client(community(wall_replies="lead"))
    for n, odd in enumerate(("¹²³", "--5", "６１２４４４３１９")):
        body = event("wall_reply_new.schema-built.json", event_id=f"odd-{n}")
        body["object"]["from_id"] = odd
        assert await send(client, body) == (200, "ok")
    dead = await client.app[STORE].list_inbox(InboxState.DEAD)
    assert [d.account for d in dead] == [str(GROUP)] * 3
    for entry in dead:
        assert entry.attempts == 1, entry.last_error  # not retried: it can never do better
        assert entry.last_error is not None and "from_id" in entry.last_error


def test_meta_times_in_odd_digits_are_not_times() -> None:
    for odd in ("¹⁴⁵⁸⁶⁹²⁷⁵²", "①", "１４５８６９２７５２"):
        item = text_item("m_odd", "Здравствуйте") | {"timestamp": odd}
        (message,) = parse(as_meta_sends(envelope("page", PAGE_ID, item))).messaging
        assert message.at is None  # the receiving time stands in, as for any junk time
