"""What a Redis store decision reads, and the decision itself.

The reads run on a WATCHing connection: every key a decision depends on (the replay keys,
the identity sets, the candidate leads, the conversation, the round-robin state) is
watched before it is read, so if another replica changes any of them before our EXEC, the
transaction aborts and the event is read and decided again. The decision (`decide`) is
pure: the same reads give the same plan, the same seller and the same count to move.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime

from redis.asyncio.client import Pipeline

from gateway.assign import Assignment, pick
from gateway.conversations import Conversation
from gateway.models import Channel, Lead, LeadEvent
from gateway.store.base import PersonMatch, Plan, PlanAction, Planner
from gateway.store.changes import conversation_match, person_match
from gateway.store.redis_keys import Keys, fields, maybe_moment, maybe_text, moment, texts
from gateway.store.sqlite_queries import replay_key

# --- round robin of the day in progress --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DayState:
    """The `rr` hash: the day being counted, the leads assigned before it began (the
    running total that carries the turn), and the day's leads per seller."""

    day: date | None = None
    earlier: int = 0
    counts: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: Mapping[str, str]) -> DayState:
        if "day" not in raw:
            return cls()
        counts = {k[2:]: int(v) for k, v in raw.items() if k.startswith("s:") and int(v) > 0}
        return cls(date.fromisoformat(raw["day"]), int(raw.get("earlier", "0")), counts)


@dataclass(frozen=True, slots=True)
class Count:
    """The change one created lead makes to the round robin: `restart` begins `day` (its
    counts from zero, `earlier` carrying the turn), `seller` gets one more lead."""

    day: date
    earlier: int
    restart: bool
    seller: str | None


def resolve(
    decision: Plan, state: DayState, received_at: datetime
) -> tuple[Assignment, Count] | None:
    """The seller for a create's request and the count it moves, as DayCounts.resolve does
    for the embedded store: the first request starts the request's day (or the day it was
    received, if later); a later day starts from zero with the turn carried over; an
    earlier one counts in the day in progress. `rr` is never behind the latest day a
    stored lead counted in (DayCounts' `latest`): it is written with every counted lead
    and only ever moves forward."""
    request = decision.assignment
    if decision.action is not PlanAction.CREATE or request is None:
        return None
    if state.day is None:
        day = max(request.day, received_at.astimezone(request.tz).date())
        counts: Mapping[str, int] = {}
        earlier, restart = 0, True
    elif request.day > state.day:
        day, counts = request.day, {}
        earlier, restart = state.earlier + sum(state.counts.values()), True
    else:
        day, counts, earlier, restart = state.day, state.counts, state.earlier, False
    assignment = pick(request, counts, earlier)
    return assignment, Count(day, earlier, restart, assignment.seller_id)


@dataclass(frozen=True, slots=True)
class Decision:
    plan: Plan
    assignment: Assignment | None = None
    count: Count | None = None


def decide(plan: Planner, match: PersonMatch, state: DayState, received_at: datetime) -> Decision:
    """Pure: the plan for `match` and, for a create, its seller and count."""
    decision = plan(match)
    resolved = resolve(decision, state, received_at)
    if resolved is None:
        return Decision(decision)
    return Decision(decision, *resolved)


# --- reads under WATCH ------------------------------------------------------------------------


# What a decision reads first, in one round trip once the keys are watched: the event
# stored under a replay key (with its lead and the token of the attempt that wrote it), the
# leads of the events a reply answers, and the leads of each identity key.
# KEYS: replay keys (ARGV[2] of them), the replies' replay keys (ARGV[3]), identity sets.
_SNAPSHOT = """
local P, nr, np = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local replay = {}
for i = 1, nr do
  local id = redis.call('GET', KEYS[i])
  if id then
    local f = redis.call('HMGET', P .. 'event:' .. id, 'lead_id', 'attempt')
    replay = {id, f[1] or '', f[2] or ''}
    break
  end
end
local replies = {}
for i = nr + 1, nr + np do
  local id = redis.call('GET', KEYS[i])
  local lead = ''
  if id then lead = redis.call('HGET', P .. 'event:' .. id, 'lead_id') or '' end
  table.insert(replies, lead)
end
local sets = {}
for i = nr + np + 1, #KEYS do table.insert(sets, redis.call('SMEMBERS', KEYS[i])) end
return {replay, replies, sets}
"""


@dataclass(slots=True)
class Seen:
    """What one attempt read: the stored event a replay key names (id, lead id, attempt
    token), the leads of the events a reply answers, the lead ids of each identity key,
    and the leads it loaded (the merge base comes from here)."""

    replayed: tuple[str, str | None, str | None] | None = None
    replies: list[str | None] = field(default_factory=list)
    identities: dict[str, list[str]] = field(default_factory=dict)
    leads: dict[str, Lead] = field(default_factory=dict)


async def watch_and_read(
    pipe: Pipeline, k: Keys, event: LeadEvent, replay_keys: Sequence[str], keys: Sequence[str]
) -> Seen:
    """Watch the keys every decision depends on, then read them in one round trip."""
    replies = [k.replay(replay_key(event.channel, ext)) for ext in event.replies_to]
    identities = sorted(set(keys))
    names = [*(k.replay(rk) for rk in replay_keys), *replies]
    names += [k.identity(key) for key in identities]
    await pipe.watch(*names)
    replay, leads, sets = await pipe.eval(
        _SNAPSHOT, len(names), *names, k.p, len(replay_keys), len(replies)
    )
    seen = Seen(replies=[lead or None for lead in leads])
    if replay:
        event_id, lead_id, token = replay
        seen.replayed = (event_id, lead_id or None, token or None)
    seen.identities = {key: sorted(members) for key, members in zip(identities, sets, strict=True)}
    return seen


async def watch_leads(pipe: Pipeline, k: Keys, lead_ids: Sequence[str], seen: Seen) -> list[Lead]:
    """The leads (those that exist), watched before they are read, each read once."""
    wanted = [i for i in lead_ids if i not in seen.leads]
    if wanted:
        names = [k.lead(i) for i in wanted]
        await pipe.watch(*names)
        for lead_id, doc in zip(wanted, texts(await pipe.mget(names)), strict=True):
            if doc is not None:
                seen.leads[lead_id] = Lead.model_validate_json(doc)
    return [seen.leads[i] for i in lead_ids if i in seen.leads]


async def watch_day(pipe: Pipeline, k: Keys) -> DayState:
    await pipe.watch(k.rr)
    return DayState.parse(fields(await pipe.hgetall(k.rr)))


def conversation_from(raw: Mapping[str, str]) -> Conversation:
    return Conversation(
        id=raw["id"],
        channel=Channel(raw["channel"]),
        account=raw["account"],
        chat=raw["chat"],
        lead_id=raw.get("lead_id") or None,
        handle=raw.get("handle") or None,
        locale=raw.get("locale") or None,
        created_at=moment(raw["created_at"]),
        last_inbound_at=maybe_moment(raw.get("last_inbound_at")),
        last_outbound_at=maybe_moment(raw.get("last_outbound_at")),
        auto_answered_for=maybe_moment(raw.get("auto_answered_for")),
    )


async def watch_conversation(pipe: Pipeline, k: Keys, event: LeadEvent) -> Conversation | None:
    thread = event.thread
    assert thread is not None
    key = k.conversation_key(event.channel.value, thread.account, thread.chat)
    await pipe.watch(key)
    conversation_id = maybe_text(await pipe.get(key))
    if conversation_id is None:
        return None
    await pipe.watch(k.conversation(conversation_id), k.conversation_lines(conversation_id))
    raw = fields(await pipe.hgetall(k.conversation(conversation_id)))
    return conversation_from(raw) if raw else None


async def match(
    pipe: Pipeline,
    k: Keys,
    event: LeadEvent,
    keys: Sequence[str],
    since: datetime,
    seen: Seen,
    conversation: Conversation | None,
) -> PersonMatch:
    if event.thread is None:
        return await match_person(pipe, k, event, keys, since, seen)
    # A chat message: its conversation's lead first, while that lead is open.
    if conversation is not None and conversation.lead_id is not None:
        found = await watch_leads(pipe, k, [conversation.lead_id], seen)
        lead = found[0] if found else None
        if (joined := conversation_match(lead, conversation, since)) is not None:
            return joined
    person = await match_person(pipe, k, event, keys, since, seen)
    return person._replace(conversation=conversation)


async def match_person(
    pipe: Pipeline,
    k: Keys,
    event: LeadEvent,
    keys: Sequence[str],
    since: datetime,
    seen: Seen,
) -> PersonMatch:
    # An event's lead never changes once stored: the replies' replay keys were watched.
    for lead_id in seen.replies:
        if lead_id is not None:
            return PersonMatch(lead_id=lead_id, matched_on="reply", previous_owner=None)
    # In the order the embedded store finds them (by key, then lead id): the kind a lead
    # is reported as matched on is the first key that found it.
    candidates: dict[str, str] = {}
    for key, lead_ids in seen.identities.items():
        for lead_id in lead_ids:
            candidates.setdefault(lead_id, key)
    if not candidates:
        return PersonMatch()
    leads = await watch_leads(pipe, k, list(candidates), seen)
    return person_match(candidates, leads, since)
