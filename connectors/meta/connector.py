"""The Meta connector: one webhook for Facebook Pages and Instagram accounts.

    GET  /v1/meta   subscription check: echoes hub.challenge for the right hub.verify_token
    POST /v1/meta   webhook: X-Hub-Signature-256 checked on the raw bytes first (403 and
                    nothing kept when it is missing or wrong), then every entry handled

What each item becomes is in messages.py (Messenger, Instagram Direct) and leadgen.py (Lead
Ads, whose answers are fetched from the Graph API).
"""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from aiohttp import web

from connectors.meta import signature
from connectors.meta.graph import ErrorKind, GraphClient, GraphError
from connectors.meta.leadgen import LeadUnreadable, lead_event, read_lead
from connectors.meta.messages import channel_of, message_event
from connectors.meta.metrics import MetaMetrics
from connectors.meta.names import NameCache, profile_name
from connectors.meta.settings import InstagramApi, MetaSettings
from connectors.meta.webhook import ItemKind, Leadgen, Messaging, MetaObject, WebhookInvalid, parse
from gateway.channels import Connector, ConnectorContext, TaskSpec
from gateway.errors import ApiError
from gateway.models import Outcome
from gateway.redact import register as register_secret
from gateway.textsafe import header_bytes

log = logging.getLogger(__name__)

CHANNEL = "meta"  # the quarantine's name for what came to /v1/meta
_CHALLENGE = re.compile(r"[\x21-\x7e]{1,256}")
_KEPT_HEADERS = ("Content-Type", "User-Agent", "X-Hub-Signature-256")


class LeadgenFailed(Exception):
    """A lead's answers could not be had this time; `kind` says why."""

    def __init__(self, change: Leadgen, reason: str, kind: ErrorKind | None = None) -> None:
        super().__init__(f"leadgen {change.leadgen_id} (page {change.page_id}): {reason}")
        self.change = change
        self.kind = kind


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
        self.names = NameCache(settings.name_cache_size, settings.name_cache_hours * 3600)
        # account -> what Meta said when it refused the account's token (for /readyz).
        self.refused: dict[str, str] = {}
        self.clock: Callable[[], datetime] = clock or (lambda: datetime.now(UTC))

    # --- the connector contract -------------------------------------------------------------

    def routes(self) -> Sequence[web.AbstractRouteDef]:
        return [web.get("/v1/meta", self.subscription), web.post("/v1/meta", self.webhook)]

    def tasks(self) -> Sequence[TaskSpec]:
        return []

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
        headers = {h: request.headers[h] for h in _KEPT_HEADERS if h in request.headers}
        try:
            await self.handle(body, headers)
        except LeadgenFailed as exc:
            # Nothing is lost: Meta delivers the body again (retries for hours), and what
            # was already taken from it is a replay the second time.
            log.warning("meta: %s; answering 503 so that Meta retries", exc)
            raise ApiError(
                503,
                "graph_unavailable",
                "a lead's answers could not be fetched yet; retry",
                headers={"Retry-After": "60"},
            ) from None
        return web.json_response({"status": "ok"})

    # --- handling ---------------------------------------------------------------------------

    async def handle(self, body: bytes, headers: dict[str, str] | None = None) -> None:
        """Everything an authentic body tells: every entry, every item."""
        try:
            delivery = parse(body)
        except WebhookInvalid as exc:
            self.metrics.webhooks.labels("unknown", "invalid").inc()
            await self.pipeline.quarantine(CHANNEL, f"unreadable webhook: {exc}", body, headers)
            return
        if not delivery.known:
            self.metrics.webhooks.labels(delivery.object[:40], "ignored").inc()
            return
        if delivery.problems:
            # The readable rest is still taken; the body is kept for a person to look at.
            reason = "; ".join(delivery.problems[:5])
            await self.pipeline.quarantine(CHANNEL, f"partly unreadable: {reason}", body, headers)
        received_at = self.clock()
        for item in delivery.messaging:
            await self.handle_item(item, received_at)
        failed: list[LeadgenFailed] = []
        for change in delivery.leadgen:
            try:
                await self.handle_leadgen(change, received_at)
            except LeadgenFailed as exc:
                failed.append(exc)
        self.metrics.webhooks.labels(delivery.object, "accepted").inc()
        if failed:
            raise failed[0]

    async def handle_item(self, item: Messaging, received_at: datetime) -> None:
        channel = channel_of(item.object).value
        self.metrics.items.labels(channel, item.account, item.kind.value).inc()
        if item.kind not in (ItemKind.MESSAGE, ItemKind.POSTBACK, ItemKind.REFERRAL):
            return  # echoes, receipts, reactions: not the customer's contact
        name = await self.sender_name(item)
        event = message_event(item, received_at=received_at, name=name, region=self.region)
        if event is not None:
            await self.pipeline.accept(event)

    async def handle_leadgen(self, change: Leadgen, received_at: datetime) -> None:
        # The change names its page; the entry is the page too (Meta's sample differs).
        page = self.pages.get(change.page_id or "") or self.pages.get(change.account)
        page_id = page.id if page is not None else change.page_id or change.account
        self.metrics.items.labels("facebook", page_id, "leadgen").inc()
        if page is None:
            raise LeadgenFailed(change, "no [[meta.pages]] entry with this page's token")
        try:
            answer = await self.graph.get(change.leadgen_id, page.token.get_secret_value())
            lead = read_lead(answer)
        except GraphError as exc:
            self._graph_failed(page_id, "lead", exc)
            self.metrics.leadgen.labels(page_id, "retry").inc()
            raise LeadgenFailed(change, str(exc), exc.kind) from None
        except LeadUnreadable as exc:
            self.metrics.leadgen.labels(page_id, "retry").inc()
            raise LeadgenFailed(change, str(exc)) from None
        self._graph_ok(page_id)
        event = lead_event(change, lead, received_at=received_at, region=self.region)
        receipt = await self.pipeline.accept(event)
        replayed = receipt.outcome is Outcome.REPLAYED
        self.metrics.leadgen.labels(page_id, "replayed" if replayed else "accepted").inc()

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
