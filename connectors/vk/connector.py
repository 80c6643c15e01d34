"""The VK connector: the Callback API route for every configured community, the inbox
handler, the message sender, the lead-form catch-up tasks, readiness.

    POST /v1/vk      every community's Callback API server points here

The body's `secret` is compared (constant time, against every community) before anything
else is looked at: a wrong or missing one is 403 and nothing is stored. Then the
community is the one whose secret matched *and* whose group_id the body names; a
confirmation is answered with that community's string. An event this community takes is
kept in the inbox (key: VK's event_id, so VK's repeats are one entry) and answered `ok`;
it is handled after the answer (connectors.vk.handler). Other events are answered `ok`
and not stored.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web
from pydantic import SecretStr

from connectors.vk.api import ErrorKind, VkApi, VkError
from connectors.vk.catchup import LeadFormCatchUp
from connectors.vk.envelope import KNOWN_TYPES, EnvelopeInvalid, find_community, read_envelope
from connectors.vk.handler import CHANNEL, Community, EventHandler, taken
from connectors.vk.metrics import VkMetrics
from connectors.vk.names import NameCache
from connectors.vk.sender import VkSender
from connectors.vk.settings import CommunitySettings, VkSettings
from gateway.channels import Connector, ConnectorContext, TaskSpec
from gateway.chats import ChatAccount
from gateway.errors import ApiError
from gateway.http import parse_json_object
from gateway.inbox import InboxEntry
from gateway.models import Channel
from gateway.redact import register as register_secret

log = logging.getLogger(__name__)

# A Callback API event is a few KiB (a message is at most 9000 characters, attachments are
# descriptions, not files): anything this large is not from VK.
MAX_BODY = 256 * 1024
# A user token may make 3 calls a second; we keep below it.
USER_RPS = 2.5
# Request headers kept with an inbox entry (what a person looking at it may want).
_KEPT_HEADERS = ("X-Retry-Counter", "User-Agent", "X-Forwarded-For")


def _plain(text: str) -> web.Response:
    return web.Response(text=text, content_type="text/plain")


def _utc_now() -> datetime:
    return datetime.now(UTC)


class VkConnector:
    name = "vk"

    def __init__(self, ctx: ConnectorContext, settings: VkSettings) -> None:
        self.settings = settings
        self.ctx = ctx
        self.metrics = VkMetrics(ctx.metrics.registry)
        self.clock: Callable[[], datetime] = _utc_now
        self.communities: dict[int, Community] = {}
        self.apis: list[VkApi] = []
        senders: dict[str, VkApi] = {}
        # The community token VK refused last (error 5/27/28), by community: /readyz.
        self.refused: dict[str, str] = {}
        self.handler = EventHandler(
            pipeline=ctx.pipeline,
            metrics=self.metrics,
            region=ctx.settings.phone_region,
            communities=self.communities,
            clock=lambda: self.clock(),
        )
        self.catch_ups: list[LeadFormCatchUp] = []
        for s in settings.communities:
            register_secret(s.secret.get_secret_value())
            api = None
            if s.token is not None:
                api = self._api(ctx, s, s.token, bucket=str(s.group_id), watch=True)
                senders[str(s.group_id)] = api
            community = Community(settings=s, names=NameCache(api))
            self.communities[s.group_id] = community
            if s.after_hours_answer is not None or s.after_hours_text:
                ctx.chats.register_account(
                    Channel.VK,
                    str(s.group_id),
                    ChatAccount(
                        after_hours_answer=s.after_hours_answer,
                        after_hours_text=s.after_hours_text or None,
                    ),
                )
            if s.catch_up_token is not None and s.lead_forms:
                # A user token: its own, smaller budget (user tokens get 3 calls a second).
                user_api = self._api(
                    ctx, s, s.catch_up_token, bucket=f"{s.group_id}:user", rps=USER_RPS
                )
                self.catch_ups.append(
                    LeadFormCatchUp(
                        community=community,
                        api=user_api,
                        handler=self.handler,
                        pipeline=ctx.pipeline,
                        metrics=self.metrics,
                        clock=lambda: self.clock(),
                    )
                )
        self.sender = VkSender(senders)
        ctx.inbox.register(CHANNEL, self.handler.handle_item)
        ctx.chats.register_sender(Channel.VK, self.sender)

    def _api(
        self,
        ctx: ConnectorContext,
        s: CommunitySettings,
        token: SecretStr,
        *,
        bucket: str,
        rps: float | None = None,
        watch: bool = False,
    ) -> VkApi:
        key = str(s.group_id)

        def observe(method: str, error: VkError | None) -> None:
            self.metrics.call(key, method, error)
            if not watch:
                return
            if error is None:
                self.refused.pop(key, None)
            elif error.kind is ErrorKind.AUTH:
                self.refused[key] = str(error)

        api = VkApi(
            base=s.api_base,
            token=token,
            version=s.api_version,
            timeout_seconds=s.timeout_seconds,
            coordination=ctx.coordination,
            bucket=bucket,
            requests_per_second=min(rps or s.requests_per_second, s.requests_per_second),
            observe=observe,
        )
        self.apis.append(api)
        return api

    # --- the connector contract --------------------------------------------------------

    def routes(self) -> Sequence[web.AbstractRouteDef]:
        return [web.post("/v1/vk", self.callback)]

    def tasks(self) -> Sequence[TaskSpec]:
        return [TaskSpec(c.name, c.run, singleton=True) for c in self.catch_ups]

    def readiness(self) -> str | None:
        problems = [
            f"community {group}: the community token is refused ({why})"
            for group, why in sorted(self.refused.items())
        ]
        problems += [c.problem for c in self.catch_ups if c.problem is not None]
        return "; ".join(problems) or None

    async def shutdown(self) -> None:
        for api in self.apis:
            await api.close()

    # --- the Callback API ----------------------------------------------------------------

    async def callback(self, request: web.Request) -> web.StreamResponse:
        if request.content_length is not None and request.content_length > MAX_BODY:
            raise ApiError(413, "body_too_large", f"body larger than {MAX_BODY} bytes")
        raw = await request.read()
        if len(raw) > MAX_BODY:
            raise ApiError(413, "body_too_large", f"body larger than {MAX_BODY} bytes")
        data = parse_json_object(raw)
        secret = data.get("secret")
        group = data.get("group_id")
        group_id = group if isinstance(group, int) and not isinstance(group, bool) else 0
        found, secret_known = find_community(
            self.settings.communities, secret if isinstance(secret, str) else None, group_id
        )
        if not secret_known:
            self.metrics.event("unknown", "unknown", "unauthorized")
            raise ApiError(403, "forbidden", "wrong or missing secret")
        if found is None:
            self.metrics.event("unknown", "unknown", "unknown_group")
            raise ApiError(
                403,
                "unknown_group",
                "no configured community has this group_id with this secret",
            )
        community = self.communities[found.group_id]
        headers = {h: request.headers[h] for h in _KEPT_HEADERS if h in request.headers}
        try:
            envelope = read_envelope(data)
        except EnvelopeInvalid as exc:
            # Authentic (the secret matched) but not an event: kept, and answered ok so
            # that VK does not pause the server over it.
            body = raw_without_secret(data)
            await self.ctx.pipeline.quarantine(CHANNEL, f"envelope: {exc}", body, headers)
            self.metrics.event(community.key, "other", "invalid")
            return _plain("ok")
        kind = envelope.type if envelope.type in KNOWN_TYPES else "other"
        if envelope.type == "confirmation":
            self.metrics.event(community.key, kind, "confirmation")
            return _plain(found.confirmation)
        if not taken(found, envelope.type):
            self.metrics.event(community.key, kind, "ignored")
            return _plain("ok")
        entry = InboxEntry(
            CHANNEL,
            community.key,
            envelope.key,
            raw_without_secret(data),
            headers,
            thread=envelope.peer,
        )
        (kept,) = await self.ctx.inbox.put([entry])
        self.metrics.event(community.key, kind, "stored" if kept else "duplicate")
        return _plain("ok")


def raw_without_secret(data: dict[str, Any]) -> bytes:
    return orjson.dumps({k: v for k, v in data.items() if k != "secret"})


def build(ctx: ConnectorContext) -> Connector | None:
    settings = ctx.settings.section(VkSettings)
    if not settings.communities:
        return None
    return VkConnector(ctx, settings)
