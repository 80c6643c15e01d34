"""Store contract, the record path: create, replay, merge, keep, junk, replies, the dedup
window, concurrency, checkpoints, quarantine and the reads. Store protocol only."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from gateway.models import Channel, LeadStatus, Outcome
from gateway.store.base import LeadQuery, PersonMatch, Quarantined, Store, StoreUnavailable

from .conftest import Harness
from .contract import T0, make_event, record, rr

PHONE = "+79161234567"


async def test_create_stores_the_lead_with_its_event(store: Store) -> None:
    event = make_event("c1", phone=PHONE)
    recorded = await record(store, event)
    receipt = recorded.receipt
    assert receipt.outcome is Outcome.CREATED
    assert receipt.event_id == event.id
    assert receipt.lead_id is not None
    assert recorded.assignment is None  # no request, nobody resolved
    lead = await store.get_lead(receipt.lead_id)
    assert lead is not None
    assert lead.status is LeadStatus.NEW
    assert lead.contact.phones == (PHONE,)
    assert lead.assigned_to is None
    assert [(e.id, e.outcome, e.external_id) for e in lead.events] == [
        (event.id, Outcome.CREATED, "c1")
    ]
    assert lead.events[0].text == "обращение c1"


async def test_replay_by_channel_and_external_id(store: Store) -> None:
    first = (await record(store, make_event("order-42", phone=PHONE))).receipt
    again = await record(store, make_event("order-42", phone=PHONE, at=T0 + timedelta(hours=1)))
    assert again.receipt.outcome is Outcome.REPLAYED
    assert (again.receipt.event_id, again.receipt.lead_id) == (first.event_id, first.lead_id)
    assert again.assignment is None
    # The same sender id on another channel is another event (of the same person: merged).
    other = (
        await record(store, make_event("order-42", phone=PHONE, channel=Channel.ORDERS))
    ).receipt
    assert other.outcome is Outcome.MERGED
    assert other.event_id != first.event_id
    lead = await store.get_lead(first.lead_id or "")
    assert lead is not None
    assert [e.id for e in lead.events] == [first.event_id, other.event_id]


async def test_replay_by_idempotency_key(store: Store) -> None:
    first = (await record(store, make_event("k-a", idempotency_key="retry-1"))).receipt
    # A client retrying with the same key but a new body (and so a new external id).
    again = (await record(store, make_event("k-b", idempotency_key="retry-1"))).receipt
    assert again.outcome is Outcome.REPLAYED
    assert again.event_id == first.event_id
    # Either name replays: the external id of the first, too.
    assert (await record(store, make_event("k-a"))).receipt.event_id == first.event_id


@pytest.mark.parametrize(
    ("first", "second", "kind"),
    [
        ({"phone": "+79161234567"}, {"phone": "8 (916) 123-45-67"}, "phone"),
        ({"email": "Maria.Ivanova@Mail.RU"}, {"email": "maria.ivanova@mail.ru"}, "email"),
        ({"handle": "vk:123"}, {"handle": "vk:123"}, "vk"),
        ({"handle": "tg:456"}, {"handle": "tg:456"}, "tg"),
    ],
)
async def test_merge_by_phone_email_and_handle(
    store: Store, first: dict[str, str], second: dict[str, str], kind: str
) -> None:
    a = (await record(store, make_event("m1", **first))).receipt  # type: ignore[arg-type]
    later = T0 + timedelta(days=2)
    b = (await record(store, make_event("m2", at=later, **second))).receipt  # type: ignore[arg-type]
    assert b.outcome is Outcome.MERGED
    assert b.lead_id == a.lead_id
    lead = await store.get_lead(a.lead_id or "")
    assert lead is not None
    assert [e.matched_on for e in lead.events] == [None, kind]
    assert lead.last_event_at == later
    # Another person stays apart.
    c = (await record(store, make_event("m3", phone="+79030000001"))).receipt
    assert c.outcome is Outcome.CREATED
    assert c.lead_id != a.lead_id


async def test_merge_learns_the_contact(store: Store) -> None:
    a = (await record(store, make_event("l1", phone=PHONE))).receipt
    await record(store, make_event("l2", phone=PHONE, email="ivan@example.ru"))
    lead = await store.get_lead(a.lead_id or "")
    assert lead is not None
    assert lead.contact.emails == ("ivan@example.ru",)
    # The new key finds the lead too.
    c = (await record(store, make_event("l3", email="IVAN@example.ru"))).receipt
    assert (c.outcome, c.lead_id) == (Outcome.MERGED, a.lead_id)


async def test_keep_stores_the_event_without_a_lead(store: Store) -> None:
    outgoing = make_event("call-out-1", phone=PHONE, channel=Channel.PHONE, creates_lead=False)
    kept = (await record(store, outgoing)).receipt
    assert (kept.outcome, kept.lead_id) == (Outcome.KEPT, None)
    # Stored: the same id again is a replay of it, still without a lead.
    again = (await record(store, outgoing)).receipt
    assert (again.outcome, again.event_id, again.lead_id) == (Outcome.REPLAYED, kept.event_id, None)
    assert await store.list_leads(LeadQuery()) == []
    # A kept contact makes no lead to join: the customer's own contact creates one.
    own = (await record(store, make_event("form-1", phone=PHONE))).receipt
    assert own.outcome is Outcome.CREATED
    # ... which our next outgoing call joins.
    call = make_event("call-out-2", phone=PHONE, channel=Channel.PHONE, creates_lead=False)
    joined = (await record(store, call)).receipt
    assert (joined.outcome, joined.lead_id) == (Outcome.MERGED, own.lead_id)


async def test_junk_never_joins_a_real_lead_nor_is_joined(store: Store) -> None:
    real = (await record(store, make_event("r1", phone=PHONE, at=T0))).receipt
    bot = await record(
        store, make_event("bot-1", phone=PHONE, at=T0 + timedelta(minutes=1)), junk=True
    )
    assert bot.receipt.outcome is Outcome.CREATED
    assert bot.receipt.lead_id != real.lead_id
    junk_lead = await store.get_lead(bot.receipt.lead_id or "")
    assert junk_lead is not None
    assert junk_lead.status is LeadStatus.JUNK
    # The real lead keeps its one event; the next real contact joins it, not the junk.
    again = (
        await record(store, make_event("r2", phone=PHONE, at=T0 + timedelta(minutes=2)))
    ).receipt
    assert (again.outcome, again.lead_id) == (Outcome.MERGED, real.lead_id)
    real_lead = await store.get_lead(real.lead_id or "")
    assert real_lead is not None
    assert [e.external_id for e in real_lead.events] == ["r1", "r2"]


async def test_a_closed_lead_is_not_joined_nor_an_owner(store: Store) -> None:
    """Only NEW leads are open; a JUNK lead is closed and owns nobody."""
    await record(store, make_event("j1", phone=PHONE), junk=True)
    seen: list[PersonMatch] = []
    r = (await record(store, make_event("j2", phone=PHONE), seen=seen)).receipt
    assert r.outcome is Outcome.CREATED
    assert set(seen) == {PersonMatch()}


async def test_a_reply_joins_by_replies_to_whatever_the_window(store: Store) -> None:
    mail = make_event("<m1@example.ru>", email="client@example.ru", channel=Channel.EMAIL)
    first = (await record(store, mail)).receipt
    # Months later, from another address, after the window: the reply still joins.
    late = T0 + timedelta(days=90)
    reply = make_event(
        "<m2@example.ru>",
        email="other@example.ru",
        channel=Channel.EMAIL,
        at=late,
        replies_to=("<unknown@x>", "<m1@example.ru>"),
    )
    seen: list[PersonMatch] = []
    joined = (await record(store, reply, since=late - timedelta(days=30), seen=seen)).receipt
    assert (joined.outcome, joined.lead_id) == (Outcome.MERGED, first.lead_id)
    assert {m.matched_on for m in seen} == {"reply"}
    lead = await store.get_lead(first.lead_id or "")
    assert lead is not None
    assert lead.events[-1].matched_on == "reply"


async def test_the_dedup_window_counts_from_the_last_event(store: Store) -> None:
    owner = rr("anna")
    old = (await record(store, make_event("w1", phone=PHONE, at=T0), assignment=owner)).receipt
    # Within the window of the last event: joined, and the window moves with it.
    step = T0 + timedelta(days=20)
    mid = (
        await record(store, make_event("w2", phone=PHONE, at=step), since=step - timedelta(days=30))
    ).receipt
    assert (mid.outcome, mid.lead_id) == (Outcome.MERGED, old.lead_id)
    step2 = step + timedelta(days=20)
    again = await record(
        store, make_event("w3", phone=PHONE, at=step2), since=step2 - timedelta(days=30)
    )
    assert again.receipt.lead_id == old.lead_id
    # After it: a new lead, and the planner hears who owned the person's last real lead.
    late = step2 + timedelta(days=31)
    seen: list[PersonMatch] = []
    new = await record(
        store, make_event("w4", phone=PHONE, at=late), since=late - timedelta(days=30), seen=seen
    )
    assert new.receipt.outcome is Outcome.CREATED
    assert new.receipt.lead_id != old.lead_id
    assert set(seen) == {PersonMatch(lead_id=None, matched_on=None, previous_owner="anna")}


async def test_previous_owner_is_the_seller_of_the_most_recent_real_lead(store: Store) -> None:
    await record(
        store, make_event("p1", phone=PHONE, at=T0 - timedelta(days=200)), assignment=rr("anna")
    )
    await record(
        store, make_event("p2", phone=PHONE, at=T0 - timedelta(days=100)), assignment=rr("boris")
    )
    await record(store, make_event("p3", phone=PHONE, at=T0 - timedelta(days=50)), junk=True)
    seen: list[PersonMatch] = []
    await record(store, make_event("p4", phone=PHONE), seen=seen)
    assert set(seen) == {PersonMatch(previous_owner="boris")}


async def test_concurrent_records_for_one_person_make_one_lead(store: Store) -> None:
    events = [
        make_event(f"same-{n}", phone=PHONE, at=T0 + timedelta(milliseconds=n)) for n in range(50)
    ]
    results = await asyncio.gather(
        *(record(store, e, assignment=rr("anna", "boris")) for e in events)
    )
    outcomes = [r.receipt.outcome for r in results]
    assert outcomes.count(Outcome.CREATED) == 1
    assert outcomes.count(Outcome.MERGED) == 49
    assert len({r.receipt.lead_id for r in results}) == 1
    leads = await store.list_leads(LeadQuery())
    assert len(leads) == 1
    lead = await store.get_lead(leads[0].id)
    assert lead is not None
    assert len(lead.events) == 50
    # One lead, so one assignment counted.
    assert sum((await store.assignment_counts(T0.date())).values()) == 1


async def test_concurrent_replays_of_one_external_id_make_one_event(store: Store) -> None:
    events = [make_event("dup-1", phone=PHONE, at=T0 + timedelta(seconds=n)) for n in range(30)]
    results = await asyncio.gather(*(record(store, e) for e in events))
    outcomes = [r.receipt.outcome for r in results]
    assert outcomes.count(Outcome.CREATED) == 1
    assert outcomes.count(Outcome.REPLAYED) == 29
    assert len({(r.receipt.event_id, r.receipt.lead_id) for r in results}) == 1
    lead = await store.get_lead(results[0].receipt.lead_id or "")
    assert lead is not None
    assert len(lead.events) == 1


async def test_checkpoints_alone_and_with_the_event(store: Store) -> None:
    assert await store.get_checkpoint("imap:INBOX") is None
    await store.save_checkpoint("imap:INBOX", "uid=1")
    await store.save_checkpoint("imap:INBOX", "uid=2")
    assert await store.get_checkpoint("imap:INBOX") == "uid=2"
    e = make_event("cp-1")
    await record(store, e, checkpoint=("imap:INBOX", "uid=3"))
    assert await store.get_checkpoint("imap:INBOX") == "uid=3"
    # A replay moves it too: the poller must not fetch that message again.
    await record(store, e, checkpoint=("imap:INBOX", "uid=4"))
    assert await store.get_checkpoint("imap:INBOX") == "uid=4"
    # Concurrent copies of one message: the one that replays the other still moves it.
    twin = make_event("cp-2")
    await asyncio.gather(
        record(store, twin, checkpoint=("imap:INBOX", "uid=5")),
        record(store, twin, checkpoint=("imap:INBOX", "uid=6")),
    )
    assert await store.get_checkpoint("imap:INBOX") in {"uid=5", "uid=6"}
    assert await store.get_checkpoint("imap:Other") is None


async def test_a_failed_write_keeps_nothing_and_moves_no_checkpoint(harness: Harness) -> None:
    store = harness.store
    await store.save_checkpoint("poller", "1")
    await harness.fail_writes_of("doomed")
    with pytest.raises(StoreUnavailable):
        await record(store, make_event("doomed", phone=PHONE), checkpoint=("poller", "2"))
    assert await store.get_checkpoint("poller") == "1"
    assert await store.list_leads(LeadQuery()) == []
    # Other writes go on; the failed one, retried after the fault, is new, not a replay.
    other = (await record(store, make_event("fine", phone="+79030000001"))).receipt
    assert other.outcome is Outcome.CREATED
    await harness.heal()
    retry = (
        await record(store, make_event("doomed", phone=PHONE), checkpoint=("poller", "2"))
    ).receipt
    assert retry.outcome is Outcome.CREATED
    assert await store.get_checkpoint("poller") == "2"


async def _quarantined(store: Store, limit: int = 100) -> list[Quarantined]:
    return [
        Quarantined(e.channel, e.reason, e.body, e.headers)
        for e in await store.list_quarantine(limit=limit)
    ]


async def test_quarantine_keeps_the_input_with_its_checkpoint(store: Store) -> None:
    assert await _quarantined(store) == []
    await store.quarantine(
        Quarantined("phone", "zadarma: bad json", b"\x00\xffraw", {"Signature": "abc"}),
        checkpoint=("imap:INBOX", "uid=7"),
    )
    await store.quarantine(Quarantined("email", "not accepted: ValueError", b"Subject: x\r\n"))
    assert await _quarantined(store) == [
        Quarantined("phone", "zadarma: bad json", b"\x00\xffraw", {"Signature": "abc"}),
        Quarantined("email", "not accepted: ValueError", b"Subject: x\r\n", {}),
    ]
    assert await _quarantined(store, limit=1) == [
        Quarantined("phone", "zadarma: bad json", b"\x00\xffraw", {"Signature": "abc"})
    ]
    assert await store.get_checkpoint("imap:INBOX") == "uid=7"
    # Quarantine makes no lead and no event.
    assert await store.list_leads(LeadQuery()) == []


async def test_get_lead_returns_events_in_order(store: Store) -> None:
    first = (await record(store, make_event("g0", phone=PHONE))).receipt
    ids = [first.event_id]
    for n in range(1, 25):
        r = (
            await record(store, make_event(f"g{n}", phone=PHONE, at=T0 + timedelta(seconds=n)))
        ).receipt
        assert r.lead_id == first.lead_id
        ids.append(r.event_id)
    lead = await store.get_lead(first.lead_id or "")
    assert lead is not None
    assert [e.id for e in lead.events] == ids
    assert [e.outcome for e in lead.events] == [Outcome.CREATED] + [Outcome.MERGED] * 24
    assert lead.last_event_at == T0 + timedelta(seconds=24)
    assert await store.get_lead("01NOSUCHLEAD0000000000000") is None


async def test_list_leads_paging_and_filters(store: Store) -> None:
    made: list[tuple[str, Channel, LeadStatus, str | None]] = []
    for n in range(12):
        channel = Channel.ORDERS if n % 3 == 0 else Channel.WEBFORM
        junk = n % 4 == 0
        seller = None if junk else ("anna" if n % 2 else "boris")
        e = make_event(f"l{n}", channel=channel, at=T0 + timedelta(hours=n), phone=f"+7903{n:07d}")
        r = await record(store, e, junk=junk, assignment=rr(seller) if seller else None)
        assert r.receipt.lead_id is not None
        status = LeadStatus.JUNK if junk else LeadStatus.NEW
        made.append((r.receipt.lead_id, channel, status, seller))
    newest_first = [m[0] for m in reversed(made)]

    everything = await store.list_leads(LeadQuery(limit=100))
    assert [lead.id for lead in everything] == newest_first
    assert all(lead.events == () for lead in everything)

    orders = await store.list_leads(LeadQuery(channel=Channel.ORDERS))
    assert [lead.id for lead in orders] == [m[0] for m in reversed(made) if m[1] is Channel.ORDERS]
    junk_leads = await store.list_leads(LeadQuery(status=LeadStatus.JUNK))
    assert [lead.id for lead in junk_leads] == [
        m[0] for m in reversed(made) if m[2] is LeadStatus.JUNK
    ]
    anna = await store.list_leads(LeadQuery(assigned_to="anna"))
    assert [lead.id for lead in anna] == [m[0] for m in reversed(made) if m[3] == "anna"]
    both = await store.list_leads(LeadQuery(assigned_to="boris", channel=Channel.ORDERS))
    assert [lead.id for lead in both] == [
        m[0] for m in reversed(made) if m[3] == "boris" and m[1] is Channel.ORDERS
    ]
    since = await store.list_leads(LeadQuery(since=T0 + timedelta(hours=9)))
    assert [lead.id for lead in since] == newest_first[:3]

    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        page = await store.list_leads(LeadQuery(limit=5, before_id=cursor))
        if not page:
            break
        pages.append([lead.id for lead in page])
        cursor = page[-1].id
    assert [len(p) for p in pages] == [5, 5, 2]
    assert [i for p in pages for i in p] == newest_first
    # Paging within a filter.
    page = await store.list_leads(
        LeadQuery(channel=Channel.WEBFORM, limit=3, before_id=newest_first[1])
    )
    assert [lead.id for lead in page] == [
        m[0] for m in reversed(made[:10]) if m[1] is Channel.WEBFORM
    ][:3]


async def test_what_was_acknowledged_survives_a_restart(harness: Harness) -> None:
    first = (
        await record(harness.store, make_event("s1", phone=PHONE), checkpoint=("p", "9"))
    ).receipt
    store = await harness.reopen()
    lead = await store.get_lead(first.lead_id or "")
    assert lead is not None
    assert [e.id for e in lead.events] == [first.event_id]
    assert await store.get_checkpoint("p") == "9"
    again = (await record(store, make_event("s1", phone=PHONE))).receipt
    assert (again.outcome, again.event_id) == (Outcome.REPLAYED, first.event_id)
    merged = (await record(store, make_event("s2", phone=PHONE))).receipt
    assert (merged.outcome, merged.lead_id) == (Outcome.MERGED, first.lead_id)


async def test_the_planner_hears_what_the_store_found(store: Store) -> None:
    seen: list[PersonMatch] = []
    await record(store, make_event("o1", phone=PHONE), seen=seen)
    assert set(seen) == {PersonMatch()}
    seen.clear()
    r = (await record(store, make_event("o2", phone=PHONE), seen=seen)).receipt
    # A store may plan more than once (a retry); every call hears the same.
    assert set(seen) == {PersonMatch(lead_id=r.lead_id, matched_on="phone")}
