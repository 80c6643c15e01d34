"""The Meta connector: one webhook for Facebook Pages and Instagram accounts.

    GET  /v1/meta   subscription check: echoes hub.challenge for the right hub.verify_token
    POST /v1/meta   webhook: X-Hub-Signature-256 checked on the raw bytes first (403 and
                    nothing kept when it is missing or wrong), then the body is stored in
                    the inbox (keyed by its hash: Meta's retry of it is a duplicate) and
                    only then answered 200

After the 200 the inbox worker hands the body to `handle_entry`: every messaging item
becomes a chat message of its thread (messages.py), and every Lead Ads lead an inbox entry
of its own, `meta.leadgen` keyed by the leadgen id, whose handler fetches the answers from
the Graph API (leadgen.py). That entry is retried with the inbox's backoff until the answers
come, and a lead that still fails after `[inbox] max_attempts` is a dead entry with its
leadgen id (`leadgate inbox list --state dead`), never dropped. Replies go out through
sender.py within Meta's messaging window (window.py).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiohttp import web

from connectors.meta import signature
from connectors.meta.graph import ErrorKind, GraphClient, GraphError
from connectors.meta.leadgen import LeadUnreadable, lead_event, read_lead
from connectors.meta.messages import CUSTOMER_KINDS, came_from_ad, channel_of, message_event
from connectors.meta.metrics import MetaMetrics
from connectors.meta.names import NameCache, profile_name
from connectors.meta.sender import (
    INSTAGRAM_MAX_BYTES,
    INSTAGRAM_MAX_TEXT,
    MESSENGER_MAX_TEXT,
    MetaSender,
    Route,
)
from connectors.meta.settings import InstagramApi, MetaSettings
from connectors.meta.webhook import (
    ItemKind,
    Leadgen,
    Messaging,
    MetaObject,
    WebhookInvalid,
    leadgen_change,
    parse,
)
from connectors.meta.window import WindowRules
from gateway.channels import Connector, ConnectorContext, ReplayRefused, TaskSpec
from gateway.errors import ApiError
from gateway.inbox import InboxEntry, InboxItem, Unprocessable
from gateway.models import Channel, Outcome, Receipt
from gateway.redact import register as register_secret
from gateway.store.base import QuarantineEntry
from gateway.textsafe import header_bytes

log = logging.getLogger(__name__)

INBOX = "meta"  # webhook bodies as Meta sent them (also the quarantine's channel name)
LEADGEN_INBOX = "meta.leadgen"  # one entry per Lead Ads lead: (page, leadgen id)
_CHALLENGE = re.compile(r"[\x21-\x7e]{1,256}")
_KEPT_HEADERS = ("Content-Type", "User-Agent", signature.HEADER)


def ad_click_key(channel: str, account: str, chat: str) -> str:
    """The checkpoint holding when a customer came into a thread from an ad."""
    return f"meta:ad_click:{channel}:{account}:{chat}"


def _summary(body: bytes) -> tuple[str, str, str | None]:
    """(object, account, thread) of a body for the inbox and metrics: the entry id when
    there is one, "batch" for several, "unknown" when it cannot be read (it is stored
    anyway); the thread is the one person writing, when the body is about one person
    (Meta batches several only under load): one person's bodies are handled in order."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return "unknown", "unknown", None
    if not isinstance(data, dict):
        return "unknown", "unknown", None
    obj = data.get("object")
    entries = data.get("entry")
    ids = {
        str(e["id"])
        for e in (entries if isinstance(entries, list) else [])
        if isinstance(e, dict) and isinstance(e.get("id"), str | int)
    }
    account = next(iter(ids)) if len(ids) == 1 else "batch" if ids else "unknown"
    people = {
        str(sender["id"])
        for e in (entries if isinstance(entries, list) else [])
        if isinstance(e, dict) and isinstance(e.get("messaging"), list)
        for item in e["messaging"]
        if isinstance(item, dict)
        and isinstance(sender := item.get("sender"), dict)
        and isinstance(sender.get("id"), str | int)
    }
    thread = next(iter(people))[:64] if len(people) == 1 else None
    return (obj[:40] if isinstance(obj, str) and obj else "unknown"), account[:64], thread


class LeadNotYet(Exception):
    """A lead's answers could not be had this time: the inbox tries again later."""


class MetaConnector:
    name = "meta"

    def __init__(
        self,
        ctx: ConnectorContext,
        settings: MetaSettings,
        *,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        assert settings.app_secret is not None and settings.verify_token is not None
        self.settings = settings
        self.pipeline = ctx.pipeline
        self.inbox = ctx.inbox
        self.region = ctx.settings.phone_region
        self.metrics = MetaMetrics(ctx.metrics.registry)
        self.app_secret = settings.app_secret.get_secret_value()
        self.verify_token = settings.verify_token.get_secret_value().encode()
        self.pages = {p.id: p for p in settings.pages}
        self.instagram = {i.id: i for i in settings.instagram}
        for secret in (
            settings.app_secret,
            settings.verify_token,
            *(p.token for p in settings.pages),
            *(i.token for i in settings.instagram),
        ):
            register_secret(secret.get_secret_value())
        timeout = settings.graph_timeout_seconds
        # The app secret proves our calls on graph.facebook.com; Instagram Login tokens belong
        # to the Instagram app, whose secret is another one.
        self.graph = GraphClient(
            settings.graph_base, settings.graph_api_version, timeout, self.app_secret
        )
        self.instagram_graph = GraphClient(
            settings.instagram_graph_base, settings.graph_api_version, timeout
        )
        self.names = NameCache(
            settings.name_cache_size,
            settings.name_cache_hours * 3600,
            settings.name_timeout_seconds,
        )
        # account -> what Meta said when it refused the account's token (for /readyz).
        self.refused: dict[str, str] = {}
        self.clock: Callable[[], datetime] = clock or (lambda: datetime.now(UTC))
        self.senders = self._senders(settings)
        ctx.inbox.register(INBOX, self.handle_entry)
        ctx.inbox.register(LEADGEN_INBOX, self.handle_leadgen_entry)
        for channel, sender in self.senders.items():
            ctx.chats.register_sender(channel, sender)

    def _senders(self, settings: MetaSettings) -> dict[Channel, MetaSender]:
        rules = WindowRules(
            standard=timedelta(hours=settings.window_hours),
            after_ad=timedelta(days=settings.ad_window_days),
            tag=settings.reply_tag or None,
            tag_window=timedelta(days=settings.reply_tag_days),
        )
        common: dict[str, Any] = {
            "ad_clicks": self.ad_click,
            "on_error": self._graph_failed,
            "on_ok": self._graph_ok,
            "clock": lambda: self.clock(),
            "rate_limit_wait": settings.rate_limit_seconds,
        }
        pages = {p.id: Route(self.graph, "me/messages", p.token) for p in settings.pages}
        accounts = {
            i.id: (
                Route(self.instagram_graph, f"{i.id}/messages", i.token)
                if i.api is InstagramApi.INSTAGRAM_LOGIN
                else Route(self.graph, "me/messages", i.token)
            )
            for i in settings.instagram
        }
        senders = {}
        if pages:
            senders[Channel.FACEBOOK] = MetaSender(pages, rules, MESSENGER_MAX_TEXT, **common)
        if accounts:
            senders[Channel.INSTAGRAM] = MetaSender(
                accounts, rules, INSTAGRAM_MAX_TEXT, max_bytes=INSTAGRAM_MAX_BYTES, **common
            )
        return senders

    # --- the connector contract -------------------------------------------------------------

    def routes(self) -> Sequence[web.AbstractRouteDef]:
        return [web.get("/v1/meta", self.subscription), web.post("/v1/meta", self.webhook)]

    def tasks(self) -> Sequence[TaskSpec]:
        return []  # the core's inbox and message workers do the work

    def readiness(self) -> str | None:
        problems = [
            f"{account}: Meta refuses its token ({why}); renew it"
            for account, why in sorted(self.refused.items())
        ]
        return "; ".join(problems) or None

    async def shutdown(self) -> None:
        await self.graph.close()
        await self.instagram_graph.close()

    # --- HTTP -------------------------------------------------------------------------------

    async def subscription(self, request: web.Request) -> web.StreamResponse:
        """Meta's check of the callback URL: hub.mode=subscribe, hub.verify_token, and
        hub.challenge to be echoed as the body."""
        query = request.query
        given = query.get("hub.verify_token", "")
        if not hmac.compare_digest(header_bytes(given), self.verify_token):
            self.metrics.webhooks.labels("subscription", "unauthorized").inc()
            raise ApiError(403, "forbidden", "wrong or missing hub.verify_token")
        if query.get("hub.mode") != "subscribe":
            raise ApiError(400, "invalid_mode", "hub.mode must be subscribe")
        challenge = query.get("hub.challenge", "")
        if not _CHALLENGE.fullmatch(challenge):
            raise ApiError(400, "invalid_challenge", "hub.challenge missing or not plain text")
        self.metrics.webhooks.labels("subscription", "accepted").inc()
        return web.Response(
            text=challenge, content_type="text/plain", headers={"X-Content-Type-Options": "nosniff"}
        )

    async def webhook(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if not signature.verify(self.app_secret, body, request.headers.get(signature.HEADER)):
            self.metrics.webhooks.labels("unknown", "unauthorized").inc()
            raise ApiError(403, "forbidden", f"missing or wrong {signature.HEADER}")
        obj, account, thread = _summary(body)
        headers = {h: request.headers[h] for h in _KEPT_HEADERS if h in request.headers}
        key = hashlib.sha256(body).hexdigest()
        # Durable before the 200; StoreUnavailable becomes a 503 and Meta sends it again.
        entry = InboxEntry(INBOX, account, key, body, headers, thread=thread)
        (kept,) = await self.inbox.put([entry])
        self.metrics.webhooks.labels(obj, "accepted" if kept else "duplicate").inc()
        return web.json_response({"status": "ok"})

    # --- handling (after the 200, by the inbox worker) --------------------------------------

    async def handle_entry(self, entry: InboxItem) -> None:
        """Everything an authentic body tells: every entry, every item. Idempotent: its
        messages are keyed by mid, its leads by leadgen id."""
        try:
            delivery = parse(entry.body)
        except WebhookInvalid as exc:
            self.metrics.webhooks.labels("unknown", "invalid").inc()
            raise Unprocessable(f"not a Meta webhook body: {exc}") from None
        if not delivery.known:
            self.metrics.webhooks.labels(delivery.object[:40], "ignored").inc()
            return
        if delivery.problems and entry.attempts == 0:
            # The readable rest is still taken; a copy of the body is kept for a person.
            # (First attempt only: a retry must not keep a second copy.)
            reason = "; ".join(delivery.problems[:5])
            await self.pipeline.quarantine(
                INBOX, f"partly unreadable: {reason}", entry.body, entry.headers
            )
        received_at = self.clock()
        for item in delivery.messaging:
            await self.handle_item(item, received_at)
        if delivery.leadgen:
            await self.inbox.put([self._leadgen_entry(change) for change in delivery.leadgen])
            for change in delivery.leadgen:
                self.metrics.items.labels("facebook", self._page_of(change), "leadgen").inc()

    async def replay_quarantined(self, entry: QuarantineEntry) -> Receipt | None:
        """A body a person released (`leadgate quarantine release`): run through again, as
        live input, so what was taken before replays. Still unreadable, wholly or in part,
        it is refused: the release leaves it quarantined (`kept`, with the reason), never
        dropped — its readable items are taken meanwhile."""
        if entry.channel != INBOX:
            raise ReplayRefused(f"not a Meta webhook body (kept as {entry.channel!r})")
        try:
            delivery = parse(entry.body)
        except WebhookInvalid as exc:
            raise ReplayRefused(f"still not a Meta webhook body: {exc}") from None
        receipt = None
        received_at = self.clock()
        for item in delivery.messaging:
            receipt = await self.handle_item(item, received_at) or receipt
        if delivery.leadgen:
            await self.inbox.put([self._leadgen_entry(change) for change in delivery.leadgen])
        if delivery.problems:
            reason = "; ".join(delivery.problems[:5])
            raise ReplayRefused(f"still partly unreadable: {reason} (the readable rest is taken)")
        return receipt

    async def handle_item(self, item: Messaging, received_at: datetime) -> Receipt | None:
        channel = channel_of(item.object).value
        self.metrics.items.labels(channel, item.account, item.kind.value).inc()
        if item.kind not in CUSTOMER_KINDS:
            return None  # echoes, receipts, reactions: not the customer's contact
        if came_from_ad(item) and item.at is not None:
            # The longer messaging window after a Click-to-Messenger ad runs from here.
            await self.pipeline.save_checkpoint(
                ad_click_key(channel, item.account, item.customer), item.at.isoformat()
            )
        name = None if item.kind is ItemKind.EDIT else await self.sender_name(item)
        event = message_event(item, received_at=received_at, name=name, region=self.region)
        return None if event is None else await self.pipeline.accept(event)

    # --- Lead Ads ---------------------------------------------------------------------------

    def _page_of(self, change: Leadgen) -> str:
        # The change names its page; the entry is the page too (Meta's sample differs).
        for candidate in (change.page_id, change.account):
            if candidate in self.pages:
                return candidate
        return change.page_id or change.account

    def _leadgen_entry(self, change: Leadgen) -> InboxEntry:
        body = orjson.dumps({"entry": change.account, "value": change.raw})
        return InboxEntry(LEADGEN_INBOX, self._page_of(change), change.leadgen_id, body)

    async def handle_leadgen_entry(self, entry: InboxItem) -> None:
        data = orjson.loads(entry.body)
        change = leadgen_change(str(data.get("entry", "")), data.get("value"))
        if change is None:
            raise Unprocessable("a leadgen entry without its leadgen id")
        page_id = self._page_of(change)
        page = self.pages.get(page_id)
        if page is None:
            # Dead at once, with its id: add the page's token and `leadgate inbox retry`.
            raise Unprocessable(
                f"leadgen {change.leadgen_id}: page {page_id} has no token in [[meta.pages]]"
            )
        try:
            answer = await self.graph.get(change.leadgen_id, page.token.get_secret_value())
            lead = read_lead(answer)
        except GraphError as exc:
            self._graph_failed(page_id, "lead", exc)
            self.metrics.leadgen.labels(page_id, "retry").inc()
            raise LeadNotYet(f"leadgen {change.leadgen_id}: {exc}") from None
        except LeadUnreadable as exc:
            self.metrics.leadgen.labels(page_id, "retry").inc()
            raise LeadNotYet(f"leadgen {change.leadgen_id}: {exc}") from None
        self._graph_ok(page_id)
        event = lead_event(change, lead, received_at=self.clock(), region=self.region)
        receipt = await self.pipeline.accept(event)
        replayed = receipt.outcome is Outcome.REPLAYED
        self.metrics.leadgen.labels(page_id, "replayed" if replayed else "accepted").inc()

    # --- what the sender asks ---------------------------------------------------------------

    async def ad_click(self, channel: str, account: str, chat: str) -> datetime | None:
        stored = await self.pipeline.get_checkpoint(ad_click_key(channel, account, chat))
        if stored is None:
            return None
        try:
            return datetime.fromisoformat(stored)
        except ValueError:
            return None

    # --- names ------------------------------------------------------------------------------

    async def sender_name(self, item: Messaging) -> str | None:
        """The sender's name where Meta gives it; None without stopping anything."""
        account = item.account
        if item.object is MetaObject.PAGE:
            page = self.pages.get(account)
            if page is None or not page.fetch_names:
                self.metrics.names.labels(account, "off").inc()
                return None
            client, token, fields = self.graph, page.token, "first_name,last_name"
        else:
            ig = self.instagram.get(account)
            if ig is None or not ig.fetch_names:
                self.metrics.names.labels(account, "off").inc()
                return None
            login = ig.api is InstagramApi.INSTAGRAM_LOGIN
            client = self.instagram_graph if login else self.graph
            token, fields = ig.token, "name,username"

        async def fetch() -> str | None:
            try:
                found = await client.get(
                    item.customer, token.get_secret_value(), {"fields": fields}
                )
            except GraphError as exc:
                self._graph_failed(account, "profile", exc)
                raise
            self._graph_ok(account)
            return profile_name(found)

        name, result = await self.names.name(account, item.customer, fetch)
        self.metrics.names.labels(account, result).inc()
        return name

    # --- token health -----------------------------------------------------------------------

    def _graph_failed(self, account: str, call: str, exc: GraphError) -> None:
        self.metrics.graph_errors.labels(account, call, exc.label).inc()
        if exc.kind is ErrorKind.AUTH:
            self.refused[account] = str(exc)
            self.metrics.token_refused.labels(account).set(1)
            log.error("meta %s: the token is refused: %s", account, exc)

    def _graph_ok(self, account: str) -> None:
        if self.refused.pop(account, None) is not None:
            self.metrics.token_refused.labels(account).set(0)
            log.info("meta %s: the token works again", account)


def build(ctx: ConnectorContext) -> Connector | None:
    settings = ctx.settings.section(MetaSettings)
    return MetaConnector(ctx, settings) if settings.enabled else None
